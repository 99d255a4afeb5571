"""FishChat's server roles: gateway, access and the HTTP API, and `fishchat up`, which runs them all.

Each role is one module whose logic calls the chat core only through the small interfaces of
`fishchat.server.ports` (which `ChatService` satisfies in-process), so the production profile can run
each role as its own process with gRPC clients behind the same interfaces:

- `gateway`: answers ReqAccessServer (10001) with the least-loaded live access server.
- `access`: holds client connections (login, ping, send, sync, logout, notify push, drain).
- `http_api`: accounts, tokens and groups over HTTP (`/x/user/*`, `/x/group/*`, `/openapi.json`).
- `app`: the embedded profile's composition root (one process, SQLite data directory).

`framing` holds what gateway and access share for framed TCP connections, `replies` the pure mapping
from domain results to wire replies, `metrics` the Prometheus collectors, `config` the settings.
"""
