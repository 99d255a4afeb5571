"""manager over gRPC: the servicer (`ManagerServicer`) and the sync port other roles use of it.

manager reads users' timelines from HBase through the domain's `SyncService`, which owns the paging
rules (exclusive cursor, count and encoded-size limits, stopping before a fresh gap). The request's
`limit` and `maxBytes` can only tighten the configured limits; 0 means "the configured one".
Entries cross the wire as `TimelineMsg` with every field of the stored row (group id and the
server's snowflake included), so what a client syncs through logic/access is what HBase holds.

`SetExceptionMsg` (the original's dead-letter rows) is refused: FishChat does not drop a message it
cannot deliver, it keeps it in the recipient's timeline for the next sync, so there is nothing to
park.

Client side (`RemoteSync`), used by logic for the access servers' sync and login.
"""

from __future__ import annotations

from typing import Any

from fishchat.domain.errors import RequestError, ServerError
from fishchat.domain.messaging import parse_receipt_body
from fishchat.domain.records import MsgType, StoredMessage, SyncPage
from fishchat.domain.sync import SyncService
from fishchat.proto.gen.rpc import common_pb2, manager_pb2, manager_pb2_grpc
from fishchat.rpc.client import RoleClient
from fishchat.rpc.server import RpcServer

SERVICE = "fishchat.rpc.ManagerServerRPC"
ROLE = "manager"


def to_timeline(message: StoredMessage) -> common_pb2.TimelineMsg:
    mark_version, mark_server_msg_id = (
        parse_receipt_body(message.body) if message.msg_type.is_receipt else (0, 0)
    )
    return common_pb2.TimelineMsg(
        markVersion=mark_version,
        markServerMsgID=mark_server_msg_id,
        sourceUID=message.source_uid,
        targetUID=message.target_uid,
        groupID=message.group_id,
        msgType=str(message.msg_type),
        msgID=message.msg_id,
        msg=message.body,
        version=message.version,
        timestamp=message.timestamp_ms,
        serverMsgID=message.server_msg_id,
        ownerUID=message.uid,
    )


def from_timeline(entry: common_pb2.TimelineMsg, owner_uid: int) -> StoredMessage:
    """The stored row an entry stands for; `owner_uid` fills in entries of senders that left it out."""
    try:
        msg_type = MsgType(entry.msgType)
    except ValueError:
        raise ServerError(f"unknown msgType {entry.msgType!r} in a timeline entry") from None
    return StoredMessage(
        uid=int(entry.ownerUID) or owner_uid,
        version=int(entry.version),
        source_uid=int(entry.sourceUID),
        target_uid=int(entry.targetUID),
        group_id=int(entry.groupID),
        msg_type=msg_type,
        msg_id=entry.msgID,
        body=entry.msg,
        timestamp_ms=int(entry.timestamp),
        server_msg_id=int(entry.serverMsgID),
    )


class ManagerServicer(manager_pb2_grpc.ManagerServerRPCServicer):
    """ManagerServerRPC over a `SyncService`; registers itself on `rpc`."""

    def __init__(self, rpc: RpcServer, syncing: SyncService) -> None:
        self._rpc = rpc
        self._syncing = syncing
        rpc.add(manager_pb2_grpc.add_ManagerServerRPCServicer_to_server, self, SERVICE)

    async def Sync(self, request: manager_pb2.MGSyncMsgReq, context: Any) -> manager_pb2.MGSyncMsgRes:
        async def work() -> manager_pb2.MGSyncMsgRes:
            page = await self._syncing.sync(
                request.UID,
                request.currentID,
                max_count=request.limit or None,
                byte_budget=request.maxBytes or None,
            )
            return manager_pb2.MGSyncMsgRes(
                currentID=page.cursor, Msgs=[to_timeline(m) for m in page.messages], more=page.more
            )

        return await self._rpc.answer("Sync", manager_pb2.MGSyncMsgRes, work)

    async def LatestVersion(
        self, request: manager_pb2.MGLatestVersionReq, context: Any
    ) -> manager_pb2.MGLatestVersionRes:
        async def work() -> manager_pb2.MGLatestVersionRes:
            return manager_pb2.MGLatestVersionRes(version=await self._syncing.latest_version(request.UID))

        return await self._rpc.answer("LatestVersion", manager_pb2.MGLatestVersionRes, work)

    async def SetExceptionMsg(
        self, request: manager_pb2.MGExceptionMsgReq, context: Any
    ) -> manager_pb2.MGExceptionMsgRes:
        async def work() -> manager_pb2.MGExceptionMsgRes:
            raise RequestError("SetExceptionMsg is not served: undelivered messages stay in the timeline")

        return await self._rpc.answer("SetExceptionMsg", manager_pb2.MGExceptionMsgRes, work)


class RemoteSync:
    """Sync as logic asks manager for it: the same signature as `SyncService`."""

    def __init__(self, client: RoleClient) -> None:
        self._client = client

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        # Only positive limits go on the wire (0 there means "the configured one"); a non-positive one
        # is the caller's bug, refused as SyncService would refuse it.
        if (max_count is not None and max_count <= 0) or (byte_budget is not None and byte_budget <= 0):
            raise ValueError("max_count and byte_budget must be positive")
        response = await self._client.call(
            "Sync",
            manager_pb2.MGSyncMsgReq(
                UID=uid,
                currentID=cursor,
                limit=min(max_count or 0, 0xFFFFFFFF),
                maxBytes=min(byte_budget or 0, 0xFFFFFFFF),
            ),
        )
        return SyncPage(
            messages=tuple(from_timeline(entry, uid) for entry in response.Msgs),
            cursor=int(response.currentID),
            more=bool(response.more),
        )

    async def latest_version(self, uid: int) -> int:
        response = await self._client.call("LatestVersion", manager_pb2.MGLatestVersionReq(UID=uid))
        return int(response.version)
