"""FishChat's client library: a chat session over the client protocol, and the HTTP API.

- `ChatClient`: gateway lookup, login, ping, p2p and group sends with acks, notify-driven sync with a
  cursor, reconnect on drain or loss, logout (`fishchat.client.chat`).
- `ApiClient`: accounts, tokens and groups over the HTTP API (`fishchat.client.http`).
- `locate_access_server`: ask the gateway for an access server (`fishchat.client.gateway`).

Errors are `ClientError`s; a server refusal is `RequestRefused` (or `ApiError`) carrying its code.
"""

from fishchat.client.chat import ChatClient, MessageHandler, new_msg_id
from fishchat.client.cursor import SyncCursor
from fishchat.client.errors import (
    ApiError,
    ApiUnavailable,
    ClientClosed,
    ClientError,
    ConnectionLost,
    InvalidRequest,
    ProtocolViolation,
    RequestRefused,
    RequestTimeout,
    SessionEnded,
)
from fishchat.client.gateway import DEFAULT_GATEWAY, locate_access_server
from fishchat.client.http import DEFAULT_API, ApiClient
from fishchat.client.pending import PendingRequests
from fishchat.client.reconnect import Backoff, ClientState
from fishchat.client.records import ChatMessage, Endpoint, SendAck

__all__ = [
    "DEFAULT_API",
    "DEFAULT_GATEWAY",
    "ApiClient",
    "ApiError",
    "ApiUnavailable",
    "Backoff",
    "ChatClient",
    "ChatMessage",
    "ClientClosed",
    "ClientError",
    "ClientState",
    "ConnectionLost",
    "Endpoint",
    "InvalidRequest",
    "MessageHandler",
    "PendingRequests",
    "ProtocolViolation",
    "RequestRefused",
    "RequestTimeout",
    "SendAck",
    "SessionEnded",
    "SyncCursor",
    "locate_access_server",
    "new_msg_id",
]
