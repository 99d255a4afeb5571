"""The storage and infrastructure interfaces the chat core calls (design §5), and nothing else.

Each interface is small, async, and has two implementations: embedded (`fishchat.embedded`: SQLite
or in-process) and production (MariaDB, Redis, Kafka, HBase, etcd). The contract suites in
`tests/contract/` pin the behaviour both must show. Durations are integer milliseconds (`*_ms`) so
that Redis `PX` and etcd leases map onto them directly. Conflicts the domain must report (a taken
uid or name) are raised as the domain's own `ChatError`s; anything else an adapter raises is an
infrastructure failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fishchat.domain.ratelimit import RateLimiter
from fishchat.domain.records import (
    AccessNode,
    Account,
    Claim,
    Completion,
    Group,
    IdempotencyKey,
    NewSend,
    Notice,
    Route,
    ServiceInstance,
    StoredMessage,
    TokenInfo,
    User,
)


class UserDirectory(Protocol):
    """Who is registered: all that sending needs of the accounts (a role without the accounts database
    reads them from register over gRPC, without password hashes)."""

    async def get(self, uid: int) -> Account | User | None: ...


class AccountStore(Protocol):
    """Accounts (MariaDB `users`). Names are unique under `validation.name_key` (NFKC + casefold)."""

    async def create(self, account: Account) -> None:
        """Insert; raises `errors.UserExists` if the uid or the name (by name key) is taken."""

    async def get(self, uid: int) -> Account | None: ...

    async def set_password_hash(self, uid: int, password_hash: str) -> None:
        """Replace the hash (re-hash with new parameters); a missing uid is a no-op."""


class TokenStore(Protocol):
    """Login tokens by SHA-256 hash (Redis with TTL). Returning an expired token is allowed; the domain
    checks `expires_at_ms`. A store may also drop expired tokens on its own."""

    async def put(self, info: TokenInfo) -> None: ...

    async def get(self, token_hash: str) -> TokenInfo | None: ...

    async def delete(self, token_hash: str) -> bool:
        """Revoke one token; true if it existed."""

    async def delete_user(self, uid: int) -> int:
        """Revoke every token of a user; returns how many were removed."""


class GroupDirectory(Protocol):
    """Groups as sending reads them: the group and its members (`GroupStore`, or register over gRPC)."""

    async def get(self, gid: int) -> Group | None: ...

    async def members(self, gid: int) -> list[int]:
        """Member uids in ascending order (empty for an unknown group)."""


class GroupStore(Protocol):
    """Groups and membership (MariaDB `groups`, `group_members` with unique (gid, uid))."""

    async def create(self, group: Group) -> None:
        """Insert the group and make its owner a member, atomically."""

    async def get(self, gid: int) -> Group | None: ...

    async def add_member(self, gid: int, uid: int) -> bool:
        """Idempotent; true if the uid was not a member before."""

    async def remove_member(self, gid: int, uid: int) -> bool:
        """Idempotent; true if the uid was a member before."""

    async def members(self, gid: int) -> list[int]:
        """Member uids in ascending order (empty for an unknown group)."""

    async def is_member(self, gid: int, uid: int) -> bool: ...


class Presence(Protocol):
    """Routes `(uid, device) -> access node` with a TTL refreshed by ping (Redis keys with PX)."""

    async def set_route(self, route: Route, ttl_ms: int, max_devices: int = 0) -> bool:
        """Create or replace the route of `(route.uid, route.device)`; True if set.

        With `max_devices` > 0, a device without a live route is refused (False, nothing changes)
        while the user has `max_devices` live routes already; replacing a device's route always works.
        The check and the write are one atomic step (two logins at once cannot both take the last slot).
        """

    async def refresh(self, uid: int, device: str, node_id: str, ttl_ms: int) -> Route | None:
        """Extend the TTL if the route exists and belongs to `node_id`.

        Returns the current route (refreshed or, if another node now holds the device, untouched), or
        None when there is no route.
        """

    async def remove_route(self, uid: int, device: str, node_id: str) -> bool:
        """Delete the route only if it still belongs to `node_id`; true if deleted."""

    async def routes(self, uid: int) -> list[Route]:
        """Live routes of a user (any order); empty means offline."""

    async def routes_many(self, uids: Sequence[int]) -> dict[int, list[Route]]:
        """`routes` of several users in one round trip (every uid asked is a key, maybe with [])."""


class IdempotencyStore(Protocol):
    """Send idempotency keys `(source_uid, msg_id)` (Redis `SET NX PX`, or a MariaDB table)."""

    async def claim(self, source_uid: int, msg_id: str, fingerprint: str, pending_ttl_ms: int) -> Claim:
        """Atomically take the key if it is free (or its pending claim expired): state NEW.

        Otherwise report the owner's state: PENDING, or DONE with the first result.
        """

    async def claim_many(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> list[Claim]:
        """`claim` for each key in one round trip, in order: of two claims of one key, the second
        finds the first's (PENDING)."""

    async def complete(self, completions: Sequence[Completion], ttl_ms: int) -> None:
        """Turn each claimed key into DONE with its result, kept for `ttl_ms`.

        Only keys that are currently claimed (pending or done) with the same fingerprint change; others
        are left alone, so repeating a completion, or completing a send that never claimed a key, is
        harmless.
        """

    async def release(self, source_uid: int, msg_id: str, fingerprint: str) -> None:
        """Drop a pending claim after a failed attempt, so a retry can proceed (DONE keys are kept)."""

    async def release_many(self, keys: Sequence[IdempotencyKey]) -> None:
        """`release` for each key, in one round trip."""

    async def refresh(self, keys: Sequence[IdempotencyKey], pending_ttl_ms: int) -> None:
        """Give each pending claim of these fingerprints `pending_ttl_ms` more (its attempt is still
        running); done keys and other attempts' claims are left alone. One round trip."""


