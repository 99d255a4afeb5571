"""`ChatClient`: one logged-in device speaking FishChat's client protocol over TCP or WebSocket.

It does what a chat app does with the protocol (design §3): find an access server through the gateway
(or use a given address), log in with a token, ping so the server keeps the session, send p2p and
group messages and return their acks, and on every notify sync its timeline from its own cursor until
the server says there is no more, handing each new message to the caller exactly once and in version
order. When the server drains (ResReconnect) or the connection drops, it reconnects through the
gateway, logs in again and syncs, so nothing is missed; sends that were in flight are resent with the
same msgID, which the server deduplicates.

A FishChat notify carries the user's newest stored version, so a notify at or below the cursor (the
messages were already fetched by a sync that overtook it) costs nothing. An original FishChatServer2
sent its last acknowledged cursor instead; against one, call `sync()` on a timer as its demo did.

Messages arrive through `on_message` (a plain callable, run on the event loop in timeline order) or,
without one, through the `messages()` async iterator. The sender's own copy of what it sent is part of
its timeline and is delivered like any other message (so other devices of the same user see it).

Everything runs on the caller's event loop (asyncio or uvloop); no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import ssl as ssl_module
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from google.protobuf.message import Message

from fishchat.client.cursor import SyncCursor
from fishchat.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionLost,
    InvalidRequest,
    ProtocolViolation,
    RequestRefused,
    RequestTimeout,
    SessionEnded,
)
from fishchat.client.gateway import DEFAULT_GATEWAY, locate_access, locate_access_server
from fishchat.client.pending import PendingRequests
from fishchat.client.reconnect import (
    Backoff,
    ClientState,
    ReconnectPlan,
    check_transition,
    login_failure_is_fatal,
    plan_for_loss,
    plan_for_notice,
)
from fishchat.client.records import ChatMessage, Endpoint, SendAck
from fishchat.client.transport import FrameConnection
from fishchat.client.websocket import WebSocketFrameConnection, websocket_endpoint
from fishchat.proto.gen.external import access_pb2, error_pb2
from fishchat.protocol.codec import ProtocolError
from fishchat.protocol.commands import Cmd, ErrCode
from fishchat.protocol.frames import check_device, decode_reply, validate_request

log = logging.getLogger(__name__)
#: A connection to an access server: TCP frames or WebSocket messages (the same interface).
ClientLink = FrameConnection | WebSocketFrameConnection

MessageHandler = Callable[[ChatMessage], None]
_R = TypeVar("_R", bound=Message)

DEFAULT_PING_INTERVAL = 10.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
#: How long a connection the server is draining may stay open for replies already owed.
DRAIN_GRACE = 10.0
#: Longest wait between syncs while a notify announced versions the cursor has not reached.
MAX_SYNC_RETRY = 30.0


@dataclass
class ClientStats:
    """Counters of one client's protocol work (for monitoring and benchmarks)."""

    notifies: int = 0
    sync_requests: int = 0
    messages: int = 0
    reconnects: int = 0


def new_msg_id() -> str:
    """A fresh client message id: 32 hex characters, unique without coordination."""
    return uuid.uuid4().hex


def _endpoint(value: Endpoint | str | None, what: str) -> Endpoint | None:
    if value is None or isinstance(value, Endpoint):
        return value
    try:
        return Endpoint.parse(value)
    except ValueError as exc:
        raise InvalidRequest(f"{what}: {exc}") from None


