"""notify over gRPC: the servicer (`NotifyServicer`) and the notice sink msg-job uses (`RemoteNotices`).

notify owns nothing but the fan-out: it looks up the user's routes in Redis presence and calls
`SendNotify` on each access node holding a device (the domain's `PresenceService.notify` with a
`GrpcNotifier`). `delivered` in a reply counts the access nodes that took the notice. Fan-out is best
effort by design (the rows are already stored), so only a failure to read presence itself is an
error; an unreachable access node just counts as not delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fishchat.domain import validation
from fishchat.domain.errors import InvalidField
from fishchat.domain.presence import PresenceService
from fishchat.domain.records import Notice
from fishchat.proto.gen.rpc import notify_pb2, notify_pb2_grpc
from fishchat.rpc.client import RoleClient
from fishchat.rpc.server import RpcServer

SERVICE = "fishchat.rpc.NotifyServerRPC"
ROLE = "notify"
#: Notices per NotifyMany (a msg-job batch has at most one per user of the batch).
MAX_NOTICES = 10_000


def check_notice(request: notify_pb2.NFNotifyMsgReq) -> Notice:
    uid = validation.check_id(request.targetUID, "targetUID")
    if request.version <= 0:
        raise InvalidField(f"version must be positive, got {request.version}")
    return Notice(uid=uid, version=int(request.version))


class NotifyServicer(notify_pb2_grpc.NotifyServerRPCServicer):
    """NotifyServerRPC over a `PresenceService`; registers itself on `rpc`."""

    def __init__(self, rpc: RpcServer, presence: PresenceService) -> None:
        self._rpc = rpc
        self._presence = presence
        rpc.add(notify_pb2_grpc.add_NotifyServerRPCServicer_to_server, self, SERVICE)

    async def Notify(self, request: notify_pb2.NFNotifyMsgReq, context: Any) -> notify_pb2.NFNotifyMsgRes:
        async def work() -> notify_pb2.NFNotifyMsgRes:
            return notify_pb2.NFNotifyMsgRes(delivered=await self._presence.notify(check_notice(request)))

        return await self._rpc.answer("Notify", notify_pb2.NFNotifyMsgRes, work)

    async def NotifyMany(
        self, request: notify_pb2.NFNotifyManyReq, context: Any
    ) -> notify_pb2.NFNotifyManyRes:
        async def work() -> notify_pb2.NFNotifyManyRes:
            if len(request.notices) > MAX_NOTICES:
                raise InvalidField(f"at most {MAX_NOTICES} notices per request, got {len(request.notices)}")
            # All checked before any is sent, so a bad entry refuses the request as a whole.
            newest: dict[int, int] = {}
            for notice in map(check_notice, request.notices):
                newest[notice.uid] = max(notice.version, newest.get(notice.uid, 0))
            notices = [Notice(uid, version) for uid, version in newest.items()]
            return notify_pb2.NFNotifyManyRes(delivered=await self._presence.notify_many(notices))

        return await self._rpc.answer("NotifyMany", notify_pb2.NFNotifyManyRes, work)


class RemoteNotices:
    """What msg-job tells notify: a `NoticeSink` (one NotifyMany per delivered batch) over gRPC."""

    def __init__(self, client: RoleClient) -> None:
        self._client = client

    async def notify(self, notice: Notice) -> int:
        response = await self._client.call(
            "Notify", notify_pb2.NFNotifyMsgReq(targetUID=notice.uid, version=notice.version)
        )
        return int(response.delivered)

    async def notify_many(self, notices: Sequence[Notice]) -> int:
        """Several users in one call; returns the access nodes reached in total."""
        if not notices:
            return 0
        response = await self._client.call(
            "NotifyMany",
            notify_pb2.NFNotifyManyReq(
                notices=[notify_pb2.NFNotifyMsgReq(targetUID=n.uid, version=n.version) for n in notices]
            ),
        )
        return int(response.delivered)
