"""A notice that arrives while a login is still running reaches the connection once it is bound.

The route is written (presence) before the login returns, so notify can find the node and call it
before the access server has bound the session; such a notice used to reach nobody.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from fishchat.client import Endpoint
from fishchat.domain.ordering import UNORDERED, SendTicket
from fishchat.domain.records import AccessNode, MsgType, Notice, SendResult, Session, SyncPage
from fishchat.domain.settings import ChatSettings
from fishchat.embedded.notifier import InProcessNotifier
from fishchat.embedded.registry import InMemoryRegistry
from fishchat.proto.gen.external import access_pb2, error_pb2
from fishchat.protocol.commands import Cmd
from fishchat.server.access import AccessServer
from fishchat.server.config import AccessConfig
from fishchat.server.metrics import ServerMetrics
from tests.integration.harness import Wire


class SlowLoginCore:
    """An `AccessCore` whose login waits until the test lets it finish; nothing else is used."""

    def __init__(self, latest_version: int) -> None:
        self.entered = asyncio.Event()
        self.finish = asyncio.Event()
        self.latest_version = latest_version

    async def login(self, uid: int, token: str, device: str, node: AccessNode) -> Session:
        self.entered.set()
        await self.finish.wait()
        return Session(uid, device, node.node_id, self.latest_version, 0)

    async def ping(self, uid: int, device: str, node: AccessNode) -> None:
        return None

    async def disconnect(self, uid: int, device: str, node_id: str) -> None:
        return None

    async def logout(self, uid: int, device: str, node_id: str, token: str | None = None) -> None:
        return None

    async def send_p2p(
        self, source_uid: int, target_uid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        raise AssertionError("not used")

    async def send_group(
        self, source_uid: int, gid: int, msg_id: str, body: str, *, ticket: SendTicket = UNORDERED
    ) -> SendResult:
        raise AssertionError("not used")

    async def sync(
        self, uid: int, cursor: int, *, max_count: int | None = None, byte_budget: int | None = None
    ) -> SyncPage:
        raise AssertionError("not used")

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
        raise AssertionError("not used")


async def test_a_notice_during_login_is_pushed_after_the_login_reply() -> None:
    core = SlowLoginCore(latest_version=3)
    access = AccessServer(
        core,
        InProcessNotifier(),
        InMemoryRegistry(),
        AccessConfig(port=0),
        ChatSettings(),
        "127.0.0.1",
        ServerMetrics(CollectorRegistry()),
    )
    await access.start()
    wire = await Wire.open(Endpoint("127.0.0.1", access.port))
    try:
        await wire.send(access_pb2.ReqLogin(cmd=Cmd.LOGIN, UID=42, token="t" * 32, device="phone"))
        await asyncio.wait_for(core.entered.wait(), 5)
        await access.on_notice(Notice(42, 7))  # stored while the login runs
        await access.on_notice(Notice(43, 9))  # someone else's: not for this connection
        core.finish.set()
        login = await wire.frame()
        assert login.cmd == Cmd.LOGIN
        assert isinstance(login.message, error_pb2.Error) and login.message.errCode == 0
        notify = await wire.frame()
        assert notify.cmd == Cmd.NOTIFY
        assert isinstance(notify.message, access_pb2.ResNotify) and notify.message.currentID == 7
    finally:
        await wire.close()
        await access.close()
