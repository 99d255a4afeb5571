"""The gRPC side of a role: one `grpc.aio` server with the role's services and the health protocol.

Servicers answer through `RpcServer.answer`, which times the call, counts it by errCode, and turns a
failure into `errCode`/`errStr` in the response (`refusal`): a `ChatError` as its own code, a backend
outage (Redis, Kafka, HBase or MariaDB unreachable or timing out) as 90002 "try again" naming the kind of
failure, anything else logged and answered 90001 without its details.

The health service (grpc.health.v1) reports every registered service SERVING
once started and NOT_SERVING from the moment the process starts draining, so Kubernetes probes and
load balancers stop sending new calls while the in-flight ones finish within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiokafka.errors
import aiomysql
import grpc
import redis.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fishchat.domain.errors import ChatError
from fishchat.errcodes import ERR_STR, ErrCode
from fishchat.production.hbase.store import HBaseError
from fishchat.rpc.metrics import RpcMetrics

log = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")

#: Internal messages are small (a sync page fits a client frame), but leave room for batches.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)
SERVER_OPTIONS = (
    *CHANNEL_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
)


#: Failures of a server a role depends on that a retry may get past (a socket refused or reset, a
#: timeout, Redis, Kafka, HBase or MariaDB unreachable): answered as SERVICE_UNAVAILABLE, not as a
#: server error.
BACKEND_OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    aiokafka.errors.KafkaError,
    HBaseError,
    aiomysql.OperationalError,
    aiomysql.InterfaceError,
)


def refusal(exc: BaseException) -> tuple[ErrCode, str]:
    """The errCode and client-safe errStr a failure is answered with."""
    if isinstance(exc, ChatError):
        return exc.code, exc.message
    if isinstance(exc, BACKEND_OUTAGES):
        return ErrCode.SERVICE_UNAVAILABLE, f"a backend is unavailable ({type(exc).__name__}); try again"
    return ErrCode.SERVER_ERR, ERR_STR[ErrCode.SERVER_ERR]


async def answer_each(
    items: Sequence[T], work: Callable[[T], Awaitable[None]], concurrency: int
) -> list[tuple[int, str]]:
    """(errCode, errStr) of `work` on each item of a batch RPC, in order, at most `concurrency` at
    once: one item's failure is its own refusal, not the call's."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> tuple[int, str]:
        async with gate:
            try:
                await work(item)
            except Exception as exc:
                code, text = refusal(exc)
                if code == ErrCode.SERVER_ERR:
                    log.error("an item of a batch failed", exc_info=exc)
                return int(code), text
            return 0, ""

    return list(await asyncio.gather(*(one(item) for item in items)))


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (port 0: any free one) as a pair; a malformed value is a `ValueError` naming it."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port")
    return host.strip("[]"), int(port)


class RpcServer:
    def __init__(self, listen: str, metrics: RpcMetrics, credentials: Any = None) -> None:
        """`credentials`: `grpc.ssl_server_credentials` for TLS (None: plain)."""
        self.host, self.port = split_listen(listen)
        self._credentials = credentials
        self._metrics = metrics
        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._services: list[str] = []

    def add(self, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any, name: str) -> None:
        """Register a servicer (`add_XServicer_to_server`) under its full service name for health."""
        add_to_server(servicer, self._server)
        self._services.append(name)

    async def start(self) -> int:
        """Listen and report SERVING; returns the bound port (the real one when 0 was asked)."""
        host = "[::]" if self.host in ("::", "0.0.0.0") else self.host
        address = f"{host}:{self.port}"
        if self._credentials is not None:
            self.port = self._server.add_secure_port(address, self._credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {self.host}")
        await self._server.start()
        for name in ("", *self._services):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def mark_draining(self) -> None:
        """Health says NOT_SERVING from now on; calls are still answered until `stop`."""
        for name in ("", *self._services):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and give the running ones `grace_s` to finish."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)

    async def answer(self, method: str, refused: Callable[..., R], work: Callable[[], Awaitable[R]]) -> R:
        """Run `work` for RPC `method`; a failure becomes `refused(errCode=..., errStr=...)`."""
        started = time.perf_counter()
        code = ErrCode.OK
        try:
            return await work()
        except Exception as exc:
            code, text = refusal(exc)
            if code == ErrCode.SERVER_ERR:
                log.exception("rpc %s failed", method)
            elif isinstance(exc, BACKEND_OUTAGES):
                log.warning("rpc %s: %r", method, exc)
            return refused(errCode=int(code), errStr=text)
        finally:
            self._metrics.server_requests.labels(method, str(int(code))).inc()
            self._metrics.server_seconds.labels(method).observe(time.perf_counter() - started)
