"""The etcd connection every production role shares, and the one lease a process keeps alive.

`connect_etcd` builds an aetcd client whose every unary call carries a deadline and whose channel
sends gRPC keepalives, so a dead server surfaces as an exception (and a silently broken watch stream
is noticed) instead of a hang. `EtcdSession` is the process's single lease: it is granted once and
then only refreshed (the original granted a fresh lease on every heartbeat). Keys announced through
the session (registry entries, the snowflake machine id) live exactly as long as the process does.
Only when etcd reports the lease gone (after a partition longer than its TTL) is a new one granted,
the owned keys written again and the listeners told, so that a claim that may have been taken over
in between (the machine id) is made again rather than assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aetcd

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "127.0.0.1:2379"


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where etcd is and how long to wait for it. `endpoints` is comma-separated `host:port`."""

    endpoints: str = DEFAULT_ENDPOINT
    timeout_s: float = 5.0
    lease_ttl_s: int = 10

    def __post_init__(self) -> None:
        parse_endpoints(self.endpoints)
        if self.timeout_s <= 0:
            raise ValueError(f"etcd timeout_s must be positive, got {self.timeout_s}")
        if self.lease_ttl_s < 2:
            raise ValueError(f"etcd lease_ttl_s must be at least 2, got {self.lease_ttl_s}")


def parse_endpoints(endpoints: str) -> list[tuple[str, int]]:
    """`"a:1,b:2"` as `[("a", 1), ("b", 2)]`; a clear error for anything else."""
    parsed: list[tuple[str, int]] = []
    for item in endpoints.split(","):
        item = item.strip().removeprefix("http://")
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"etcd endpoint {item!r} is not host:port")
        parsed.append((host, int(port)))
    if not parsed:
        raise ValueError(f"no etcd endpoint in {endpoints!r}")
    return parsed


def _channel_target(endpoints: list[tuple[str, int]]) -> tuple[str, int]:
    """The (host, port) aetcd joins into its gRPC target.

    aetcd dials `f"{host}:{port}"`. With several IPv4 members, gRPC's `ipv4:a:1,b:2` target lets the
    channel fail over between them, which we get by handing aetcd everything but the last port as the
    "host". Hostnames cannot be listed that way, so then the first endpoint is used.
    """
    if len(endpoints) > 1 and all(_is_ipv4(host) for host, _ in endpoints):
        *rest, (last_host, last_port) = endpoints
        head = ",".join(f"{host}:{port}" for host, port in rest)
        return f"ipv4:{head},{last_host}", last_port
    return endpoints[0]


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False


def connect_etcd(settings: EtcdSettings) -> aetcd.Client:
    """A client for `settings` (it dials lazily, on the first call)."""
    host, port = _channel_target(parse_endpoints(settings.endpoints))
    return aetcd.Client(
        host=host,
        port=port,
        timeout=settings.timeout_s,
        connect_wait_timeout=max(1, round(settings.timeout_s)),
        options={
            # Notice a dead peer under an open but quiet stream (a watch) within ~15 s. etcd accepts
            # pings every 5 s or slower (--grpc-keepalive-min-time), and only while a call is open
            # (it answers pings on an idle connection with GOAWAY "too_many_pings").
            "grpc.keepalive_time_ms": 10_000,
            "grpc.keepalive_timeout_ms": 5_000,
            "grpc.keepalive_permit_without_calls": 0,
            "grpc.http2.max_pings_without_data": 0,
        },
    )


LeaseListener = Callable[[int], Awaitable[None]]


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` and wait until it has ended.

    Cancelling once is not enough on Python 3.11: `asyncio.wait_for` (used inside aetcd) drops a
    cancellation that arrives just as the awaited call completes, and the task carries on (into a
    watch that never ends), so the cancellation is repeated until the task is done.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.debug("stopped task %s had failed: %r", task.get_name(), task.exception())


class EtcdSession:
    """The process's lease: granted once, refreshed every third of its TTL, revoked on close.

    `valid()` says whether the lease is certainly still alive: the last confirmed refresh was sent
    less than a TTL ago. Owners of exclusive claims check it before acting on the claim.
    """

    def __init__(self, client: aetcd.Client, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._lease_id = 0
        self._valid_until = 0.0
        self._owned: dict[bytes, bytes] = {}
        self._listeners: list[LeaseListener] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, client: aetcd.Client, ttl_s: int) -> EtcdSession:
        session = cls(client, ttl_s)
        await session._grant()
        session._keepalive = asyncio.create_task(session._keep_alive(), name="etcd-lease-keepalive")
        return session

    @property
    def client(self) -> aetcd.Client:
        return self._client

    @property
    def lease_id(self) -> int:
        return self._lease_id

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def valid(self) -> bool:
        return not self._closed and time.monotonic() < self._valid_until

    def add_listener(self, listener: LeaseListener) -> None:
        """Call `listener(new_lease_id)` whenever the lease had to be granted again."""
        self._listeners.append(listener)

    def remove_listener(self, listener: LeaseListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def put_owned(self, key: bytes, value: bytes) -> int:
        """Put `key` on the lease and remember it, to be written again under a re-granted lease.

        Returns the revision of the write.
        """
        self._ensure_open()
        self._owned[key] = value
        result = await self._client.put(key, value, lease=self._lease_id)
        return int(result.header.revision)

    async def delete_owned(self, key: bytes) -> int:
        """Delete an owned key; returns the revision of the delete (0 if the key was already gone)."""
        self._owned.pop(key, None)
        result = await self._client.delete(key)
        return int(result.header.revision) if result is not None else 0

    async def close(self) -> None:
        """Stop refreshing and revoke the lease, which removes every key on it at once."""
        if self._closed:
            return
        self._closed = True
        task, self._keepalive = self._keepalive, None
        await stop_task(task)
        self._owned.clear()
        try:
            await self._client.revoke_lease(self._lease_id)
        except aetcd.ClientError as exc:
            # The lease then simply expires after its TTL.
            log.warning("could not revoke etcd lease %x: %s", self._lease_id, exc)

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("the etcd session is closed")

    async def _grant(self) -> None:
        sent = time.monotonic()
        lease = await self._client.lease(self._ttl_s)
        self._lease_id = int(lease.id)
        self._valid_until = sent + int(lease.ttl)

    async def _keep_alive(self) -> None:
        interval = self._ttl_s / 3
        while True:
            await asyncio.sleep(interval if self.valid() else 1.0)
            try:
                await self._refresh_or_regrant()
            except aetcd.ClientError as exc:
                log.warning("etcd lease %x refresh failed: %s", self._lease_id, exc)
            except Exception:
                log.exception("etcd lease %x keepalive failed", self._lease_id)

    async def _refresh_or_regrant(self) -> None:
        sent = time.monotonic()
        reply = await self._client.refresh_lease(self._lease_id)
        ttl = int(reply.TTL) if reply is not None else 0
        if ttl > 0:
            self._valid_until = sent + ttl
            return
        # etcd no longer knows the lease: it expired while we could not reach etcd.
        log.error("etcd lease %x expired; granting a new one and announcing again", self._lease_id)
        self._valid_until = 0.0
        await self._grant()
        for key, value in list(self._owned.items()):
            await self._client.put(key, value, lease=self._lease_id)
        for listener in list(self._listeners):
            try:
                await listener(self._lease_id)
            except Exception:
                log.exception("etcd lease listener failed after re-grant")
