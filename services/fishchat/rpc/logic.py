"""logic over gRPC: the servicer access calls for everything a client asks, and access's client of it.

logic is where sends are accepted (design §3): `LogicCore` implements the access server's
`AccessCore` with the domain's `MessagingService` (the same code as the embedded profile) over
logic's own ports (Redis idempotency keys, the Kafka message log) and small clients of the roles that
own the rest: register (token check and presence routes, users and groups for the send checks), idgen
(versions, snowflake ids) and manager (sync, newest stored version). `LogicServicer` answers
LogicRPC from any `AccessCore`; `RemoteAccessCore` is the `AccessCore` an access server uses to call
it, so the access role runs the same `AccessServer` as the embedded profile.

Batching and ordering: an access server's sends go to logic in batches on a stream per logic
instance (`SendStream`; the access side is `fishchat.rpc.send_stream.SendStreams`). Each send of a
connection carries a ticket of the connection's `SendSequence` and is queued in the connection's
order; a batch keeps that order, and batches go out one after another without waiting for answers.
logic takes tickets of one `SendSequence` per sender for the whole stream, as batches arrive, so the
domain's acceptor takes each sender's sends in stream order too (and accepts them in batches of its
own: one claim, one version allocation and one Kafka append per batch). So a connection's sends reach
the log, and get their versions, in arrival order; sends of different connections share every round
trip. `SendMany` is the same for one batch per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

from fishchat.domain import validation
from fishchat.domain.errors import InvalidField, error_for
from fishchat.domain.messaging import MessagingService
from fishchat.domain.ordering import UNORDERED, SendSequence, SendTicket
from fishchat.domain.ratelimit import RateLimits
from fishchat.domain.records import (
    AccessNode,
    MsgType,
    SendResult,
    Session,
    SyncPage,
)
from fishchat.domain.service import limited_send
from fishchat.domain.settings import ChatSettings
from fishchat.errcodes import ErrCode
from fishchat.proto.gen.rpc import logic_pb2, logic_pb2_grpc
from fishchat.rpc.client import BatchedCalls, RoleClient
from fishchat.rpc.manager import RemoteSync, to_timeline
from fishchat.rpc.register import (
    MAX_ADDRESS_CHARS,
    MAX_PINGS,
    MAX_TOKEN_CHARS,
    PINGS_IN_FLIGHT,
    RemoteLogin,
    check_node,
    check_text,
    ping_each,
)
from fishchat.rpc.send_stream import SendStreams
from fishchat.rpc.server import RpcServer, refusal
from fishchat.server.ports import AccessCore

SERVICE = "fishchat.rpc.LogicRPC"
ROLE = "logic"
#: Sends per SendMany.
MAX_SENDS = 1024

log = logging.getLogger(__name__)


# --- logic's side -----------------------------------------------------------------------------------


class Sessions(Protocol):
    """register's session calls as logic uses them (`fishchat.rpc.register.RemoteSessions`)."""

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> RemoteLogin: ...

    async def ping(self, uid: int, device: str, node: AccessNode) -> None: ...

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None: ...


class Timelines(Protocol):
    """manager's reads as logic uses them (`fishchat.rpc.manager.RemoteSync`)."""

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage: ...

    async def latest_version(self, uid: int) -> int: ...