class ChatClient:
    """A chat session of user `uid` on one device.

    `gateway` is asked for an access server at connect and at every reconnect; `access`, when given,
    is connected to directly at first (and on reconnects too when there is no gateway). `cursor` is the
    newest version this device already has (0: everything in the timeline is new).
    `ping_interval` must stay below a third of the server's idle timeout, since the server drops a
    session after three missed pings. `sync_limit` asks for at most that many messages per sync page
    (0: the server's default). `backoff` governs reconnects (None: never reconnect; a lost
    connection closes the client). `send_attempts` is how many connections one send may try.
    `auto_sync` false turns off syncing on connect and on notify (a send-only client); `sync()`
    still works. `websocket` connects over WebSocket to the URL the gateway hands out (or to
    `access_ws`, a `ws://` URL, without a gateway). `receipts` asks sync for receipt entries
    ("delivered" / "read", see `ChatMessage`), delivered like messages. `ssl`: the TLS context to
    reach a gateway and access server that speak TLS (and to verify them).
    """

    def __init__(
        self,
        uid: int,
        token: str,
        *,
        device: str = "",
        gateway: Endpoint | str | None = DEFAULT_GATEWAY,
        access: Endpoint | str | None = None,
        cursor: int = 0,
        on_message: MessageHandler | None = None,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        sync_limit: int = 0,
        sync_retry: float = 1.0,
        auto_sync: bool = True,
        backoff: Backoff | None = Backoff(),  # noqa: B008 - a frozen value
        send_attempts: int = 3,
        rng: random.Random | None = None,
        websocket: bool = False,
        access_ws: str | None = None,
        receipts: bool = False,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        if uid <= 0:
            raise InvalidRequest(f"uid must be a positive id, not {uid}")
        if not token:
            raise InvalidRequest("a token is required to log in")
        try:
            check_device(device)
        except ProtocolError as exc:
            raise InvalidRequest(str(exc)) from None
        for name, value in (
            ("ping_interval", ping_interval),
            ("request_timeout", request_timeout),
            ("connect_timeout", connect_timeout),
            ("sync_retry", sync_retry),
        ):
            if value <= 0:
                raise InvalidRequest(f"{name} must be positive, not {value}")
        if not 0 <= sync_limit <= 0xFFFFFFFF:
            raise InvalidRequest(f"sync_limit must be within 0..{0xFFFFFFFF}, not {sync_limit}")
        if send_attempts < 1:
            raise InvalidRequest("send_attempts must be at least 1")
        self.uid = uid
        self.device = device
        self._token = token
        self._gateway = _endpoint(gateway, "gateway")
        self._access = _endpoint(access, "access")
        self._receipts = receipts
        self._ssl = ssl
        self._websocket = websocket or access_ws is not None
        self._access_ws = access_ws
        if access_ws is not None:
            try:
                websocket_endpoint(access_ws)
            except ValueError as exc:
                raise InvalidRequest(f"access_ws: {exc}") from None
        if self._gateway is None and self._access is None and access_ws is None:
            raise InvalidRequest("give a gateway or an access server address")
        if self._websocket and self._gateway is None and access_ws is None:
            raise InvalidRequest("a WebSocket client needs a gateway or an access_ws URL")
        self._on_message = on_message
        self._ping_interval = ping_interval
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._sync_limit = sync_limit
        self._sync_retry = sync_retry
        self._auto_sync = auto_sync
        self._backoff = backoff
        self._send_attempts = send_attempts
        self._rng = rng or random.Random()
        try:
            self._cursor = SyncCursor(cursor)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

        self._state = ClientState.NEW
        self._conn: ClientLink | None = None
        self._endpoint: Endpoint | None = None
        self._links: dict[ClientLink, PendingRequests] = {}
        #: Connections a draining server told to go, closed once their last reply is in.
        self._leaving: set[ClientLink] = set()
        self._online = asyncio.Event()
        self._closed = asyncio.Event()
        self._close_error: ClientError | None = None
        self._sync_wanted = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._queue: asyncio.Queue[ChatMessage | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self.stats = ClientStats()

    # --- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def cursor(self) -> int:
        """The newest timeline version delivered to the caller (save it to resume later)."""
        return self._cursor.version

    @property
    def latest_version(self) -> int:
        """The newest version the server announced (by notify); above `cursor` while a sync is due."""
        return self._cursor.latest_known

    @property
    def access_endpoint(self) -> Endpoint | None:
        """The access server of the current connection (None while offline)."""
        return self._endpoint if self._state is ClientState.ONLINE else None

    @property
    def closed_error(self) -> ClientError | None:
        """Why the client closed by itself (None while open, or after a close the caller asked for)."""
        return self._close_error

    def _set_state(self, new: ClientState) -> None:
        check_transition(self._state, new)
        self._state = new

    # --- lifecycle --------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, log in, and start pinging and syncing (an initial sync fetches what is waiting).

        Raises ConnectionLost (unreachable), RequestRefused (e.g. a bad token, or no access server),
        RequestTimeout; the client is then closed.
        """
        if self._state is not ClientState.NEW:
            raise ClientError(f"connect() is called once, on a new client (state: {self._state.value})")
        self._set_state(ClientState.CONNECTING)
        try:
            await self._establish(self._access)
        except BaseException as exc:
            await self._shutdown(exc if isinstance(exc, ClientError) else None)
            raise
        self._spawn(self._ping_loop(), "ping")
        if self._auto_sync:
            self._spawn(self._sync_loop(), "sync")
            self._sync_wanted.set()

    async def __aenter__(self) -> ChatClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop everything and close the connection; pending requests fail with ClientClosed."""
        await self._shutdown(None)

    async def logout(self) -> None:
        """End the session on the server (its token is revoked there), then close.

        The client closes even if the server refuses; the refusal is raised afterwards.
        """
        conn = await self._current()
        self._set_state(ClientState.CLOSING)
        try:
            reply = await self._exchange(conn, Cmd.LOGOUT, access_pb2.ReqLogout(cmd=Cmd.LOGOUT, UID=self.uid))
        finally:
            await self._shutdown(None)
        result = _expect(reply, access_pb2.ResLogout, Cmd.LOGOUT)
        if result.errCode != ErrCode.OK:
            raise RequestRefused(result.errCode, result.errStr, cmd=Cmd.LOGOUT)

    async def wait_closed(self) -> ClientError | None:
        """Wait until the client is closed; returns why it closed by itself (None if asked to)."""
        await self._closed.wait()
        return self._close_error

    # --- requests ---------------------------------------------------------------------------------

    async def send_p2p(self, target_uid: int, body: str, *, msg_id: str | None = None) -> SendAck:
        """Send `body` to user `target_uid`; returns once the server has stored it durably.

        Pass the same `msg_id` to retry a send safely (the server returns the first result). Raises
        RequestRefused with the server's code (e.g. no such user), InvalidRequest for fields outside
        the protocol's limits, RequestTimeout, ClientClosed.
        """
        key = msg_id if msg_id is not None else new_msg_id()
        request = access_pb2.ReqSendP2PMsg(
            cmd=Cmd.SEND_P2P_MSG, sourceUID=self.uid, targetUID=target_uid, msgID=key, msg=body
        )
        _check_request(request)
        reply = _expect(
            await self._send(Cmd.SEND_P2P_MSG, request, key), access_pb2.ResSendP2PMsg, request.cmd
        )
        if reply.errCode != ErrCode.OK:
            raise RequestRefused(reply.errCode, reply.errStr, cmd=Cmd.SEND_P2P_MSG)
        ack = SendAck.from_p2p(reply)
        # An original server echoes nothing; the ack is still for this request.
        return ack if ack.msg_id else dataclasses.replace(ack, msg_id=key, source_uid=self.uid)

    async def send_group(self, group_id: int, body: str, *, msg_id: str | None = None) -> SendAck:
        """Send `body` to every member of group `group_id` (the sender must be a member); see send_p2p."""
        key = msg_id if msg_id is not None else new_msg_id()
        request = access_pb2.ReqSendGroupMsg(
            cmd=Cmd.SEND_GROUP_MSG, sourceUID=self.uid, groupID=group_id, msgID=key, msg=body
        )
        _check_request(request)
        reply = _expect(
            await self._send(Cmd.SEND_GROUP_MSG, request, key), access_pb2.ResSendGroupMsg, request.cmd
        )
        if reply.errCode != ErrCode.OK:
            raise RequestRefused(reply.errCode, reply.errStr, cmd=Cmd.SEND_GROUP_MSG)
        ack = SendAck.from_group(reply)
        return ack if ack.msg_id else dataclasses.replace(ack, msg_id=key, source_uid=self.uid)

    async def mark_delivered(self, version: int, *, peer_uid: int = 0, group_id: int = 0) -> int:
        """Tell the other side that this user has received the conversation with `peer_uid` (or group
        `group_id`) up to `version` of its timeline (an entry of that conversation); returns the
        version of the receipt in this user's own timeline. Idempotent."""
        return await self._mark(Cmd.MARK_DELIVERED, version, peer_uid, group_id)

    async def mark_read(self, version: int, *, peer_uid: int = 0, group_id: int = 0) -> int:
        """As `mark_delivered`, for "read up to"."""
        return await self._mark(Cmd.MARK_READ, version, peer_uid, group_id)

    async def _mark(self, cmd: Cmd, version: int, peer_uid: int, group_id: int) -> int:
        request = access_pb2.ReqMark(
            cmd=cmd, UID=self.uid, peerUID=peer_uid, groupID=group_id, version=version
        )
        _check_request(request)
        conn = await self._current()
        reply = _expect(await self._exchange(conn, cmd, request), access_pb2.ResMark, cmd)
        if reply.errCode != ErrCode.OK:
            raise RequestRefused(reply.errCode, reply.errStr, cmd=cmd)
        return int(reply.receiptVersion)

    async def ping(self) -> None:
        """One heartbeat now (the client also pings by itself every `ping_interval`)."""
        conn = await self._current()
        reply = _expect(
            await self._exchange(conn, Cmd.PING, access_pb2.ReqPing(cmd=Cmd.PING, UID=self.uid)),
            error_pb2.Error,
            Cmd.PING,
        )
        if reply.errCode != ErrCode.OK:
            raise RequestRefused(reply.errCode, reply.errStr, cmd=Cmd.PING)

    async def sync(self) -> int:
        """Fetch and deliver everything after the cursor now; returns how many messages were new.

        The client already syncs by itself on every notify; this is for callers that want to be sure
        they hold everything stored before the call.
        """
        return await self._sync_all()

    async def messages(self) -> AsyncIterator[ChatMessage]:
        """Received messages in timeline order, until the client closes (only without `on_message`)."""
        if self._on_message is not None:
            raise ClientError("messages go to on_message; messages() is for clients without one")
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # wake any other iterator too
                return
            yield item

    # --- connection handling ----------------------------------------------------------------------

    async def _establish(self, endpoint: Endpoint | None) -> None:
        """Open a connection (asking the gateway when `endpoint` is None) and log in on it."""
        conn: ClientLink
        if self._websocket:
            conn = await self._open_websocket()
            endpoint = conn.endpoint
        else:
            if endpoint is None:
                assert self._gateway is not None
                endpoint = await locate_access_server(
                    self._gateway, within=self._connect_timeout, ssl=self._ssl
                )
            conn = await FrameConnection.open(
                endpoint, self._on_frame, self._on_lost, within=self._connect_timeout, ssl=self._ssl
            )
        self._links[conn] = PendingRequests()
        try:
            reply = _expect(
                await self._exchange(
                    conn,
                    Cmd.LOGIN,
                    access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=self.uid, token=self._token, device=self.device),
                    within=self._connect_timeout,
                ),
                error_pb2.Error,
                Cmd.LOGIN,
            )
            if reply.errCode != ErrCode.OK:
                raise RequestRefused(reply.errCode, reply.errStr, cmd=Cmd.LOGIN)
            if self._state not in (ClientState.CONNECTING, ClientState.RECONNECTING):
                raise ClientClosed("the client was closed while logging in")
        except BaseException:
            conn.abort()
            self._links.pop(conn, None)
            raise
        self._conn = conn
        self._endpoint = endpoint
        self._set_state(ClientState.ONLINE)
        self._online.set()
        log.debug("uid %d logged in on %s", self.uid, endpoint)

    async def _open_websocket(self) -> WebSocketFrameConnection:
        """A WebSocket to the gateway's pick (or to `access_ws` when there is no gateway). A drain's
        `addr` names a TCP address, so WebSocket clients always reconnect this way."""
        url = self._access_ws
        if self._gateway is not None:
            choice = await locate_access(self._gateway, within=self._connect_timeout, ssl=self._ssl)
            if not choice.ws_url:
                raise ProtocolViolation(f"the gateway {self._gateway} named no WebSocket URL")
            url = choice.ws_url
        assert url is not None
        options = {"ssl": self._ssl} if url.startswith("wss://") and self._ssl is not None else {}
        return await WebSocketFrameConnection.open(
            url, self._on_frame, self._on_lost, within=self._connect_timeout, **options
        )

    def _detach(self, conn: ClientLink) -> None:
        """Stop using `conn` for new requests (it stays registered until it is closed)."""
        if self._conn is conn:
            self._conn = None
            self._online.clear()

    def _on_lost(self, conn: ClientLink, error: Exception | None) -> None:
        pending = self._links.pop(conn, None)
        self._leaving.discard(conn)
        reason = error if isinstance(error, ClientError) else None
        if pending is not None:
            pending.fail_all(reason or ConnectionLost(f"the connection to {conn.endpoint} closed"))
        if self._conn is not conn:
            return
        self._detach(conn)
        if self._state is not ClientState.ONLINE:
            return
        if self._backoff is None:
            self._spawn(
                self._fail(reason or ConnectionLost(f"{conn.endpoint} closed the connection")), "close"
            )
            return
        log.warning(
            "connection to %s lost (%s); reconnecting", conn.endpoint, error or "closed by the server"
        )
        self._start_reconnect(plan_for_loss(0, self._backoff, self._rng))

    def _on_reconnect_notice(self, conn: ClientLink, notice: access_pb2.ResReconnect) -> None:
        if conn is not self._conn or self._state is not ClientState.ONLINE:
            return
        plan = plan_for_notice(notice.reason, notice.addr, notice.retryAfterMs, self._rng)
        self._detach(conn)
        pending = self._links.get(conn)
        if plan is None or not pending:
            conn.close()
        else:
            # A draining server still answers what it received, and waits for us to close first (its
            # close could otherwise reset the connection and destroy replies we have not read): close
            # once the last reply is in, or after DRAIN_GRACE. Requests it drops fail as the
            # connection closes, and sends are retried on the next one.
            self._leaving.add(conn)
            asyncio.get_running_loop().call_later(DRAIN_GRACE, conn.close)
        if plan is None:
            self._spawn(
                self._fail(SessionEnded(notice.reason, notice.errStr if notice.errCode else "")), "close"
            )
            return
        log.info("server %s asks to reconnect (%s)", conn.endpoint, plan.reason)
        self._start_reconnect(plan)

    def _start_reconnect(self, plan: ReconnectPlan) -> None:
        self._set_state(ClientState.RECONNECTING)
        self._reconnect_task = self._spawn(self._reconnect(plan), "reconnect")

    async def _reconnect(self, plan: ReconnectPlan) -> None:
        backoff = self._backoff or Backoff(max_attempts=1)
        failures = 0
        while True:
            await asyncio.sleep(plan.delay)
            target = plan.endpoint if plan.endpoint is not None else (None if self._gateway else self._access)
            try:
                await self._establish(target)
            except ClientClosed:
                return  # closed meanwhile
            except RequestRefused as exc:
                if exc.cmd == Cmd.LOGIN and login_failure_is_fatal(exc.code):
                    await self._fail(exc)
                    return
                last: ClientError = exc
            except (ConnectionLost, RequestTimeout, ProtocolViolation) as exc:
                last = exc
            else:
                self.stats.reconnects += 1
                self._sync_wanted.set()
                return
            failures += 1
            log.warning("reconnect attempt %d failed: %s", failures, last)
            if backoff.exhausted(failures):
                await self._fail(ConnectionLost(f"gave up reconnecting after {failures} attempts: {last}"))
                return
            plan = plan_for_loss(failures, backoff, self._rng)

    async def _fail(self, error: ClientError) -> None:
        """Close because of `error`; wait_closed() and closed_error report it."""
        if self._close_error is None:
            self._close_error = error
        log.warning("closing the chat client of uid %d: %s", self.uid, error)
        await self._shutdown(error)

    async def _shutdown(self, error: ClientError | None) -> None:
        """Close once, whoever asks first; later callers (and cancelled ones) just wait for it."""
        if error is not None and self._close_error is None:
            self._close_error = error
        if self._shutdown_task is None:
            # Not one of self._tasks, so the cancellation of those cannot interrupt the shutdown.
            self._shutdown_task = asyncio.ensure_future(self._do_shutdown(error))
        await asyncio.shield(self._shutdown_task)

    async def _do_shutdown(self, error: ClientError | None) -> None:
        if self._state is not ClientState.CLOSING:
            self._set_state(ClientState.CLOSING)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._online.clear()
        closing = list(self._links)
        for conn in closing:
            conn.close()
        for conn in closing:
            try:
                async with asyncio.timeout(1.0):
                    await conn.wait_closed()
            except TimeoutError:
                conn.abort()
        closed = ClientClosed(f"the client was closed{f': {error}' if error else ''}")
        for pending in self._links.values():
            pending.fail_all(closed)
        self._links.clear()
        self._conn = None
        self._queue.put_nowait(None)
        self._set_state(ClientState.CLOSED)
        self._closed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"fishchat-client-{self.uid}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("client task %s failed", task.get_name(), exc_info=task.exception())

    # --- frames -----------------------------------------------------------------------------------

    def _on_frame(self, conn: ClientLink, payload: bytes) -> None:
        try:
            cmd, message = decode_reply(payload)
        except ProtocolError as exc:
            log.warning("ignoring a frame from %s: %s", conn.endpoint, exc)
            return
        pending = self._links.get(conn)
        if cmd == Cmd.SEND_P2P_MSG and isinstance(message, access_pb2.ResSendP2PMsg) and message.msg:
            # Acks never carry the body: this is an original server's direct push of a message.
            self._deliver(ChatMessage.from_push(message))
            return
        if cmd == Cmd.NOTIFY and isinstance(message, access_pb2.ResNotify):
            if conn is self._conn:
                self.stats.notifies += 1
                self._cursor.note_notify(message.currentID)
                # A notify at or below the cursor announces messages a sync already fetched.
                if message.currentID <= 0 or self._cursor.behind:
                    self._sync_wanted.set()
            return
        if cmd == Cmd.RECONNECT and isinstance(message, access_pb2.ResReconnect):
            self._on_reconnect_notice(conn, message)
            return
        if pending is None:
            return
        if cmd == Cmd.ERR_SERVER and isinstance(message, error_pb2.Error):
            error = RequestRefused(message.errCode or ErrCode.SERVER_ERR, message.errStr, cmd=Cmd.ERR_SERVER)
            if not pending.fail_oldest(error):
                log.warning("server %s reported an error: %s", conn.endpoint, error)
            return
        key: str | None = getattr(message, "msgID", None) if cmd in _KEYED else None
        if not pending.resolve(cmd, message, key):
            log.debug("unexpected reply cmd %d from %s", cmd, conn.endpoint)
        if not pending and conn in self._leaving:
            conn.close()

    async def _current(self) -> ClientLink:
        """The connection to send on, waiting (up to the request timeout) while reconnecting."""
        while True:
            if self._state in (ClientState.CLOSING, ClientState.CLOSED):
                raise ClientClosed(
                    f"the client is closed{f': {self._close_error}' if self._close_error else ''}"
                )
            if self._state is ClientState.NEW:
                raise ClientError("connect() first")
            conn = self._conn
            if conn is not None and self._online.is_set():
                if conn.is_open:
                    return conn
                # Closing (the server's end came in): its loss handler runs as it closes, detaching it
                # and starting a reconnect; then wait for that like any other reconnect.
                try:
                    async with asyncio.timeout(self._request_timeout):
                        await conn.wait_closed()
                except TimeoutError:
                    raise RequestTimeout(f"{conn.endpoint} did not finish closing") from None
                continue
            online = asyncio.ensure_future(self._online.wait())
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                done, _ = await asyncio.wait(
                    {online, closed}, timeout=self._request_timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                online.cancel()
                closed.cancel()
            if not done:
                raise RequestTimeout(f"not connected within {self._request_timeout:g}s")

    async def _exchange(
        self,
        conn: ClientLink,
        cmd: Cmd,
        request: Message,
        *,
        key: str | None = None,
        within: float | None = None,
    ) -> Message:
        """Send `request` on `conn` and wait for its reply."""
        pending = self._links.get(conn)
        if pending is None:
            raise ConnectionLost(f"the connection to {conn.endpoint} is closed")
        future = pending.add(cmd, key)
        conn.send(request.SerializeToString())
        limit = self._request_timeout if within is None else within
        try:
            async with asyncio.timeout(limit):
                await conn.drain()
                return await future
        except TimeoutError:
            pending.forget(future)
            raise RequestTimeout(
                f"no reply to cmd {int(cmd)} from {conn.endpoint} within {limit:g}s"
            ) from None

    async def _send(self, cmd: Cmd, request: Message, key: str) -> Message:
        """A send, retried with the same msgID on the next connection if the current one drops, or if
        a draining server refused it (it arrived after the server's ResReconnect: 90002 "try
        elsewhere", while this client was already moving)."""
        for attempt in range(1, self._send_attempts + 1):
            conn = await self._current()
            last = attempt == self._send_attempts or self._backoff is None
            try:
                reply = await self._exchange(conn, cmd, request, key=key)
            except ConnectionLost:
                if last:
                    raise
                log.info("send %s interrupted by a lost connection; retrying (attempt %d)", key, attempt + 1)
                continue
            moved = conn is not self._conn
            if moved and not last and getattr(reply, "errCode", ErrCode.OK) == ErrCode.SERVICE_UNAVAILABLE:
                log.info("send %s refused by a draining server; retrying (attempt %d)", key, attempt + 1)
                continue
            return reply
        raise AssertionError("unreachable")

    # --- background loops -------------------------------------------------------------------------

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            conn = self._conn
            if conn is None or not self._online.is_set():
                continue
            try:
                reply = await self._exchange(
                    conn,
                    Cmd.PING,
                    access_pb2.ReqPing(cmd=Cmd.PING, UID=self.uid),
                    within=min(self._request_timeout, self._ping_interval),
                )
            except RequestTimeout:
                conn.abort(ConnectionLost(f"{conn.endpoint} stopped answering pings"))
                continue
            except (ConnectionLost, RequestRefused):
                continue  # the loss handler reconnects; a refusal came as the generic error frame
            code = getattr(reply, "errCode", ErrCode.OK)
            if code != ErrCode.OK:
                # The server no longer knows this session: start over with a fresh login.
                conn.abort(
                    ConnectionLost(f"{conn.endpoint} refused a ping ({code}: {getattr(reply, 'errStr', '')})")
                )

    async def _sync_loop(self) -> None:
        retry = self._sync_retry
        while True:
            if self._cursor.behind:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(retry):
                        await self._sync_wanted.wait()
            else:
                await self._sync_wanted.wait()
            self._sync_wanted.clear()
            await self._online.wait()
            before = self._cursor.version
            try:
                await self._sync_all()
            except ClientClosed:
                return
            except (ConnectionLost, RequestTimeout):
                continue  # a reconnect asks for a sync again
            except (RequestRefused, ProtocolViolation) as exc:
                log.warning("sync failed: %s", exc)
                await asyncio.sleep(retry)
                self._sync_wanted.set()
            # Behind a notify but stuck (a version gap the server holds back): retry, backing off.
            retry = self._sync_retry if self._cursor.version > before else min(retry * 2, MAX_SYNC_RETRY)

    async def _sync_all(self) -> int:
        delivered = 0
        async with self._sync_lock:
            while True:
                conn = await self._current()
                request = access_pb2.ReqSyncMsg(
                    cmd=Cmd.SYNC_MSG,
                    UID=self.uid,
                    currentID=self._cursor.version,
                    limit=self._sync_limit,
                    receipts=self._receipts,
                )
                self.stats.sync_requests += 1
                reply = _expect(
                    await self._exchange(conn, Cmd.SYNC_MSG, request), access_pb2.ResSyncMsg, Cmd.SYNC_MSG
                )
                if reply.errCode != ErrCode.OK:
                    raise RequestRefused(reply.errCode, reply.errStr, cmd=Cmd.SYNC_MSG)
                before = self._cursor.version
                page = self._cursor.apply(reply.Msgs, reply.currentID, reply.more)
                for entry in page.new:
                    self._deliver(ChatMessage.from_sync(entry))
                delivered += len(page.new)
                if not page.more:
                    return delivered
                if self._cursor.version == before and not page.new:
                    raise ProtocolViolation(
                        "the server announced more messages but sent none after the cursor"
                    )

    def _deliver(self, message: ChatMessage) -> None:
        self.stats.messages += 1
        handler = self._on_message
        if handler is None:
            self._queue.put_nowait(message)
            return
        try:
            handler(message)
        except Exception:
            log.exception("on_message failed for message %s (version %d)", message.msg_id, message.version)


_KEYED = frozenset({Cmd.SEND_P2P_MSG, Cmd.SEND_GROUP_MSG})


def _expect(reply: Message, kind: type[_R], cmd: int) -> _R:
    if not isinstance(reply, kind):
        raise ProtocolViolation(f"expected {kind.__name__} for cmd {cmd}, got {type(reply).__name__}")
    return reply


def _check_request(request: Message) -> None:
    try:
        validate_request(request)
    except ProtocolError as exc:
        raise InvalidRequest(str(exc)) from None
