"""The gateway role: tells a new client which access server to connect to.

A client sends ReqAccessServer (10001) and gets ResSelectAccessServerForClient{cmd 10001, errCode 0,
"ok", addr} with the client address of the least-loaded live access server (the original picked one
at random), or errCode 92001 "no accessServer" when none is registered. The connection stays open
for more questions, as in the original, until the client closes it or stays silent for
`idle_timeout_s`. Any other known or unknown command gets Error{90001, 10004} (the original ignored
it silently); an undecodable frame gets its error and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine
from typing import Any

from google.protobuf.message import Message

from fishchat.domain.errors import ChatError
from fishchat.protocol.codec import MalformedFrame, ProtocolError
from fishchat.protocol.commands import Cmd, ErrCode
from fishchat.protocol.frames import GATEWAY_COMMANDS, UnknownCommand, decode_request, reply_for
from fishchat.server.config import GatewayConfig
from fishchat.server.framing import FramedConnection, FramedServer
from fishchat.server.metrics import ServerMetrics, cmd_label
from fishchat.server.ports import GatewayCore
from fishchat.server.replies import code_reply, failure_reply, gateway_reply

log = logging.getLogger(__name__)

ROLE = "gateway"
#: Questions of one connection being answered at once; more are refused with 10007.
MAX_PENDING_PER_CONNECTION = 8


class GatewayConnection(FramedConnection):
    __slots__ = ("_pending",)

    server: GatewayServer

    def __init__(self, server: GatewayServer) -> None:
        super().__init__(server)
        self._pending = 0

    def frame_received(self, payload: bytes) -> None:
        metrics = self.server.metrics
        try:
            frame = decode_request(payload, accept=GATEWAY_COMMANDS)
        except UnknownCommand as exc:
            metrics.frames.labels(ROLE, "unknown").inc()
            self._respond(exc.cmd, reply_for(exc))
            return
        except MalformedFrame as exc:
            self.frame_error(exc)
            return
        metrics.frames.labels(ROLE, cmd_label(frame.cmd)).inc()
        if self._pending >= MAX_PENDING_PER_CONNECTION:
            self._respond(
                frame.cmd, code_reply(frame.cmd, ErrCode.RATE_LIMITED, "too many questions at once")
            )
            return
        self._pending += 1
        self.server.spawn(self._answer())

    async def _answer(self) -> None:
        reply: Message
        try:
            reply = gateway_reply(await self.server.core.pick_access_server())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, ChatError | ProtocolError):
                log.exception("choosing an access server failed")
            reply = failure_reply(Cmd.REQ_ACCESS_SERVER, exc)
        finally:
            self._pending -= 1
        self._respond(Cmd.REQ_ACCESS_SERVER, reply)

    def _respond(self, cmd: int | None, reply: Message) -> None:
        code = getattr(reply, "errCode", ErrCode.OK)
        self.server.metrics.requests.labels(ROLE, cmd_label(cmd), str(code)).inc()
        self.send(reply)


class GatewayServer(FramedServer[GatewayConnection]):
    def __init__(
        self,
        core: GatewayCore,
        config: GatewayConfig,
        host: str,
        metrics: ServerMetrics,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            ROLE,
            host,
            config.port,
            metrics,
            max_connections=config.max_connections,
            ssl_context=ssl_context,
            max_frame_bytes=4096,  # ReqAccessServer is a few bytes; nothing legitimate is larger
            max_write_buffer_bytes=config.max_write_buffer_bytes,
            idle_timeout_s=config.idle_timeout_s,
        )
        self.core = core
        self._tasks: set[asyncio.Task[None]] = set()

    def new_connection(self) -> GatewayConnection:
        return GatewayConnection(self)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="fishchat-gateway-answer")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout_s: float = 2.0) -> None:
        await super().close(timeout_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