class SendAcceptor(Protocol):
    """How sends are accepted: claim the key, allocate versions, append, complete the key.

    Optional: a backend whose idempotency keys, version counters and message log live in one
    database (the embedded SQLite file) does it in one atomic step that concurrent sends share.
    Without it (`ChatPorts.acceptor is None`) `domain.batching.BatchAcceptor` takes those four steps
    over the separate ports above, once per batch of concurrent sends.
    """

    def accept(self, send: NewSend, done_ttl_ms: int) -> Awaitable[Claim]:
        """Queue `send` now and return its outcome; sends are accepted in the order they were queued.

        If `send.idempotent` and a live key exists, nothing is written and the key's state is returned
        (PENDING, or DONE with the first result; its `fingerprint` is the owner's). Otherwise one
        version per recipient is allocated, the copies (`messaging.timeline_copies`) are appended to
        the message log, the key (if idempotent) is recorded as DONE with the result for `done_ttl_ms`,
        and NEW is returned with that result, once all of it is durable.
        """
        ...


class MessageLog(Protocol):
    """The durable hand-off between accepting a send and storing it (Kafka, keyed by recipient uid)."""

    async def append(self, records: Sequence[StoredMessage]) -> None:
        """Durably append; when this returns, the records survive a crash and will be consumed.

        Records of one recipient are consumed in the order they were appended.
        """


class MessageLogConsumer(Protocol):
    """The reading side of the log (a Kafka consumer group; one per msg-job)."""

    async def fetch(self, max_records: int, timeout_ms: int) -> list[StoredMessage]:
        """The next records after those already fetched; empty if none arrived within the timeout."""

    async def commit(self) -> None:
        """Mark everything fetched so far as done. After a restart, consumption resumes after the last
        commit, so uncommitted records are delivered again (consumers must be idempotent)."""

    async def rewind(self) -> None:
        """Forget fetched but uncommitted records: the next fetch starts again after the last commit."""


class MessageStore(Protocol):
    """Users' timelines (HBase table `im`, row key uid + version): written by delivery, read by sync."""

    async def put(self, messages: Sequence[StoredMessage]) -> None:
        """Store rows keyed by `(uid, version)`; putting an existing row again changes nothing."""

    async def read(self, uid: int, after_version: int, limit: int) -> list[StoredMessage]:
        """At most `limit` rows of `uid` with version > `after_version`, in ascending version order."""

    async def read_many(self, reads: Sequence[tuple[int, int, int]]) -> list[list[StoredMessage]]:
        """`read(uid, after_version, limit)` for each entry, in one call; the answers in that order."""

    async def get_many(self, keys: Sequence[tuple[int, int]]) -> list[StoredMessage]:
        """The rows stored under these `(uid, version)` keys, in one round trip (absent keys are left
        out; any order)."""

    async def latest_version(self, uid: int) -> int:
        """The highest stored version of `uid`, 0 if none."""


class VersionAllocator(Protocol):
    """Per-user version counters: strictly increasing, never reused (also across restarts), gaps allowed."""

    async def next(self, uid: int) -> int: ...

    async def next_many(self, uids: Sequence[int]) -> Mapping[int, int]:
        """The next version of each distinct uid (each advanced exactly once)."""

    async def allocate(self, counts: Mapping[int, int]) -> Mapping[int, Sequence[int]]:
        """`counts[uid]` next versions of each uid (each count positive), increasing, in one step: what a
        batch of sends naming one user several times needs."""


class IdGenerator(Protocol):
    """Cluster-unique 64-bit ids (snowflake: 41-bit ms, 10-bit machine, 12-bit sequence)."""

    async def next_id(self) -> int: ...


class Registry(Protocol):
    """Service registration and discovery with load (etcd with one lease per process)."""

    async def register(self, instance: ServiceInstance) -> None:
        """Announce or replace `(role, instance_id)`; it stays until deregistered or the process dies."""

    async def set_load(self, role: str, instance_id: str, load: int) -> None:
        """Update the announced load of a registered instance; unknown instances are ignored."""

    async def deregister(self, role: str, instance_id: str) -> None: ...

    async def instances(self, role: str) -> list[ServiceInstance]:
        """Live instances of a role, ordered by instance id."""


class Notifier(Protocol):
    """Delivers a notice to one access node (gRPC `SendNotify` in production; a callback embedded)."""

    async def notify(self, node: AccessNode, notice: Notice) -> bool:
        """True if the node took the notice, false if the node is not (or no longer) reachable."""

    async def notify_many(self, node: AccessNode, notices: Sequence[Notice]) -> bool:
        """Several notices to one node in one call; true if the node took them."""


@dataclass(frozen=True, slots=True)
class ChatPorts:
    """Every interface the chat core needs, as one value the composition root builds."""

    accounts: AccountStore
    tokens: TokenStore
    groups: GroupStore
    presence: Presence
    idempotency: IdempotencyStore
    message_log: MessageLog
    message_consumer: MessageLogConsumer
    messages: MessageStore
    versions: VersionAllocator
    ids: IdGenerator
    registry: Registry
    notifier: Notifier
    #: Optional one-step acceptance of sends (embedded); None: a `BatchAcceptor` over the ports above.
    acceptor: SendAcceptor | None = None
    #: Shared rate-limit buckets (Redis in production); None: this process's memory.
    rate_limiter: RateLimiter | None = None
