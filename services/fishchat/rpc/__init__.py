"""gRPC between the roles: the server side (`server`), the client side (`client`) and their metrics.

Every internal response carries `errCode`/`errStr` (the original's layout), so a domain refusal
crosses a process boundary as data and is raised again on the caller's side as the same `ChatError`
(`fishchat.domain.errors.error_for`). gRPC status codes are left for transport trouble: a caller sees
an unreachable or overloaded role, or a missed deadline, as `Unavailable` (90002), which clients retry.
"""
