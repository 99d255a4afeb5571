"""manager over gRPC: the servicer (`ManagerServicer`) and the sync port other roles use of it.

manager reads users' timelines from HBase through the domain's `SyncService`, which owns the paging
rules (exclusive cursor, count and encoded-size limits, stopping before a fresh gap). The request's
`limit` and `maxBytes` can only tighten the configured limits; 0 means "the configured one".
Entries cross the wire as `TimelineMsg` with every field of the stored row (group id and the
server's snowflake included), so what a client syncs through logic/access is what HBase holds.

`SetExceptionMsg` (the original's dead-letter rows) is refused: FishChat does not drop a message it
cannot deliver, it keeps it in the recipient's timeline for the next sync, so there is nothing to
park.

Client side (`RemoteSync`), used by access for its clients' syncs (in batches, `SyncMany`) and by
logic for logins and `SyncMsg`.
"""

from __future__ import annotations

import logging
from typing import Any

from fishchat.domain.errors import InvalidField, RequestError, ServerError, error_for
from fishchat.domain.messaging import parse_receipt_body
from fishchat.domain.records import MsgType, StoredMessage, SyncPage
from fishchat.domain.sync import MAX_SYNCS, BatchedSync, SyncRequest, SyncService
from fishchat.errcodes import ErrCode
from fishchat.proto.gen.rpc import common_pb2, manager_pb2, manager_pb2_grpc
from fishchat.rpc.client import RoleClient
from fishchat.rpc.server import RpcServer, refusal

SERVICE = "fishchat.rpc.ManagerServerRPC"
ROLE = "manager"

log = logging.getLogger(__name__)


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


def _from_page(page: manager_pb2.MGSyncMsgRes, uid: int) -> SyncPage | Exception:
    """One answer of a SyncMany: the page, or what refused (or spoils) that sync alone."""
    if page.errCode:
        return error_for(page.errCode, page.errStr)
    try:
        messages = tuple(from_timeline(entry, uid) for entry in page.Msgs)
    except ServerError as exc:
        return exc
    return SyncPage(messages=messages, cursor=int(page.currentID), more=bool(page.more))


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

    async def SyncMany(self, request: manager_pb2.MGSyncManyReq, context: Any) -> manager_pb2.MGSyncManyRes:
        async def work() -> manager_pb2.MGSyncManyRes:
            if len(request.syncs) > MAX_SYNCS:
                raise InvalidField(f"at most {MAX_SYNCS} syncs per request, got {len(request.syncs)}")
            pages = await self._syncing.sync_many(
                [
                    SyncRequest(
                        sync.UID,
                        sync.currentID,
                        sync.limit or None,
                        sync.maxBytes or None,
                        max(0, sync.known),
                    )
                    for sync in request.syncs
                ]
            )
            return manager_pb2.MGSyncManyRes(pages=[_page(page) for page in pages])

        return await self._rpc.answer("SyncMany", manager_pb2.MGSyncManyRes, work)

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


def _page(page: SyncPage | Exception) -> manager_pb2.MGSyncMsgRes:
    if isinstance(page, Exception):
        code, text = refusal(page)
        if code == ErrCode.SERVER_ERR:
            log.error("a sync of a SyncMany failed", exc_info=page)
        return manager_pb2.MGSyncMsgRes(errCode=int(code), errStr=text)
    return manager_pb2.MGSyncMsgRes(
        currentID=page.cursor, Msgs=[to_timeline(m) for m in page.messages], more=page.more
    )


class RemoteSync(BatchedSync):
    """Sync as the other roles ask manager for it, with the signature of `SyncService`: batched
    (`BatchedSync`, one SyncMany per batch) and read by key up to what this process's notices said
    is stored (an access server notes every notice it takes)."""

    def __init__(self, client: RoleClient) -> None:
        super().__init__(self._sync_many_call)
        self._client = client

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        # Only positive limits go on the wire (0 there means "the configured one"); a non-positive one
        # is the caller's bug, refused as SyncService would refuse it.
        if (max_count is not None and max_count <= 0) or (byte_budget is not None and byte_budget <= 0):
            raise ValueError("max_count and byte_budget must be positive")
        return await super().sync(uid, cursor, max_count=max_count, byte_budget=byte_budget)

    async def _sync_many_call(self, requests: list[SyncRequest]) -> list[SyncPage | Exception]:
        response = await self._client.call(
            "SyncMany",
            manager_pb2.MGSyncManyReq(
                syncs=[
                    manager_pb2.MGSyncMsgReq(
                        UID=r.uid,
                        currentID=r.cursor,
                        limit=min(r.max_count or 0, 0xFFFFFFFF),
                        maxBytes=min(r.byte_budget or 0, 0xFFFFFFFF),
                        known=r.known,
                    )
                    for r in requests
                ]
            ),
        )
        return [_from_page(page, r.uid) for page, r in zip(response.pages, requests, strict=False)]

    async def latest_version(self, uid: int) -> int:
        response = await self._client.call("LatestVersion", manager_pb2.MGLatestVersionReq(UID=uid))
        return int(response.version)
