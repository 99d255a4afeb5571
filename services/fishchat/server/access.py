"""The access role: client connections, their sessions, and the notify push.

A connection speaks the original protocol (login 20001, ping 20002, p2p send 20003, receipt 20004,
group send 20005, sync 20006) plus FishChat's logout (20008); the server pushes ResNotify (20007)
and, when it drains or a device logs in again, ResReconnect (20009). What this module decides:

- **Identity.** The UID is bound to the connection only by a successful login (the original bound
  it whatever the outcome); every later frame must name that UID or leave it 0, otherwise it is
  refused with 93004 (UID_MISMATCH). Any command but login before a login is refused with 93003
  (NOT_LOGGED_IN). The connection stays open after a refusal. A second login on a logged-in
  connection must be for the same uid and device (it re-checks the token).
- **Frames.** Every field is validated (`fishchat.protocol.frames`); an invalid field is answered
  in the command's own reply layout with 10005/10006 and the ids of the request echoed. An unknown
  cmd gets Error{90001, 10004} and the connection stays; a frame that cannot be decoded, an empty
  one or one over `max_frame_bytes` gets its error and the connection is closed.
- **Ordering and concurrency.** Sends of one connection overlap (a client pipelines them, and one
  send at a time would cap a connection at one send per commit), but each takes its place in the
  log in arrival order (a ticket of the connection's `SendSequence`, see `domain.ordering`), so a
  client's messages keep their order in every timeline. Everything else (login, ping, sync,
  receipt, logout) runs in a second lane, one at a time, concurrently with sends. Sends and the
  lane each answer in the order their requests arrived, which is what lets clients match replies
  first-in first-out per cmd. Sends arriving while a login is in progress wait for it. Send tasks
  and the lane exist only while there is work; past `max_in_flight` queued requests the
  connection's reads are paused (TCP backpressure), past four times that requests are refused
  with 10007.
- **Sends** are acked only after the chat core has appended them durably; the ack echoes
  sourceUID, targetUID/groupID and msgID and adds the version of the sender's own copy and the
  server time. A retry with the same msgID gets the first ack.
- **Notify.** The notifier tells this node "uid has messages up to v" only after the rows are
  stored; every logged-in device of uid here gets ResNotify{currentID: v}. Right after a login
  with stored messages the client gets a ResNotify with its newest version, so an original client
  (which syncs on notify) picks up what arrived while it was offline.
- **Liveness.** A connection without any frame for `missed_pings` ping intervals is closed, and one
  that has not logged in within `login_timeout_s`. Pings refresh the device's presence route; so
  does any request when the route was last refreshed more than a ping interval ago.
- **Several devices.** Each (uid, device) has one connection here; a new login of the same device
  sends the old connection ResReconnect{reason: "replaced"} and closes it. A login without a device
  field (every original client) is the device of its token (`fishchat.domain.devices`).
- **Drain** (SIGTERM): stop accepting, leave the registry (the gateway stops handing this server
  out), send every client ResReconnect{reason: "draining"}, refuse new requests with 90002, let the
  requests already received finish (their acks are written), give the clients a moment to close
  their ends (so no reset destroys replies they have not read), then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from google.protobuf.message import Message

from fishchat.domain.devices import implicit_device
from fishchat.domain.discovery import ACCESS_ROLE
from fishchat.domain.errors import ChatError, NotLoggedIn, UidMismatch, Unavailable
from fishchat.domain.ordering import SendSequence, SendTicket
from fishchat.domain.ratelimit import RateLimited, TokenBucket
from fishchat.domain.records import ALL_TOKENS, AccessNode, MsgType, Notice, ServiceInstance
from fishchat.domain.service import bound_uid
from fishchat.domain.settings import ChatSettings
from fishchat.domain.tokens import token_hash
from fishchat.proto.gen.external import access_pb2
from fishchat.protocol.codec import MalformedFrame, ProtocolError
from fishchat.protocol.commands import Cmd, ErrCode, ReconnectReason
from fishchat.protocol.frames import (
    ACCESS_COMMANDS,
    DecodedFrame,
    UnknownCommand,
    accept_ack_reply,
    check_device,
    decode_request,
    login_reply,
    logout_reply,
    notify_push,
    ping_reply,
    reconnect_push,
    reply_for,
    validate_request,
)
from fishchat.server.config import AccessConfig, field_limits
from fishchat.server.framing import FramedConnection, FramedServer
from fishchat.server.metrics import ServerMetrics, cmd_label
from fishchat.server.ports import AccessCore, Announcer, NoticeSource
from fishchat.server.replies import code_reply, failure_reply, group_ack, mark_ack, p2p_ack, sync_reply
from fishchat.server.websocket import OriginPolicy, WebSocketListenerLink, serve_upgrade

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

ROLE = "access"
_CMD_LABELS: dict[int, str] = {int(cmd): cmd_label(cmd) for cmd in Cmd}
#: Requests that write to timelines: handled alongside each other in arrival order (`_SendPipe`).
_SEND_COMMANDS = frozenset({Cmd.SEND_P2P_MSG, Cmd.SEND_GROUP_MSG, Cmd.MARK_DELIVERED, Cmd.MARK_READ})
_RECEIPT_KINDS = {Cmd.MARK_DELIVERED: MsgType.DELIVERED, Cmd.MARK_READ: MsgType.READ}
_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: The node's address until it is announced (`AccessServer.announce`).
_UNBOUND = "unbound"


class _EarlyNotice:
    """The newest version notified for a uid while one of its logins was in progress."""

    __slots__ = ("version",)

    def __init__(self) -> None:
        self.version = 0


class _Request(NamedTuple):
    frame: DecodedFrame
    arrived: float
    #: The answer decided on arrival (a rate limit): sent in the request's turn, nothing else done.
    refusal: Message | None = None


class _Lane:
    """Requests of one connection handled one at a time, in order, by one task while there are any."""

    __slots__ = ("items", "task")

    def __init__(self) -> None:
        self.items: deque[_Request] = deque()
        self.task: asyncio.Task[None] | None = None


class _SendPipe:
    """The sends of one connection in flight: they overlap, take their place in the log in arrival
    order (tickets of one `SendSequence`) and are answered in arrival order (each reply waits for
    the previous one). Exists only while sends are in flight."""

    __slots__ = ("last_replied", "sequence", "tasks")

    def __init__(self) -> None:
        self.sequence = SendSequence()
        self.last_replied: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()


def _settle_after(previous: asyncio.Future[None] | None, future: asyncio.Future[None]) -> None:
    """Complete `future` once `previous` is complete (now, if it already is)."""
    if previous is None or previous.done():
        if not future.done():
            future.set_result(None)
    else:
        previous.add_done_callback(lambda _: _settle_after(None, future))


class AccessConnection(FramedConnection):
    __slots__ = (
        "_control",
        "_ending",
        "_failed_logins",
        "_login_bucket",
        "_login_deadline",
        "_login_settled",
        "_logins_pending",
        "_paused",
        "_queued",
        "_refreshed_at",
        "_send_bucket",
        "_sends",
        "_token",
        "device",
        "uid",
    )

    server: AccessServer

    def __init__(self, server: AccessServer) -> None:
        super().__init__(server)
        self.uid: int | None = None
        self.device = ""
        self._token = ""
        self._control: _Lane | None = None
        self._sends: _SendPipe | None = None
        self._queued = 0
        self._paused = False
        self._logins_pending = 0
        self._login_settled: asyncio.Event | None = None
        self._failed_logins = 0
        self._refreshed_at = 0.0
        #: This connection's rate-limit buckets, made at its first send / login.
        self._send_bucket: TokenBucket | None = None
        self._login_bucket: TokenBucket | None = None
        self._login_deadline = self.last_seen + server.config.login_timeout_s
        #: None while serving; "logout" or "draining" once the connection is ending.
        self._ending: str | None = None

    # --- reading ----------------------------------------------------------------------------------

    def deadline(self) -> float:
        idle = self.last_seen + self.server.idle_timeout_s
        return idle if self.uid is not None else min(idle, self._login_deadline)

    def frame_received(self, payload: bytes) -> None:
        server = self.server
        try:
            frame = decode_request(payload, accept=ACCESS_COMMANDS)
        except UnknownCommand as exc:
            server.count_frame(None)
            self._respond(exc.cmd, reply_for(exc))
            return
        except MalformedFrame as exc:
            self.frame_error(exc)
            return
        cmd, message = frame
        server.count_frame(cmd)
        try:
            validate_request(message, server.limits)
        except ProtocolError as exc:
            self._respond(cmd, reply_for(exc, message))
            return
        if self._ending == "draining":
            self._respond(cmd, code_reply(cmd, ErrCode.SERVICE_UNAVAILABLE, "draining", message))
            return
        if self._ending == "logout":
            self._respond(cmd, code_reply(cmd, ErrCode.NOT_LOGGED_IN, "logging out", message))
            return
        refusal: Message | None = None
        if (cmd in _SEND_COMMANDS or cmd == Cmd.LOGIN) and server.rate_limits.enabled:
            wait = self._take_token(cmd == Cmd.LOGIN)
            if wait > 0:
                action = "login" if cmd == Cmd.LOGIN else "send"
                server.metrics.rate_limited.labels(action, "connection").inc()
                limited = RateLimited(f"{action}s on this connection", wait)
                refusal = code_reply(cmd, ErrCode.RATE_LIMITED, limited.message, message)
        if self._queued >= 4 * server.config.max_in_flight:
            self._respond(cmd, code_reply(cmd, ErrCode.RATE_LIMITED, "too many requests in flight", message))
            return
        if cmd == Cmd.LOGIN:
            if refusal is None:
                self._logins_pending += 1
        elif cmd == Cmd.LOGOUT:
            self._ending = "logout"  # later frames are refused; earlier ones finish first
        self._enqueue(cmd in _SEND_COMMANDS, _Request(frame, server.now(), refusal))

    def _take_token(self, login: bool) -> float:
        """A token of this connection's send or login bucket: 0.0, or the seconds until there is one."""
        limits, now = self.server.rate_limits, self.server.now()
        rate = limits.connection_login if login else limits.connection_send
        bucket = self._login_bucket if login else self._send_bucket
        if bucket is None:
            bucket = TokenBucket(rate, now)
            if login:
                self._login_bucket = bucket
            else:
                self._send_bucket = bucket
        return bucket.take(rate, now)

    def _enqueue(self, is_send: bool, request: _Request) -> None:
        if is_send:
            self._start_send(request)
        else:
            lane = self._control
            if lane is None:
                lane = self._control = _Lane()
                lane.items.append(request)
                lane.task = self.server.spawn(self._run_lane(lane), "lane")
            else:
                lane.items.append(request)
        self._queued += 1
        if not self._paused and self._queued >= self.server.config.max_in_flight:
            self._paused = True
            self.pause_reading()

    def _finished_one(self) -> None:
        self._queued -= 1
        if self._paused and self._queued <= self.server.config.max_in_flight // 2:
            self._paused = False
            self.resume_reading()

    def _start_send(self, request: _Request) -> None:
        """Handle a send alongside the ones in flight (see `_SendPipe`); its ticket is taken now, in
        arrival order."""
        pipe = self._sends
        if pipe is None:
            pipe = self._sends = _SendPipe()
        ticket = pipe.sequence.ticket()
        previous, replied = pipe.last_replied, asyncio.get_running_loop().create_future()
        pipe.last_replied = replied
        task = self.server.spawn(self._run_send(pipe, request, ticket, previous, replied), "send")
        pipe.tasks.add(task)

    async def _run_send(
        self,
        pipe: _SendPipe,
        request: _Request,
        ticket: SendTicket,
        previous: asyncio.Future[None] | None,
        replied: asyncio.Future[None],
    ) -> None:
        try:
            reply = await self._handle_send(request, ticket) if self.is_open else None
            if previous is not None and not previous.done():
                await asyncio.shield(previous)  # answer in arrival order
            if reply is not None:
                self._respond(request.frame.cmd, reply)
        finally:
            ticket.release()
            _settle_after(previous, replied)
            self._finished_one()
            task = asyncio.current_task()
            if task is not None:
                pipe.tasks.discard(task)
            if not pipe.tasks and self._sends is pipe:
                self._sends = None  # nothing in flight: an idle connection keeps no send state

    async def _handle_send(self, request: _Request, ticket: SendTicket) -> Message | None:
        """The reply to a send (its ack, or the failure in the send's layout); None: drop it unanswered."""
        if request.refusal is not None:
            return request.refusal
        cmd, message = request.frame
        try:
            if cmd == Cmd.SEND_P2P_MSG:
                assert isinstance(message, access_pb2.ReqSendP2PMsg)
                return await self._send_p2p(message, request.arrived, ticket)
            if cmd in _RECEIPT_KINDS:
                assert isinstance(message, access_pb2.ReqMark)
                return await self._mark(message, _RECEIPT_KINDS[cmd], ticket)
            assert isinstance(message, access_pb2.ReqSendGroupMsg)
            return await self._send_group(message, request.arrived, ticket)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not _expected(exc):
                log.exception("cmd %s from %s failed", int(cmd), self.peer, extra={"uid": self.uid})
            return failure_reply(cmd, exc, message)

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            while lane.items and self.is_open:
                request = lane.items.popleft()
                try:
                    await self._handle(request)
                finally:
                    self._finished_one()
        finally:
            self._queued -= len(lane.items)
            lane.items.clear()
            if self._control is lane:
                self._control = None

    async def _handle(self, request: _Request) -> None:
        cmd, message = request.frame
        if request.refusal is not None:
            self._respond(cmd, request.refusal)
            return
        try:
            if cmd == Cmd.LOGIN:
                assert isinstance(message, access_pb2.ReqLogin)
                await self._login(message)
            elif cmd == Cmd.PING:
                assert isinstance(message, access_pb2.ReqPing)
                await self._ping(message)
            elif cmd == Cmd.SYNC_MSG:
                assert isinstance(message, access_pb2.ReqSyncMsg)
                await self._sync(message)
            elif cmd == Cmd.ACCEPT_P2P_MSG_ACK:
                assert isinstance(message, access_pb2.ReqAcceptP2PMsgAck)
                self._acting(message.targetUID)
                self._respond(cmd, accept_ack_reply())
            elif cmd == Cmd.LOGOUT:
                assert isinstance(message, access_pb2.ReqLogout)
                await self._logout(message)
            else:  # pragma: no cover - ACCESS_COMMANDS and this dispatch list agree
                raise UnknownCommand(f"command {int(cmd)} has no handler", cmd=cmd)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not _expected(exc):
                log.exception("cmd %s from %s failed", int(cmd), self.peer, extra={"uid": self.uid})
            self._respond(cmd, failure_reply(cmd, exc, message))

    def _respond(self, cmd: int | None, reply: Message) -> None:
        self.server.count_request(cmd, getattr(reply, "errCode", ErrCode.OK))
        self.send(reply)

    def _acting(self, claimed: int) -> int:
        """The uid this request acts as: the logged-in one (NotLoggedIn / UidMismatch otherwise)."""
        return bound_uid(self.uid, claimed)

    # --- sessions ---------------------------------------------------------------------------------

    async def _login(self, request: access_pb2.ReqLogin) -> None:
        server = self.server
        try:
            device = check_device(request.device, server.limits, cmd=Cmd.LOGIN)
            if not device:  # an original client: a device of its token (a re-login: this connection's)
                device = self.device or implicit_device(request.UID, request.token, server.legacy_token_salt)
            try:
                if self.uid is not None and (self.uid != request.UID or device != self.device):
                    raise UidMismatch(f"this connection is logged in as uid {self.uid} device {self.device}")
                if server.node.address == _UNBOUND:
                    raise Unavailable("the server is starting")
                with server.watching_notices(request.UID) as early:
                    session = await server.core.login(request.UID, request.token, device, server.node)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed_logins += 1
                if not _expected(exc):
                    log.exception("login of uid %s failed", request.UID)
                self._respond(Cmd.LOGIN, failure_reply(Cmd.LOGIN, exc, request))
                if self._failed_logins >= server.config.max_failed_logins:
                    self.close("login_failures")
                return
            if not self.is_open:
                # The client went away while the login ran: undo the route it created.
                server.spawn(server.core.disconnect(session.uid, session.device, server.node.node_id), "undo")
                return
            first = self.uid is None
            self.uid, self.device, self._token = session.uid, session.device, request.token
            self._refreshed_at = server.now()
            if first:
                server.bind(self)
            self._respond(Cmd.LOGIN, login_reply())
            # A notice that arrived while the login ran found no session yet: it is not lost, the
            # newest version of either goes out now.
            newest = max(session.latest_version, early.version)
            if newest > 0:
                self.push_notice(newest)
        finally:
            self._logins_pending -= 1
            if self._logins_pending == 0 and self._login_settled is not None:
                self._login_settled.set()
                self._login_settled = None

    async def _wait_for_login(self) -> bool:
        """Sends that arrived while a login was in progress run after it (they may depend on it).

        False if the connection closed meanwhile: the send is dropped unanswered (the client resends
        it on its next connection, and the msgID makes that safe).
        """
        while self._logins_pending > 0 and self.is_open:
            if self._login_settled is None:
                self._login_settled = asyncio.Event()
            await self._login_settled.wait()
        return self.is_open

    async def _ping(self, request: access_pb2.ReqPing) -> None:
        uid = self._acting(request.UID)
        try:
            await self.server.core.ping(uid, self.device, self.server.node)
        except NotLoggedIn:
            self._respond(Cmd.PING, ping_reply(ErrCode.NOT_LOGGED_IN, "this device logged in elsewhere"))
            self.kick(ReconnectReason.REPLACED)
            return
        except Exception:
            # The connection is alive, which is what a ping asks; only the route refresh failed (logic
            # or presence briefly unreachable). Failing the ping would make every client of this
            # server reconnect at once; the refresh is retried at the next ping or request instead.
            log.warning("refreshing the route of uid %s failed", uid, exc_info=True)
        else:
            self._refreshed_at = self.server.now()
        self._respond(Cmd.PING, ping_reply())

    async def _keep_route(self, uid: int) -> None:
        """Refresh the presence route when pings have not for a while (a busy client may skip pings)."""
        now = self.server.now()
        if now - self._refreshed_at < self.server.config.ping_interval_s:
            return
        self._refreshed_at = now
        try:
            await self.server.core.ping(uid, self.device, self.server.node)
        except NotLoggedIn:
            self.kick(ReconnectReason.REPLACED)
        except Exception:
            log.warning("refreshing the route of uid %s failed", uid, exc_info=True)

    async def _logout(self, request: access_pb2.ReqLogout) -> None:
        server = self.server
        try:
            uid = self._acting(request.UID)
            # Sends received before the logout are finished (and acked) first.
            sends = self._sends
            if sends is not None and sends.tasks:
                await asyncio.wait(set(sends.tasks), timeout=server.config.drain_timeout_s)
            await server.core.logout(uid, self.device, server.node.node_id, self._token or None)
        except BaseException:
            self._ending = None
            raise
        server.unbind(self, disconnect=False)
        self.uid, self._token = None, ""
        self._respond(Cmd.LOGOUT, logout_reply())
        self.close("logout")

    # --- messages ---------------------------------------------------------------------------------

    async def _send_p2p(
        self, request: access_pb2.ReqSendP2PMsg, arrived: float, ticket: SendTicket
    ) -> Message | None:
        if not await self._wait_for_login():
            return None
        uid = self._acting(request.sourceUID)
        await self._keep_route(uid)
        result = await self.server.core.send_p2p(
            uid, request.targetUID, request.msgID, request.msg, ticket=ticket
        )
        self.server.p2p_latency.observe(self.server.now() - arrived)
        return p2p_ack(request, result)

    async def _send_group(
        self, request: access_pb2.ReqSendGroupMsg, arrived: float, ticket: SendTicket
    ) -> Message | None:
        if not await self._wait_for_login():
            return None
        uid = self._acting(request.sourceUID)
        await self._keep_route(uid)
        result = await self.server.core.send_group(
            uid, request.groupID, request.msgID, request.msg, ticket=ticket
        )
        self.server.group_latency.observe(self.server.now() - arrived)
        return group_ack(request, result)

    async def _mark(self, request: access_pb2.ReqMark, kind: MsgType, ticket: SendTicket) -> Message | None:
        if not await self._wait_for_login():
            return None
        uid = self._acting(request.UID)
        await self._keep_route(uid)
        result = await self.server.core.mark(
            uid, kind, request.peerUID, request.groupID, request.version, ticket=ticket
        )
        return mark_ack(request, result)

    async def _sync(self, request: access_pb2.ReqSyncMsg) -> None:
        uid = self._acting(request.UID)
        await self._keep_route(uid)
        page = await self.server.core.sync(uid, request.currentID, max_count=request.limit or None)
        self._respond(Cmd.SYNC_MSG, sync_reply(request, page))

    # --- pushes -----------------------------------------------------------------------------------

    @property
    def token_hash(self) -> str:
        return token_hash(self._token)

    def push_notice(self, version: int) -> None:
        if self.send(notify_push(version)):
            self.server.metrics.notifies.inc()

    def kick(self, reason: ReconnectReason) -> None:
        """End this connection with a ResReconnect telling the client why."""
        self._ending = self._ending or "draining"
        self.send(reconnect_push(reason))
        self.close(reason.value)

    def begin_drain(self, retry_after_ms: int) -> None:
        if self._ending is None:
            self._ending = "draining"
        self.send(reconnect_push(ReconnectReason.DRAINING, retry_after_ms=retry_after_ms))

    def lane_tasks(self) -> list[asyncio.Task[None]]:
        """The tasks handling this connection's requests right now."""
        tasks = list(self._sends.tasks) if self._sends is not None else []
        control = self._control
        if control is not None and control.task is not None:
            tasks.append(control.task)
        return tasks

    def closed(self, reason: str) -> None:
        if self._login_settled is not None:
            self._login_settled.set()  # wake queued sends; they see the connection is gone
            self._login_settled = None
        if self.uid is not None:
            self.server.unbind(self, disconnect=True)


