"""logic over gRPC: the servicer access calls for everything a client asks, and access's client of it.

logic is where sends are accepted (design §3): `LogicCore` implements the access server's
`AccessCore` with the domain's `MessagingService` (the same code as the embedded profile) over
logic's own ports (Redis idempotency keys, the Kafka message log) and small clients of the roles that
own the rest: register (token check and presence routes, users and groups for the send checks), idgen
(versions, snowflake ids) and manager (sync, newest stored version). `LogicServicer` answers
LogicRPC from any `AccessCore`; `RemoteAccessCore` is the `AccessCore` an access server uses to call
it, so the access role runs the same `AccessServer` as the embedded profile.

Ordering: the access server gives each send of a connection a ticket of the connection's
`SendSequence`. `RemoteAccessCore` waits for the ticket's turn before the RPC and releases it when the
RPC is answered (or fails), so a connection's sends reach logic, and their versions are allocated,
in arrival order; sends of different connections still run concurrently.
"""

from __future__ import annotations

from typing import Any, Protocol

from fishchat.domain import validation
from fishchat.domain.errors import InvalidField
from fishchat.domain.messaging import MessagingService
from fishchat.domain.ordering import UNORDERED, SendTicket
from fishchat.domain.records import (
    AccessNode,
    MsgType,
    SendResult,
    Session,
    SyncPage,
)
from fishchat.domain.settings import ChatSettings
from fishchat.proto.gen.rpc import logic_pb2, logic_pb2_grpc
from fishchat.rpc.client import RoleClient
from fishchat.rpc.manager import to_timeline
from fishchat.rpc.register import MAX_ADDRESS_CHARS, MAX_TOKEN_CHARS, RemoteLogin, check_node, check_text
from fishchat.rpc.server import RpcServer
from fishchat.server.ports import AccessCore

SERVICE = "fishchat.rpc.LogicRPC"
ROLE = "logic"


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
    ) -> None:
        self._sessions = sessions
        self._timelines = timelines
        self._messaging = messaging

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Session:
        """register checks the token and records the route; the client then syncs to `latest_version`.

        A connection of the same device on another access node is stale from now on: its next ping is
        answered NOT_LOGGED_IN and it is ended with ResReconnect "replaced" (as embedded).
        """
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
        return await self._messaging.send_p2p(source_uid, target_uid, msg_id, body, ticket=ticket)

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
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
            try:
                kind = MsgType(request.kind)
            except ValueError:
                raise InvalidField(f"kind must be delivered or read, not {request.kind!r}") from None
            result = await self._core.mark(
                request.UID, kind, request.peerUID, request.groupID, request.version
            )
            return logic_pb2.MarkRes(
                version=result.version,
                serverMsgID=result.server_msg_id,
                timestamp=result.timestamp_ms,
                duplicate=result.duplicate,
            )

        return await self._rpc.answer("Mark", logic_pb2.MarkRes, work)


# --- access's side ----------------------------------------------------------------------------------


class RemoteAccessCore:
    """The `AccessCore` of an access server: LogicRPC calls (round robin over logic), except sync: a
    sync is a plain read with no rule of logic's beyond field checks (done here too), so access asks
    manager directly and saves a hop on the most frequent call."""

    def __init__(self, client: RoleClient, timelines: Timelines) -> None:
        self._client = client
        self._timelines = timelines

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Session:
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
        await self._client.call(
            "Ping", logic_pb2.PingReq(UID=uid, device=device, accessAddr=node.address, nodeID=node.node_id)
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
        request = logic_pb2.SendP2PMsgReq(
            sourceUID=source_uid, targetUID=target_uid, msgID=msg_id, msgType=MsgType.P2P.value, msg=body
        )
        response = await self._in_turn("SendP2PMsg", request, ticket)
        return _send_result(msg_id, response)

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        request = logic_pb2.SendGroupMsgReq(
            sourceUID=source_uid, groupID=gid, msgID=msg_id, msgType=MsgType.GROUP.value, msg=body
        )
        response = await self._in_turn("SendGroupMsg", request, ticket)
        return _send_result(msg_id, response)

    async def _in_turn(self, method: str, request: Any, ticket: SendTicket) -> Any:
        """The call, made once every earlier send of the connection is answered; the next may then go."""
        try:
            await ticket.turn()
            return await self._client.call(method, request)
        finally:
            ticket.release()

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
        request = logic_pb2.MarkReq(UID=uid, kind=kind.value, peerUID=peer_uid, groupID=gid, version=version)
        response = await self._in_turn("Mark", request, ticket)
        return _send_result(f"{kind}:{version}", response)


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
