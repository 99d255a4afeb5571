"""When and where the client reconnects: backoff after failures and the plan for a ResReconnect.

Kept free of I/O so the rules can be tested on their own:

- A lost connection (reset, missed ping replies, the server went away) is retried through the
  gateway with exponential backoff and full jitter, so a fleet of clients dropped by one access
  server does not come back in lockstep.
- ResReconnect "draining" means the access server is leaving: wait a random part of its
  `retryAfterMs` (it spreads the load), then connect to `addr` if it named one, else ask the gateway.
- "replaced" (the same device logged in on another connection) and "revoked" (the token was revoked)
  end the session: reconnecting would only kick the other connection or fail to log in.
- A login refused for its credentials ends the session too; server failures and transport errors
  are retried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from fishchat.client.records import Endpoint
from fishchat.protocol.commands import ErrCode, ReconnectReason

#: Login refusals worth retrying: the server failed or was busy, the credentials may well be fine; or
#: the user's other devices filled the device limit (a lost one's place frees when its route expires).
RETRYABLE_LOGIN_CODES: frozenset[int] = frozenset(
    {ErrCode.RATE_LIMITED, ErrCode.NO_ACCESS_SERVER, ErrCode.TOO_MANY_DEVICES}
)


class ClientState(StrEnum):
    """Where a ChatClient is in its life."""

    NEW = "new"  # constructed, never connected
    CONNECTING = "connecting"  # first connect and login in progress
    ONLINE = "online"  # logged in; requests can be sent
    RECONNECTING = "reconnecting"  # the connection ended; getting a new one
    CLOSING = "closing"  # logout or close in progress: connection losses are expected
    CLOSED = "closed"  # final


#: The transitions a ChatClient may make; anything else is a bug in the client.
TRANSITIONS: dict[ClientState, frozenset[ClientState]] = {
    ClientState.NEW: frozenset({ClientState.CONNECTING, ClientState.CLOSING, ClientState.CLOSED}),
    ClientState.CONNECTING: frozenset({ClientState.ONLINE, ClientState.CLOSING, ClientState.CLOSED}),
    ClientState.ONLINE: frozenset({ClientState.RECONNECTING, ClientState.CLOSING, ClientState.CLOSED}),
    ClientState.RECONNECTING: frozenset({ClientState.ONLINE, ClientState.CLOSING, ClientState.CLOSED}),
    ClientState.CLOSING: frozenset({ClientState.CLOSED}),
    ClientState.CLOSED: frozenset(),
}


def check_transition(current: ClientState, new: ClientState) -> None:
    """Raise RuntimeError if `current -> new` is not a legal move."""
    if new not in TRANSITIONS[current]:
        raise RuntimeError(f"illegal client state change {current.value} -> {new.value}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits a random time in [0, min(cap, base·factor^n)].

    `max_attempts` bounds the retries of one outage (None: retry until closed).
    """

    base: float = 0.2
    factor: float = 2.0
    cap: float = 10.0
    max_attempts: int | None = 30

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number `attempt` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be 0 or more")
        # Stop multiplying once past the cap, so large attempt numbers cannot overflow.
        value = self.base
        for _ in range(attempt):
            value *= self.factor
            if value >= self.cap:
                return self.cap
        return min(value, self.cap)

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))

    def exhausted(self, attempts: int) -> bool:
        """True once `attempts` failed retries used up the budget."""
        return self.max_attempts is not None and attempts >= self.max_attempts


@dataclass(frozen=True, slots=True)
class ReconnectPlan:
    """How to get back online: wait `delay` seconds, then connect to `endpoint` (None: ask the gateway)."""

    delay: float
    endpoint: Endpoint | None
    reason: str


def plan_for_notice(reason: str, addr: str, retry_after_ms: int, rng: random.Random) -> ReconnectPlan | None:
    """The plan for a ResReconnect from the server, or None when the session must end instead.

    An unknown reason is treated as "draining" (a newer server's reason this client does not know is
    still a request to go elsewhere). An unparsable addr falls back to the gateway.
    """
    if reason in (ReconnectReason.REPLACED, ReconnectReason.REVOKED):
        return None
    endpoint: Endpoint | None = None
    if addr:
        try:
            endpoint = Endpoint.parse(addr)
        except ValueError:
            endpoint = None
    delay = rng.uniform(0.0, max(retry_after_ms, 0) / 1000.0)
    return ReconnectPlan(delay=delay, endpoint=endpoint, reason=reason or ReconnectReason.DRAINING.value)


def plan_for_loss(attempt: int, backoff: Backoff, rng: random.Random) -> ReconnectPlan:
    """The plan after the connection dropped without notice (attempt counts failed retries so far)."""
    return ReconnectPlan(delay=backoff.delay(attempt, rng), endpoint=None, reason="connection lost")


def login_failure_is_fatal(code: int) -> bool:
    """A login refused with `code` will be refused again: stop instead of retrying.

    Server failures (90xxx) and rate limiting are transient; every other refusal is about the request
    (a bad, expired or revoked token, an unknown user, an invalid field) and would repeat.
    """
    return not (90000 <= code <= 90999 or code in RETRYABLE_LOGIN_CODES)
