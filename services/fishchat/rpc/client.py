"""The calling side: channels to the instances of a role found in the registry, used round robin.

Every call has a deadline (`timeout_s`, the role's default). A call that cannot reach an instance
(UNAVAILABLE: connection refused or reset, the instance gone) is tried on the next one while time
and attempts remain; internal RPCs are safe to repeat (sends are idempotent by msgID, the rest
read or overwrite). What still fails is raised as `Unavailable` (90002), which the access server
answers to the client, who retries. A response with a non-zero errCode is raised as its `ChatError`.

A call with a `key` goes to the instance that owns the key (rendezvous hashing over the live
instances) instead of round robin: idgen hands out each user's versions from a block reserved by one
instance, so all of a user's versions must come from the same instance to stay increasing. When the
instance set changes, a key moves to an instance that reserves a new block above every earlier one.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc

from fishchat.domain.errors import Unavailable, error_for
from fishchat.domain.ordering import CallBatches
from fishchat.domain.records import ServiceInstance
from fishchat.rpc.metrics import RpcMetrics
from fishchat.rpc.server import CHANNEL_OPTIONS

InstanceSource = Callable[[str], Awaitable[list[ServiceInstance]]]

#: Status codes that mean "this instance did not take the call": try the next one.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


class ChannelPool:
    """One channel per address, shared by every client of the process, closed together."""

    def __init__(self, credentials: Any = None, server_name: str = "") -> None:
        """`credentials`: `grpc.ssl_channel_credentials` for TLS (None: plain); `server_name`: the name
        expected in the servers' certificates instead of the dialed host (instances are dialed by IP)."""
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials = credentials
        self._options: list[tuple[str, Any]] = list(CHANNEL_OPTIONS)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(address, self._credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            self._channels[address] = channel
        return channel

    async def discard(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


class RoleClient:
    """Calls one role's service: `await client.call("Sync", request)`, or at one `address`."""

    def __init__(
        self,
        role: str,
        stub_type: Callable[[grpc.aio.Channel], Any],
        instances: InstanceSource,
        pool: ChannelPool,
        metrics: RpcMetrics,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
    ) -> None:
        if timeout_s <= 0 or attempts < 1:
            raise ValueError("timeout_s must be positive and attempts at least 1")
        self.role = role
        self._stub_type = stub_type
        self._instances = instances
        self._pool = pool
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._stubs: dict[str, Any] = {}
        self._turn = itertools.count()

    async def call(
        self,
        method: str,
        request: Any,
        *,
        address: str | None = None,
        key: int | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """The response of `method`, with errCode 0; raises the remote `ChatError` or `Unavailable`."""
        started = time.perf_counter()
        deadline = started + (timeout_s or self._timeout_s)
        outcome = "unavailable"
        try:
            response = await self._call(method, request, address, key, deadline)
            code = int(getattr(response, "errCode", 0))
            if code:
                outcome = "refused"
                raise error_for(code, str(getattr(response, "errStr", "")))
            outcome = "ok"
            return response
        finally:
            self._metrics.client_requests.labels(self.role, method, outcome).inc()
            self._metrics.client_seconds.labels(self.role, method).observe(time.perf_counter() - started)

    async def owners(self, keys: Any) -> dict[str, list[int]]:
        """The keys grouped by the address of the live instance that owns each (see the module doc)."""
        addresses = await self.addresses()
        if not addresses:
            raise Unavailable(f"no live {self.role} instance")
        grouped: dict[str, list[int]] = {}
        for key in keys:
            grouped.setdefault(owner(addresses, key), []).append(key)
        return grouped

    @property
    def timeout_s(self) -> float:
        """The deadline of a call (and what a caller over a stream should give an exchange)."""
        return self._timeout_s

    def stream(self, method: str, address: str, requests: AsyncIterator[Any]) -> Any:
        """A streaming call of `method` at `address`, fed by `requests` (no deadline: it lives as long
        as its caller keeps it; the caller times what goes over it, see `observe`)."""
        return getattr(self._stub(address), method)(requests)

    def observe(self, method: str, outcome: str, seconds: float) -> None:
        """Count one exchange over a stream like a call: outcome ok, refused or unavailable."""
        self._metrics.client_requests.labels(self.role, method, outcome).inc()
        self._metrics.client_seconds.labels(self.role, method).observe(seconds)

    async def _call(
        self, method: str, request: Any, address: str | None, key: int | None, deadline: float
    ) -> Any:
        tried: list[str] = []
        last = "no live instance"
        for _ in range(self._attempts):
            target = address or await self._pick(tried, key)
            if target is None:
                break
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                last = "deadline exceeded"
                break
            try:
                return await getattr(self._stub(target), method)(request, timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                last = f"{target}: {exc.code().name} {exc.details() or ''}".rstrip()
                if exc.code() not in RETRYABLE:
                    break
                tried.append(target)
        raise Unavailable(f"{self.role}.{method} failed: {last}")

    async def addresses(self) -> list[str]:
        """The gRPC addresses of the live instances of the role, sorted."""
        return sorted({i.address for i in await self._instances(self.role) if i.address})

    async def _pick(self, tried: list[str], key: int | None) -> str | None:
        addresses = await self.addresses()
        fresh = [a for a in addresses if a not in tried] or addresses
        if not fresh:
            return None
        if key is not None:
            return owner(fresh, key)
        return fresh[next(self._turn) % len(fresh)]

    def _stub(self, address: str) -> Any:
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = self._stub_type(self._pool.channel(address))
        return stub


def owner(addresses: list[str], key: int) -> str:
    """Rendezvous hashing: the address with the highest hash of (address, key)."""

    def weight(address: str) -> bytes:
        return hashlib.blake2b(f"{address}|{key}".encode(), digest_size=8).digest()

    return max(addresses, key=weight)


Q = TypeVar("Q")
A = TypeVar("A")


class BatchedCalls(Generic[Q, A]):
    """A batch RPC (`SyncMany`, `PingMany`) behind a call per item: the items asked while earlier
    calls are under way go together (at most `max_in_flight` calls at once, `max_items` items each),
    and each asker gets its own answer, a refused one (errCode) raised as the remote error."""

    def __init__(
        self,
        client: RoleClient,
        method: str,
        request: Callable[[list[Q]], Any],
        answers: Callable[[Any], Sequence[A]],
        *,
        max_items: int,
        max_in_flight: int,
    ) -> None:
        self._client = client
        self._method = method
        self._request = request
        self._answers = answers
        self._batches: CallBatches[Q, A] = CallBatches(
            self._call, max_items=max_items, max_in_flight=max_in_flight, name=f"fishchat-{method}"
        )

    async def ask(self, item: Q) -> A:
        answer = await self._batches.ask(item)
        if getattr(answer, "errCode", 0):
            raise error_for(answer.errCode, answer.errStr)  # type: ignore[attr-defined]
        return answer

    async def _call(self, items: list[Q]) -> Sequence[A]:
        return self._answers(await self._client.call(self._method, self._request(items)))