def _expected(exc: BaseException) -> bool:
    """Refusals the client caused (not logged as failures); anything else is a server fault."""
    return isinstance(exc, ChatError | ProtocolError)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AccessServer(FramedServer[AccessConnection]):
    def __init__(
        self,
        core: AccessCore,
        notices: NoticeSource,
        announcer: Announcer,
        config: AccessConfig,
        chat: ChatSettings,
        host: str,
        metrics: ServerMetrics,
        *,
        ssl_context: ssl.SSLContext | None = None,
        observe: Callable[[Notice], None] | None = None,
    ) -> None:
        """`observe`, if given, sees every notice first (the sync reads of `core` note what is stored)."""
        super().__init__(
            ROLE,
            host,
            config.port,
            metrics,
            ssl_context=ssl_context,
            max_connections=config.max_connections,
            max_frame_bytes=config.max_frame_bytes,
            max_write_buffer_bytes=config.max_write_buffer_bytes,
            idle_timeout_s=config.idle_timeout_s,
        )
        self.core = core
        self.notices = notices
        self._observe = observe
        self.announcer = announcer
        self.config = config
        self.limits = field_limits(config, chat)
        self.rate_limits = chat.limits
        self.legacy_token_salt = chat.legacy_token_salt
        self.node = AccessNode(node_id=config.node_id or "access", address=_UNBOUND)
        self.client_address = ""
        #: The WebSocket listener's port and the URL clients are handed for it ("" when turned off).
        self.ws_port: int | None = None
        self.ws_url = ""
        self.origin_policy = OriginPolicy(config.ws_origins)
        self.sessions: dict[int, dict[str, AccessConnection]] = {}
        #: Logins in progress per uid, and the newest notice each has seen (see `watching_notices`).
        self._login_watches: dict[int, list[_EarlyNotice]] = {}
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._reporter: asyncio.Task[None] | None = None
        self._sessions_gauge = metrics.sessions
        # Labelled children looked up once: `labels()` costs more than the increment itself.
        self._frame_counters: dict[str, Any] = {}
        self._request_counters: dict[tuple[str, int], Any] = {}
        self.p2p_latency = metrics.send_latency.labels("p2p")
        self.group_latency = metrics.send_latency.labels("group")

    def new_connection(self) -> AccessConnection:
        return AccessConnection(self)

    def count_frame(self, cmd: int | None) -> None:
        """A received frame of `cmd` (None: a command this server does not know)."""
        label = _CMD_LABELS.get(cmd, "unknown") if cmd is not None else "unknown"
        counter = self._frame_counters.get(label)
        if counter is None:
            counter = self._frame_counters[label] = self.metrics.frames.labels(ROLE, label)
        counter.inc()

    def count_request(self, cmd: int | None, code: int) -> None:
        """An answered request (label values stay bounded: unknown cmds and codes share one label)."""
        label = _CMD_LABELS.get(cmd, "unknown") if cmd is not None else "none"
        key = (label, code)
        counter = self._request_counters.get(key)
        if counter is None:
            if len(self._request_counters) > 4096:  # codes come from the ErrCode table; a guard only
                self._request_counters.clear()
            counter = self._request_counters[key] = self.metrics.requests.labels(ROLE, label, str(code))
        counter.inc()

    async def start(self, *, announce: bool = True) -> None:
        """Listen for clients and (unless `announce` is false) announce this node.

        Embedded, notices arrive in-process and the node's address is its client address. A production
        access server announces itself later with `announce(grpc_address)`, the address of its
        SendNotify endpoint, once that listens; logins before that are refused with 90002.
        """
        await super().start()
        host = self.config.advertise_host or ("127.0.0.1" if self.host in _UNSPECIFIED_HOSTS else self.host)
        self.client_address = self.config.public_address or _join_host_port(host, self.port)
        ws_port = self.config.websocket_port
        if ws_port is not None:
            self.ws_port = await self.listen(self._websocket_link, ws_port)
            scheme = "wss" if self.ssl_context is not None else "ws"
            self.ws_url = self.config.ws_public_url or f"{scheme}://{_join_host_port(host, self.ws_port)}/ws"
            log.info("access listening for WebSocket clients", extra={"role": ROLE, "port": self.ws_port})
        if announce:
            await self.announce(self.client_address)

    async def announce(self, node_address: str) -> None:
        """Take `node_address` as where notices reach this node, attach to the notices, enter the registry
        with the client address and the load, and keep the load announced."""
        self.node = AccessNode(
            node_id=self.config.node_id or f"access-{self.client_address}", address=node_address
        )
        self.notices.attach(self.node.node_id, self.on_notice)
        await self.announcer.register(self._instance())
        self._reporter = asyncio.create_task(self._report_load(), name="fishchat-access-load")

    def _instance(self) -> ServiceInstance:
        return ServiceInstance(
            role=ACCESS_ROLE,
            instance_id=self.node.node_id,
            address=self.node.address,
            client_address=self.client_address,
            load=len(self.connections),
            ws_url=self.ws_url,
        )

    def _websocket_link(self) -> WebSocketListenerLink:
        return WebSocketListenerLink(
            self.new_connection, self.origin_policy, self.max_frame_bytes, self.metrics
        )

    async def serve_websocket(self, request: web.Request) -> web.StreamResponse:
        """A WebSocket client on another server's HTTP port (the embedded profile's HTTP API): the same
        sessions as on this server's own ports."""
        return await serve_upgrade(
            request, self.new_connection, self.origin_policy, self.max_frame_bytes, self.metrics
        )

    async def _report_load(self) -> None:
        reported = -1
        while True:
            load = len(self.connections)
            if load != reported:
                try:
                    await self.announcer.set_load(ACCESS_ROLE, self.node.node_id, load)
                    reported = load
                except Exception:
                    log.warning("announcing the load failed", exc_info=True)
            await asyncio.sleep(self.config.load_report_interval_s)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task of this server, awaited (or cancelled) when it closes."""
        task = asyncio.get_running_loop().create_task(coro, name=f"fishchat-access-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("access task %s failed", task.get_name(), exc_info=task.exception())

    # --- sessions ---------------------------------------------------------------------------------

    def bind(self, connection: AccessConnection) -> None:
        assert connection.uid is not None
        devices = self.sessions.setdefault(connection.uid, {})
        previous = devices.get(connection.device)
        devices[connection.device] = connection
        if previous is not None and previous is not connection:
            # Same uid and device on a new connection: the newest login wins, the old one is told.
            previous.uid = None  # its route now belongs to the new connection; don't remove it
            previous.kick(ReconnectReason.REPLACED)
        self._sessions_gauge.set(sum(len(d) for d in self.sessions.values()))

    def unbind(self, connection: AccessConnection, *, disconnect: bool) -> None:
        uid = connection.uid
        if uid is None:
            return
        devices = self.sessions.get(uid)
        if devices is None or devices.get(connection.device) is not connection:
            return
        del devices[connection.device]
        if not devices:
            del self.sessions[uid]
        self._sessions_gauge.set(sum(len(d) for d in self.sessions.values()))
        if disconnect:
            self.spawn(self._disconnect(uid, connection.device), "disconnect")

    async def _disconnect(self, uid: int, device: str) -> None:
        try:
            await self.core.disconnect(uid, device, self.node.node_id)
        except Exception:
            log.warning("removing the route of uid %s device %s failed", uid, device, exc_info=True)

    @contextlib.contextmanager
    def watching_notices(self, uid: int) -> Iterator[_EarlyNotice]:
        """Note notices for `uid` while its login runs: the route exists before the session is bound,
        so a notice can arrive in between and would otherwise reach nobody."""
        early = _EarlyNotice()
        watches = self._login_watches.setdefault(uid, [])
        watches.append(early)
        try:
            yield early
        finally:
            watches.remove(early)
            if not watches:
                del self._login_watches[uid]

    async def on_notice(self, notice: Notice) -> None:
        """From the notifier: `notice.uid` has stored messages up to `notice.version`, or (`revoked`)
        its sessions of a revoked token must end."""
        if self._observe is not None:
            self._observe(notice)
        if notice.revoked:
            self.end_sessions(notice.uid, notice.revoked)
            return
        for early in self._login_watches.get(notice.uid, ()):
            early.version = max(early.version, notice.version)
        for connection in list(self.sessions.get(notice.uid, {}).values()):
            connection.push_notice(notice.version)

    def end_sessions(self, uid: int, revoked: str) -> int:
        """Kick `uid`'s sessions logged in with the token of hash `revoked` (ALL_TOKENS: every one)
        with ResReconnect "revoked"; returns how many."""
        ended = 0
        for connection in list(self.sessions.get(uid, {}).values()):
            if revoked == ALL_TOKENS or connection.token_hash == revoked:
                connection.kick(ReconnectReason.REVOKED)
                ended += 1
        if ended:
            log.info("ended %d sessions of uid %s: token revoked", ended, uid)
        return ended

    # --- shutdown ---------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Leave the registry, tell every client to reconnect elsewhere, finish requests, close."""
        if self.draining:
            return
        self.draining = True
        self.stop_accepting()
        try:
            await self.announcer.deregister(ACCESS_ROLE, self.node.node_id)
        except Exception:
            log.warning("leaving the registry failed", exc_info=True)
        connections = list(self.connections)
        log.info("draining", extra={"role": ROLE, "connections": len(connections)})
        for connection in connections:
            connection.begin_drain(self.config.reconnect_spread_ms)
        deadline = self.now() + self.config.drain_timeout_s
        # New requests are refused from now on, so the lanes running now are all there is to finish.
        running = {task for connection in connections for task in connection.lane_tasks()}
        if running:
            _, unfinished = await asyncio.wait(running, timeout=self.config.drain_timeout_s)
            if unfinished:
                log.warning("%d connections still busy at the end of the drain", len(unfinished))
        # A client closes its end once it has every reply it waits for. Closing ours first, while its
        # last request may still be unread here, would reset the connection, and a reset destroys
        # what the client has not read yet: the ResReconnect and acks written above.
        leaving = min(max(1.0, self.config.reconnect_spread_ms / 1000), max(0.0, deadline - self.now()))
        if not await self.wait_disconnected(leaving):
            log.info("%d clients still connected at the end of the drain", len(self.connections))
        await self.close(timeout_s=max(0.5, deadline - self.now()))

    async def close(self, timeout_s: float = 2.0) -> None:
        self.draining = True
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
            self._reporter = None
        await super().close(timeout_s)
        self.notices.detach(self.node.node_id)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
