"""notify -> access over gRPC: the access server's push endpoint and the notifier that calls it.

`GrpcNoticeSource` is the production `NoticeSource` of an access server: it serves
`AccessServerRPC.SendNotify` on the process's `RpcServer` and hands each notice to the handler the
access server attached (one per node, normally exactly one per process). `GrpcNotifier` is the
domain's `Notifier` as notify runs it: `SendNotify` at the node's internal address, through a
`RoleClient` of role access.

A notice is only a hint ("sync, there is something up to version v"), so the request's optional
`device`/`sessionID` narrowing is widened to every session of the user on the node: an extra notice
costs the client one empty sync, a missed one would delay messages until its timer sync.
`Kick`, `Reconnect` and `SendP2PMsgFromJob` need session control this endpoint does not have; they
are answered with REQUEST_ERR saying so instead of pretending to have acted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fishchat.domain import validation
from fishchat.domain.errors import InvalidField, RequestError, Unavailable
from fishchat.domain.records import ALL_TOKENS, AccessNode, Notice
from fishchat.proto.gen.rpc import access_pb2, access_pb2_grpc
from fishchat.rpc.client import RoleClient
from fishchat.rpc.server import RpcServer
from fishchat.server.ports import NoticeHandler

log = logging.getLogger(__name__)

SERVICE = "fishchat.rpc.AccessServerRPC"
ROLE = "access"
#: Notices per SendNotifyMany (one per user of a msg-job batch on that node).
MAX_NOTICES = 10_000
_TOKEN_HASH = re.compile(r"[0-9a-f]{64}")


def _notice(request: access_pb2.ASSendNotifyReq) -> Notice:
    uid = validation.check_id(request.UID, "UID")
    if request.version < 0:
        raise InvalidField(f"version must not be negative, got {request.version}")
    revoked = request.revokedToken
    if revoked and revoked != ALL_TOKENS and not _TOKEN_HASH.fullmatch(revoked):
        raise InvalidField("revokedToken must be a SHA-256 hex digest or *")
    return Notice(uid=uid, version=int(request.version), revoked=revoked)


def _refuse(method: str) -> RequestError:
    return RequestError(f"{method} is not served by this access server")


class GrpcNoticeSource(access_pb2_grpc.AccessServerRPCServicer):
    """`NoticeSource` fed by `SendNotify` calls; registers itself on `rpc` as AccessServerRPC."""

    def __init__(self, rpc: RpcServer) -> None:
        self._rpc = rpc
        self._handlers: dict[str, NoticeHandler] = {}
        rpc.add(access_pb2_grpc.add_AccessServerRPCServicer_to_server, self, SERVICE)

    def attach(self, node_id: str, handler: NoticeHandler) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        self._handlers[node_id] = handler

    def detach(self, node_id: str) -> None:
        self._handlers.pop(node_id, None)

    async def deliver(self, notice: Notice) -> int:
        """Hand `notice` to every attached handler; returns how many took it."""
        delivered = 0
        for handler in list(self._handlers.values()):
            await handler(notice)
            delivered += 1
        return delivered

    async def SendNotify(
        self, request: access_pb2.ASSendNotifyReq, context: Any
    ) -> access_pb2.ASSendNotifyRes:
        async def work() -> access_pb2.ASSendNotifyRes:
            return access_pb2.ASSendNotifyRes(delivered=await self.deliver(_notice(request)))

        return await self._rpc.answer("SendNotify", access_pb2.ASSendNotifyRes, work)

    async def SendNotifyMany(
        self, request: access_pb2.ASSendNotifyManyReq, context: Any
    ) -> access_pb2.ASSendNotifyRes:
        async def work() -> access_pb2.ASSendNotifyRes:
            if len(request.notices) > MAX_NOTICES:
                raise InvalidField(f"at most {MAX_NOTICES} notices per request, got {len(request.notices)}")
            # All checked before any is delivered, so a bad entry refuses the request as a whole.
            delivered = 0
            for notice in [_notice(entry) for entry in request.notices]:
                delivered += await self.deliver(notice)
            return access_pb2.ASSendNotifyRes(delivered=delivered)

        return await self._rpc.answer("SendNotifyMany", access_pb2.ASSendNotifyRes, work)

    async def Kick(self, request: access_pb2.ASKickReq, context: Any) -> access_pb2.ASKickRes:
        async def work() -> access_pb2.ASKickRes:
            raise _refuse("Kick")

        return await self._rpc.answer("Kick", access_pb2.ASKickRes, work)

    async def Reconnect(self, request: access_pb2.ASReconnectReq, context: Any) -> access_pb2.ASReconnectRes:
        async def work() -> access_pb2.ASReconnectRes:
            raise _refuse("Reconnect")

        return await self._rpc.answer("Reconnect", access_pb2.ASReconnectRes, work)

    async def SendP2PMsgFromJob(
        self, request: access_pb2.ASSendP2PMsgFromJobReq, context: Any
    ) -> access_pb2.ASSendP2PMsgFromJobRes:
        async def work() -> access_pb2.ASSendP2PMsgFromJobRes:
            raise _refuse("SendP2PMsgFromJob")

        return await self._rpc.answer("SendP2PMsgFromJob", access_pb2.ASSendP2PMsgFromJobRes, work)


class GrpcNotifier:
    """The domain's `Notifier` over gRPC: `SendNotify` (`SendNotifyMany`) at the node's address.

    An unreachable node (gone, draining, deadline missed) is reported as False, as the port asks; a
    refusal by the node (a bad notice) is raised as its `ChatError` for the caller to log.
    """

    def __init__(self, client: RoleClient) -> None:
        self._client = client

    async def notify(self, node: AccessNode, notice: Notice) -> bool:
        try:
            response = await self._client.call(
                "SendNotify",
                access_pb2.ASSendNotifyReq(
                    UID=notice.uid, version=notice.version, revokedToken=notice.revoked
                ),
                address=node.address,
            )
        except Unavailable as exc:
            log.debug("access node %s at %s did not take a notice: %s", node.node_id, node.address, exc)
            return False
        return int(response.delivered) > 0

    async def notify_many(self, node: AccessNode, notices: Sequence[Notice]) -> bool:
        try:
            response = await self._client.call(
                "SendNotifyMany",
                access_pb2.ASSendNotifyManyReq(
                    notices=[
                        access_pb2.ASSendNotifyReq(UID=n.uid, version=n.version, revokedToken=n.revoked)
                        for n in notices
                    ]
                ),
                address=node.address,
            )
        except Unavailable as exc:
            log.debug(
                "access node %s at %s did not take %d notices: %s",
                node.node_id,
                node.address,
                len(notices),
                exc,
            )
            return False
        return int(response.delivered) > 0