class LogicCore:
    """`AccessCore` on the logic side: sessions through register, sends through the domain's
    `MessagingService`, sync through manager."""

    def __init__(
        self,
        sessions: Sessions,
        timelines: Timelines,
        messaging: MessagingService,
        limits: RateLimits,
    ) -> None:
        self._sessions = sessions
        self._timelines = timelines
        self._messaging = messaging
        self.limits = limits

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Session:
        """register checks the token and records the route; the client then syncs to `latest_version`.

        A connection of the same device on another access node is stale from now on: its next ping is
        answered NOT_LOGGED_IN and it is ended with ResReconnect "replaced" (as embedded).
        """
        await self.limits.login(validation.check_id(uid, "UID"))
        login = await self._sessions.login(uid, token, device, node)
        return Session(
            uid=uid,
            device=device,
            node_id=node.node_id,
            latest_version=await self._timelines.latest_version(uid),
            token_expires_at_ms=login.expires_at_ms,
        )

    async def ping(self, uid: int, device: str, node: AccessNode) -> None:
        await self._sessions.ping(uid, device, node)

    async def disconnect(self, uid: int, device: str, node_id: str) -> None:
        await self._sessions.logout(uid, device, node_id)

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None:
        await self._sessions.logout(uid, device, node_id, token)

    async def send_p2p(
        self, source_uid: int, target_uid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        await limited_send(self.limits, source_uid, ticket)
        return await self._messaging.send_p2p(source_uid, target_uid, msg_id, body, ticket=ticket)

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        await limited_send(self.limits, source_uid, ticket)
        return await self._messaging.send_group(source_uid, gid, msg_id, body, ticket=ticket)

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        uid = validation.check_id(uid, "UID")
        cursor = validation.check_cursor(cursor)
        return await self._timelines.sync(uid, cursor, max_count=max_count, byte_budget=byte_budget)

    async def mark(
        self,
        uid: int,
        kind: MsgType,
        peer_uid: int,
        gid: int,
        version: int,
        *,
        ticket: SendTicket = UNORDERED,
    ) -> SendResult:
        await limited_send(self.limits, uid, ticket)
        return await self._messaging.mark(uid, kind, peer_uid, gid, version, self._timelines, ticket=ticket)


class LogicServicer(logic_pb2_grpc.LogicRPCServicer):
    """LogicRPC over an `AccessCore`; registers itself on `rpc`. Every field is checked here or by the
    domain before any work; `settings` are the chat limits (device, msgID) the core enforces too."""

    def __init__(self, rpc: RpcServer, core: AccessCore, settings: ChatSettings | None = None) -> None:
        self._rpc = rpc
        self._core = core
        self._settings = settings or ChatSettings()
        rpc.add(logic_pb2_grpc.add_LogicRPCServicer_to_server, self, SERVICE)

    def _device(self, device: str, *, required: bool = True) -> str:
        if not device and not required:
            return device
        return validation.check_device(device, self._settings.device_max_chars)

    @staticmethod
    def _msg_type(value: str, expected: MsgType) -> None:
        if value not in ("", expected.value):
            raise InvalidField(f"msgType must be {expected.value!r}")

    async def Login(self, request: logic_pb2.LoginReq, context: Any) -> logic_pb2.LoginRes:
        async def work() -> logic_pb2.LoginRes:
            node = check_node(request.nodeID, request.accessAddr)
            token = check_text(request.token, "token", MAX_TOKEN_CHARS, required=False)
            session = await self._core.login(request.UID, token, request.device, node)
            return logic_pb2.LoginRes(
                latestVersion=session.latest_version, tokenExpiresAt=session.token_expires_at_ms
            )

        return await self._rpc.answer("Login", logic_pb2.LoginRes, work)

    async def Ping(self, request: logic_pb2.PingReq, context: Any) -> logic_pb2.PingRes:
        async def work() -> logic_pb2.PingRes:
            node = check_node(request.nodeID, request.accessAddr)
            await self._core.ping(request.UID, request.device, node)
            return logic_pb2.PingRes()

        return await self._rpc.answer("Ping", logic_pb2.PingRes, work)

    async def PingMany(self, request: logic_pb2.PingManyReq, context: Any) -> logic_pb2.PingManyRes:
        async def work() -> logic_pb2.PingManyRes:
            # All at once: the core's pings to register asked in one turn go as one PingMany there.
            answers = await ping_each(request.pings, self._core.ping, MAX_PINGS)
            return logic_pb2.PingManyRes(
                results=[logic_pb2.PingRes(errCode=code, errStr=text) for code, text in answers]
            )

        return await self._rpc.answer("PingMany", logic_pb2.PingManyRes, work)

    async def Logout(self, request: logic_pb2.LogoutReq, context: Any) -> logic_pb2.LogoutRes:
        async def work() -> logic_pb2.LogoutRes:
            uid = validation.check_id(request.UID, "UID")
            device = self._device(request.device)
            node_id = check_text(request.nodeID, "nodeID", MAX_ADDRESS_CHARS)
            token = check_text(request.token, "token", MAX_TOKEN_CHARS, required=False)
            if request.revokeToken:
                await self._core.logout(uid, device, node_id, token or None)
            else:
                await self._core.disconnect(uid, device, node_id)
            return logic_pb2.LogoutRes()

        return await self._rpc.answer("Logout", logic_pb2.LogoutRes, work)

    async def SendP2PMsg(self, request: logic_pb2.SendP2PMsgReq, context: Any) -> logic_pb2.SendP2PMsgRes:
        async def work() -> logic_pb2.SendP2PMsgRes:
            self._msg_type(request.msgType, MsgType.P2P)
            self._device(request.device, required=False)
            result = await self._core.send_p2p(
                request.sourceUID, request.targetUID, request.msgID, request.msg
            )
            return logic_pb2.SendP2PMsgRes(
                version=result.version,
                serverMsgID=result.server_msg_id,
                timestamp=result.timestamp_ms,
                duplicate=result.duplicate,
            )

        return await self._rpc.answer("SendP2PMsg", logic_pb2.SendP2PMsgRes, work)

    async def SendGroupMsg(
        self, request: logic_pb2.SendGroupMsgReq, context: Any
    ) -> logic_pb2.SendGroupMsgRes:
        async def work() -> logic_pb2.SendGroupMsgRes:
            self._msg_type(request.msgType, MsgType.GROUP)
            self._device(request.device, required=False)
            result = await self._core.send_group(
                request.sourceUID, request.groupID, request.msgID, request.msg
            )
            return logic_pb2.SendGroupMsgRes(
                version=result.version,
                serverMsgID=result.server_msg_id,
                timestamp=result.timestamp_ms,
                duplicate=result.duplicate,
            )

        return await self._rpc.answer("SendGroupMsg", logic_pb2.SendGroupMsgRes, work)

    async def SendMany(self, request: logic_pb2.SendManyReq, context: Any) -> logic_pb2.SendManyRes:
        started = self._begin(request, {})
        return await self._rpc.answer("SendMany", logic_pb2.SendManyRes, lambda: _finish(request, started))

    async def SendStream(
        self, requests: AsyncIterator[logic_pb2.SendManyReq], context: Any
    ) -> AsyncIterator[logic_pb2.SendManyRes]:
        """The batches of one access server, each answered when its sends are. Tickets are taken as a
        batch arrives, from one `SendSequence` per sender for the whole stream, so each sender's sends
        are accepted in stream order while the batches overlap."""
        sequences: dict[int, SendSequence] = {}
        answers: asyncio.Queue[logic_pb2.SendManyRes | None] = asyncio.Queue()

        async def answer(
            request: logic_pb2.SendManyReq, started: list[Awaitable[SendResult] | Exception] | Exception
        ) -> None:
            response = await self._rpc.answer(
                "SendStream", logic_pb2.SendManyRes, lambda: _finish(request, started)
            )
            for source in [source for source, sequence in sequences.items() if sequence.idle]:
                del sequences[source]
            response.batch = request.batch
            answers.put_nowait(response)

        async def read() -> None:
            batches: set[asyncio.Task[None]] = set()
            try:
                async for request in requests:
                    task = asyncio.create_task(answer(request, self._begin(request, sequences)))
                    batches.add(task)
                    task.add_done_callback(batches.discard)
            finally:
                # The caller stopped sending (or went away): what it sent is still answered.
                if batches:
                    await asyncio.wait(batches)
                answers.put_nowait(None)

        reader = asyncio.create_task(read(), name="fishchat-send-stream")
        try:
            while (response := await answers.get()) is not None:
                yield response
        finally:
            reader.cancel()

    def _begin(
        self, request: logic_pb2.SendManyReq, sequences: dict[int, SendSequence]
    ) -> list[Awaitable[SendResult] | Exception] | Exception:
        """Every send of a batch with its ticket taken now, in request order; or why the batch is refused."""
        if len(request.sends) > MAX_SENDS:
            return InvalidField(f"at most {MAX_SENDS} sends per request, got {len(request.sends)}")
        return [self._start(item, sequences) for item in request.sends]

    def _start(
        self, item: logic_pb2.SendItem, sequences: dict[int, SendSequence]
    ) -> Awaitable[SendResult] | Exception:
        """One send of a SendMany with its ticket taken now, or why the item is refused (alone)."""
        try:
            kind = item.WhichOneof("send")
            if kind == "p2p":
                p2p = item.p2p
                self._msg_type(p2p.msgType, MsgType.P2P)
                self._device(p2p.device, required=False)
                ticket = sequences.setdefault(p2p.sourceUID, SendSequence()).ticket()
                sending = self._core.send_p2p(p2p.sourceUID, p2p.targetUID, p2p.msgID, p2p.msg, ticket=ticket)
            elif kind == "group":
                group = item.group
                self._msg_type(group.msgType, MsgType.GROUP)
                self._device(group.device, required=False)
                ticket = sequences.setdefault(group.sourceUID, SendSequence()).ticket()
                sending = self._core.send_group(
                    group.sourceUID, group.groupID, group.msgID, group.msg, ticket=ticket
                )
            elif kind == "mark":
                mark = item.mark
                receipt = _receipt_kind(mark.kind)
                ticket = sequences.setdefault(mark.UID, SendSequence()).ticket()
                sending = self._core.mark(
                    mark.UID, receipt, mark.peerUID, mark.groupID, mark.version, ticket=ticket
                )
            else:
                raise InvalidField("a send must be p2p, group or mark")
        except Exception as exc:
            return exc
        return sending

    async def SyncMsg(self, request: logic_pb2.SyncMsgReq, context: Any) -> logic_pb2.SyncMsgRes:
        async def work() -> logic_pb2.SyncMsgRes:
            page = await self._core.sync(
                request.UID,
                request.currentID,
                max_count=request.limit or None,
                byte_budget=request.maxBytes or None,
            )
            return logic_pb2.SyncMsgRes(
                currentID=page.cursor, Msgs=[to_timeline(m) for m in page.messages], more=page.more
            )

        return await self._rpc.answer("SyncMsg", logic_pb2.SyncMsgRes, work)

    async def AcceptP2PMsgAck(
        self, request: logic_pb2.AcceptP2PMsgAckReq, context: Any
    ) -> logic_pb2.AcceptP2PMsgAckRes:
        async def work() -> logic_pb2.AcceptP2PMsgAckRes:
            # A receipt records nothing: the sync cursor is the acknowledgement (docs/chat.md).
            validation.check_id(request.sourceUID, "sourceUID")
            validation.check_id(request.targetUID, "targetUID")
            validation.check_msg_id(request.msgID, self._settings.msg_id_max_bytes)
            return logic_pb2.AcceptP2PMsgAckRes()

        return await self._rpc.answer("AcceptP2PMsgAck", logic_pb2.AcceptP2PMsgAckRes, work)

    async def Mark(self, request: logic_pb2.MarkReq, context: Any) -> logic_pb2.MarkRes:
        async def work() -> logic_pb2.MarkRes:
            result = await self._core.mark(
                request.UID, _receipt_kind(request.kind), request.peerUID, request.groupID, request.version
            )
            return logic_pb2.MarkRes(
                version=result.version,
                serverMsgID=result.server_msg_id,
                timestamp=result.timestamp_ms,
                duplicate=result.duplicate,
            )

        return await self._rpc.answer("Mark", logic_pb2.MarkRes, work)


async def _finish(
    request: logic_pb2.SendManyReq, started: list[Awaitable[SendResult] | Exception] | Exception
) -> logic_pb2.SendManyRes:
    if isinstance(started, Exception):
        raise started
    return logic_pb2.SendManyRes(results=await asyncio.gather(*map(_outcome, started)))


def _receipt_kind(kind: str) -> MsgType:
    try:
        return MsgType(kind)
    except ValueError:
        raise InvalidField(f"kind must be delivered or read, not {kind!r}") from None


async def _outcome(sending: Awaitable[SendResult] | Exception) -> logic_pb2.SendOutcome:
    if isinstance(sending, Exception):
        return _refusal(sending)
    try:
        result = await sending
    except Exception as exc:
        return _refusal(exc)
    return logic_pb2.SendOutcome(
        version=result.version,
        serverMsgID=result.server_msg_id,
        timestamp=result.timestamp_ms,
        duplicate=result.duplicate,
    )


def _refusal(exc: Exception) -> logic_pb2.SendOutcome:
    code, text = refusal(exc)
    if code == ErrCode.SERVER_ERR:
        log.error("a send of a batch failed", exc_info=exc)
    return logic_pb2.SendOutcome(errCode=int(code), errStr=text)


# --- access's side ----------------------------------------------------------------------------------


class RemoteAccessCore:
    """The `AccessCore` of an access server: LogicRPC calls (round robin over logic; sends in
    batches, see the module doc), except sync: a sync is a plain read with no rule of logic's beyond
    field checks (done here too), so access asks manager directly and saves a hop on the most
    frequent call."""

    def __init__(self, client: RoleClient, timelines: RemoteSync) -> None:
        self._client = client
        self._timelines = timelines
        self._sends = SendStreams(client, timeout_s=client.timeout_s, max_batch=MAX_SENDS)
        # Pings (every connection's, each ping interval) go as PingMany.
        self._pings: BatchedCalls[logic_pb2.PingReq, logic_pb2.PingRes] = BatchedCalls(
            client,
            "PingMany",
            lambda pings: logic_pb2.PingManyReq(pings=pings),
            lambda response: response.results,
            max_items=MAX_PINGS,
            max_in_flight=PINGS_IN_FLIGHT,
        )

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Session:
        # What this node knew stored for uid may miss what came while no notice reached it: the
        # first sync after the login scans (notices from now on are noted again).
        self._timelines.forget(uid)
        response = await self._client.call(
            "Login",
            logic_pb2.LoginReq(
                UID=uid, token=token, device=device, accessAddr=node.address, nodeID=node.node_id
            ),
        )
        return Session(
            uid=uid,
            device=device,
            node_id=node.node_id,
            latest_version=int(response.latestVersion),
            token_expires_at_ms=int(response.tokenExpiresAt),
        )

    async def ping(self, uid: int, device: str, node: AccessNode) -> None:
        await self._pings.ask(
            logic_pb2.PingReq(UID=uid, device=device, accessAddr=node.address, nodeID=node.node_id)
        )

    async def disconnect(self, uid: int, device: str, node_id: str) -> None:
        await self._client.call("Logout", logic_pb2.LogoutReq(UID=uid, device=device, nodeID=node_id))

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None:
        await self._client.call(
            "Logout",
            logic_pb2.LogoutReq(UID=uid, device=device, nodeID=node_id, revokeToken=True, token=token or ""),
        )

    async def send_p2p(
        self, source_uid: int, target_uid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        p2p = logic_pb2.SendP2PMsgReq(
            sourceUID=source_uid, targetUID=target_uid, msgID=msg_id, msgType=MsgType.P2P.value, msg=body
        )
        return await self._send(source_uid, msg_id, logic_pb2.SendItem(p2p=p2p), ticket)

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        group = logic_pb2.SendGroupMsgReq(
            sourceUID=source_uid, groupID=gid, msgID=msg_id, msgType=MsgType.GROUP.value, msg=body
        )
        return await self._send(source_uid, msg_id, logic_pb2.SendItem(group=group), ticket)

    async def _send(
        self, source_uid: int, msg_id: str, item: logic_pb2.SendItem, ticket: SendTicket
    ) -> SendResult:
        """Queued with the other connections' sends, in the connection's order (see the module doc)."""
        outcome = await ticket.place(lambda: self._sends.submit(source_uid, item))
        if outcome.errCode:
            raise error_for(outcome.errCode, outcome.errStr)
        return _send_result(msg_id, outcome)

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        uid = validation.check_id(uid, "UID")
        cursor = validation.check_cursor(cursor)
        return await self._timelines.sync(uid, cursor, max_count=max_count, byte_budget=byte_budget)

    async def mark(
        self,
        uid: int,
        kind: MsgType,
        peer_uid: int,
        gid: int,
        version: int,
        *,
        ticket: SendTicket = UNORDERED,
    ) -> SendResult:
        mark = logic_pb2.MarkReq(UID=uid, kind=kind.value, peerUID=peer_uid, groupID=gid, version=version)
        return await self._send(uid, f"{kind}:{version}", logic_pb2.SendItem(mark=mark), ticket)


def _send_result(msg_id: str, response: Any) -> SendResult:
    """The ack of a send; a send without msgID got its server id as msg id (as `MessagingService` does)."""
    server_msg_id = int(response.serverMsgID)
    return SendResult(
        version=int(response.version),
        msg_id=msg_id or str(server_msg_id),
        timestamp_ms=int(response.timestamp),
        duplicate=bool(response.duplicate),
        server_msg_id=server_msg_id,
    )
