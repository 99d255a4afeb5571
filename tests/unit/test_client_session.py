"""ChatClient against a tiny in-test server speaking the client protocol over real loopback TCP.

The server (`TinyChatServer`) implements the protocol's observable behaviour only: a gateway, any
number of access listeners, token login, ping, p2p and group sends idempotent by (sourceUID, msgID)
with a copy in the sender's timeline, notify with the newest version, exclusive paged sync, logout,
and the operator-side actions the client must survive (drain with ResReconnect, a dropped connection,
a connection lost between storing a send and acking it, a replaced session, unanswered pings).
End-to-end tests against the real servers live with the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from fishchat.client import (
    Backoff,
    ChatClient,
    ChatMessage,
    ClientClosed,
    ClientState,
    ConnectionLost,
    Endpoint,
    InvalidRequest,
    RequestRefused,
    SessionEnded,
    locate_access_server,
)
from fishchat.proto.gen.external import access_pb2, error_pb2, gateway_pb2
from fishchat.protocol.codec import ProtocolError, read_frame
from fishchat.protocol.commands import Cmd, ErrCode, ReconnectReason
from fishchat.protocol.frames import decode_request, encode_message

pytestmark = pytest.mark.timeout(60)


def token_of(uid: int) -> str:
    return f"token-of-{uid}"


@dataclass(eq=False)
class ServerConn:
    writer: asyncio.StreamWriter
    access: int
    uid: int = 0
    device: str = ""

    def send(self, message: object) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_message(message))  # type: ignore[arg-type]

    def abort(self) -> None:
        transport = self.writer.transport
        transport.abort()


@dataclass
class TinyChatServer:
    """Gateway plus access listeners on 127.0.0.1 with in-memory timelines (see the module doc)."""

    page_size: int = 100
    answer_pings: bool = True
    groups: dict[int, set[int]] = field(default_factory=dict)
    timelines: dict[int, list[access_pb2.offsetMsg]] = field(default_factory=dict)
    acks: dict[tuple[int, str], access_pb2.ResSendP2PMsg | access_pb2.ResSendGroupMsg] = field(
        default_factory=dict
    )
    received: Counter[tuple[int, str]] = field(default_factory=Counter)
    #: msgIDs whose first receipt is stored and then the connection dropped before the ack.
    drop_before_ack: set[str] = field(default_factory=set)
    #: msgIDs that arrive just after their connection's server began to drain: the ResReconnect goes
    #: out first, then the send is refused with 90002 (not stored), then the connection closes.
    arrive_while_draining: set[str] = field(default_factory=set)
    gateway_choice: int = 0
    logins: Counter[int] = field(default_factory=Counter)
    conns: list[ServerConn] = field(default_factory=list)
    servers: list[asyncio.Server] = field(default_factory=list)
    access_ports: list[int] = field(default_factory=list)
    gateway_port: int = 0
    server_msg_ids: int = 1000
    syncs: Counter[int] = field(default_factory=Counter)
    #: Sync stops before this version (a young gap the server holds back) while it is set.
    hold_back_from: int = 0

    async def start(self, accesses: int = 2) -> None:
        gateway = await asyncio.start_server(self._serve_gateway, "127.0.0.1", 0)
        self.servers.append(gateway)
        self.gateway_port = gateway.sockets[0].getsockname()[1]
        for index in range(accesses):
            server = await asyncio.start_server(
                functools.partial(self._serve_access, index=index), "127.0.0.1", 0
            )
            self.servers.append(server)
            self.access_ports.append(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for conn in self.conns:
            conn.abort()
        for server in self.servers:
            server.close()
            await server.wait_closed()

    @property
    def gateway(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.gateway_port)

    def access(self, index: int) -> Endpoint:
        return Endpoint("127.0.0.1", self.access_ports[index])

    def online(self, uid: int) -> list[ServerConn]:
        return [conn for conn in self.conns if conn.uid == uid]

    # --- operator actions -------------------------------------------------------------------------

    def drain(self, index: int, *, addr: str = "") -> None:
        """Tell every client on access `index` to go elsewhere, then close their connections."""
        for conn in [c for c in self.conns if c.access == index]:
            conn.send(
                access_pb2.ResReconnect(
                    cmd=Cmd.RECONNECT, reason=ReconnectReason.DRAINING, addr=addr, retryAfterMs=50
                )
            )
            conn.writer.close()

    def drop(self, uid: int) -> None:
        for conn in self.online(uid):
            conn.abort()

    # --- protocol ---------------------------------------------------------------------------------

    async def _serve_gateway(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ProtocolError, ConnectionError):
            payload = await read_frame(reader)
            if payload is not None:
                addr = f"127.0.0.1:{self.access_ports[self.gateway_choice]}"
                writer.write(
                    encode_message(
                        gateway_pb2.ResSelectAccessServerForClient(
                            cmd=Cmd.REQ_ACCESS_SERVER, errCode=0, errStr="ok", addr=addr
                        )
                    )
                )
                await writer.drain()
        writer.close()

    async def _serve_access(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, index: int
    ) -> None:
        conn = ServerConn(writer, index)
        self.conns.append(conn)
        try:
            while (payload := await read_frame(reader)) is not None:
                cmd, message = decode_request(payload)
                self._handle(conn, cmd, message)
                await writer.drain()
        except (ProtocolError, ConnectionError):
            pass
        finally:
            self.conns.remove(conn)
            writer.close()

    def _handle(self, conn: ServerConn, cmd: Cmd, message: object) -> None:
        if cmd == Cmd.LOGIN:
            assert isinstance(message, access_pb2.ReqLogin)
            if message.token != token_of(message.UID):
                conn.send(
                    error_pb2.Error(cmd=Cmd.LOGIN, errCode=ErrCode.TOKEN_INVALID, errStr="token invalid")
                )
                return
            for other in self.online(message.UID):
                if other.device == message.device:
                    other.send(access_pb2.ResReconnect(cmd=Cmd.RECONNECT, reason=ReconnectReason.REPLACED))
                    other.writer.close()
                    other.uid = 0
            conn.uid, conn.device = message.UID, message.device
            self.logins[message.UID] += 1
            conn.send(error_pb2.Error(cmd=Cmd.LOGIN, errCode=0, errStr="ok"))
        elif cmd == Cmd.PING:
            if self.answer_pings:
                conn.send(error_pb2.Error(cmd=Cmd.PING, errCode=0, errStr="ok"))
        elif cmd == Cmd.SEND_P2P_MSG:
            assert isinstance(message, access_pb2.ReqSendP2PMsg)
            self._send(conn, message, [message.targetUID], group_id=0)
        elif cmd == Cmd.SEND_GROUP_MSG:
            assert isinstance(message, access_pb2.ReqSendGroupMsg)
            members = self.groups.get(message.groupID, set())
            if message.sourceUID not in members:
                conn.send(
                    access_pb2.ResSendGroupMsg(
                        cmd=Cmd.SEND_GROUP_MSG,
                        errCode=ErrCode.NOT_GROUP_MEMBER,
                        errStr="not a group member",
                        sourceUID=message.sourceUID,
                        groupID=message.groupID,
                        msgID=message.msgID,
                    )
                )
                return
            self._send(conn, message, sorted(members), group_id=message.groupID)
        elif cmd == Cmd.SYNC_MSG:
            assert isinstance(message, access_pb2.ReqSyncMsg)
            self.syncs[message.UID] += 1
            timeline = self.timelines.get(message.UID, [])
            if self.hold_back_from:
                timeline = [e for e in timeline if e.version < self.hold_back_from]
            limit = min(message.limit or self.page_size, self.page_size)
            entries = [e for e in timeline if e.version > message.currentID][:limit]
            last = entries[-1].version if entries else min(message.currentID, len(timeline))
            conn.send(
                access_pb2.ResSyncMsg(
                    cmd=Cmd.SYNC_MSG,
                    errCode=0,
                    errStr="ok",
                    currentID=last,
                    Msgs=entries,
                    more=bool(timeline) and last < timeline[-1].version,
                )
            )
        elif cmd == Cmd.LOGOUT:
            conn.send(access_pb2.ResLogout(cmd=Cmd.LOGOUT, errCode=0, errStr="ok"))
            conn.uid = 0
            conn.writer.close()

    def _store(self, uid: int, entry: access_pb2.offsetMsg) -> int:
        timeline = self.timelines.setdefault(uid, [])
        stored = access_pb2.offsetMsg()
        stored.CopyFrom(entry)
        stored.version = len(timeline) + 1
        timeline.append(stored)
        for conn in self.online(uid):
            conn.send(access_pb2.ResNotify(cmd=Cmd.NOTIFY, errCode=0, errStr="ok", currentID=stored.version))
        return stored.version

    def _send(
        self,
        conn: ServerConn,
        request: access_pb2.ReqSendP2PMsg | access_pb2.ReqSendGroupMsg,
        recipients: list[int],
        group_id: int,
    ) -> None:
        key = (request.sourceUID, request.msgID)
        self.received[key] += 1
        if request.msgID in self.arrive_while_draining:
            self.arrive_while_draining.discard(request.msgID)
            conn.send(
                access_pb2.ResReconnect(cmd=Cmd.RECONNECT, reason=ReconnectReason.DRAINING, retryAfterMs=50)
            )
            kind = access_pb2.ResSendGroupMsg if group_id else access_pb2.ResSendP2PMsg
            conn.send(
                kind(
                    cmd=request.cmd,
                    errCode=ErrCode.SERVICE_UNAVAILABLE,
                    errStr="draining",
                    sourceUID=request.sourceUID,
                    msgID=request.msgID,
                )
            )
            conn.writer.close()
            return
        if key not in self.acks:
            self.server_msg_ids += 1
            entry = access_pb2.offsetMsg(
                sourceUID=request.sourceUID,
                targetUID=0 if group_id else recipients[0],
                groupID=group_id,
                msgType="group" if group_id else "p2p",
                msgID=request.msgID,
                msg=request.msg,
                timestamp=1_700_000_000_000,
                serverMsgID=self.server_msg_ids,
            )
            own = 0
            for uid in recipients:
                version = self._store(uid, entry)
                if uid == request.sourceUID:
                    own = version
            if request.sourceUID not in recipients:
                own = self._store(request.sourceUID, entry)
            if group_id:
                self.acks[key] = access_pb2.ResSendGroupMsg(
                    cmd=Cmd.SEND_GROUP_MSG,
                    errStr="ok",
                    sourceUID=request.sourceUID,
                    groupID=group_id,
                    msgID=request.msgID,
                    version=own,
                    serverMsgID=self.server_msg_ids,
                    timestamp=1_700_000_000_000,
                )
            else:
                self.acks[key] = access_pb2.ResSendP2PMsg(
                    cmd=Cmd.SEND_P2P_MSG,
                    errStr="ok",
                    sourceUID=request.sourceUID,
                    targetUID=recipients[0],
                    msgID=request.msgID,
                    version=own,
                    serverMsgID=self.server_msg_ids,
                    timestamp=1_700_000_000_000,
                )
            if request.msgID in self.drop_before_ack:
                self.drop_before_ack.discard(request.msgID)
                conn.abort()
                return
        conn.send(self.acks[key])


@pytest.fixture
async def server() -> AsyncIterator[TinyChatServer]:
    tiny = TinyChatServer()
    await tiny.start()
    yield tiny
    await tiny.stop()


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until `predicate()` holds (it watches state no event announces); TimeoutError after `within`."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling outside state
            await asyncio.sleep(0.01)


class Inbox:
    """Collects a client's messages and lets a test wait for a count."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self._changed = asyncio.Event()

    def __call__(self, message: ChatMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int, within: float = 5.0) -> list[ChatMessage]:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages

    def bodies(self, *, source: int | None = None) -> list[str]:
        return [m.body for m in self.messages if source is None or m.source_uid == source]


def client_for(server: TinyChatServer, uid: int, inbox: Inbox | None = None, **options: object) -> ChatClient:
    defaults: dict[str, object] = {
        "gateway": server.gateway,
        "backoff": Backoff(base=0.02, cap=0.1, max_attempts=20),
        "rng": random.Random(uid),
        "request_timeout": 3.0,
    }
    defaults.update(options)
    return ChatClient(uid, token_of(uid), on_message=inbox, **defaults)  # type: ignore[arg-type]


async def test_gateway_lookup(server: TinyChatServer) -> None:
    server.gateway_choice = 1
    assert await locate_access_server(server.gateway) == server.access(1)


async def test_p2p_delivered_once_in_order_with_acks(server: TinyChatServer) -> None:
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with client_for(server, 1, alice_inbox) as alice, client_for(server, 2, bob_inbox) as bob:
        acks = [await alice.send_p2p(2, f"hello {n}") for n in range(5)]
        assert [ack.version for ack in acks] == [1, 2, 3, 4, 5]  # alice's own copies
        assert all(ack.target_uid == 2 and ack.source_uid == 1 and ack.msg_id for ack in acks)
        received = await bob_inbox.wait_for(5)
        assert [m.body for m in received] == [f"hello {n}" for n in range(5)]
        assert [m.version for m in received] == [1, 2, 3, 4, 5]
        assert [m.msg_id for m in received] == [ack.msg_id for ack in acks]
        assert bob.cursor == 5
        # Alice's timeline holds her own copies: other devices of hers see what she sent.
        await alice_inbox.wait_for(5)
        assert alice.cursor == 5
        assert await bob.sync() == 0


async def test_pipelined_sends_matched_by_msg_id(server: TinyChatServer) -> None:
    async with client_for(server, 1) as alice, client_for(server, 2, Inbox()):
        acks = await asyncio.gather(*(alice.send_p2p(2, f"m{n}", msg_id=f"id-{n}") for n in range(50)))
        assert [ack.msg_id for ack in acks] == [f"id-{n}" for n in range(50)]
        assert sorted(ack.version for ack in acks) == list(range(1, 51))


async def test_offline_messages_paged_from_saved_cursor(server: TinyChatServer) -> None:
    server.page_size = 3
    async with client_for(server, 1) as alice:
        for n in range(10):
            await alice.send_p2p(2, f"offline {n}")
    inbox = Inbox()
    async with client_for(server, 2, inbox, cursor=4, sync_limit=2) as bob:
        received = await inbox.wait_for(6)
        assert [m.body for m in received] == [f"offline {n}" for n in range(4, 10)]
        assert bob.cursor == 10


async def test_group_send_and_refusal(server: TinyChatServer) -> None:
    server.groups[7] = {1, 2, 3}
    inboxes = {uid: Inbox() for uid in (1, 2, 3)}
    clients = [client_for(server, uid, inboxes[uid]) for uid in (1, 2, 3)]
    for client in clients:
        await client.connect()
    outsider = client_for(server, 9)
    await outsider.connect()
    try:
        ack = await clients[0].send_group(7, "hi all")
        assert ack.group_id == 7 and ack.version == 1
        for uid in (2, 3):
            (message,) = await inboxes[uid].wait_for(1)
            assert message.is_group and message.group_id == 7 and message.source_uid == 1
        with pytest.raises(RequestRefused) as refused:
            await outsider.send_group(7, "let me in")
        assert refused.value.code == ErrCode.NOT_GROUP_MEMBER
    finally:
        for client in [*clients, outsider]:
            await client.close()


async def test_iterator_delivery(server: TinyChatServer) -> None:
    async with client_for(server, 1) as alice, client_for(server, 2) as bob:
        await alice.send_p2p(2, "one")
        await alice.send_p2p(2, "two")
        bodies = []
        async with asyncio.timeout(5):
            async for message in bob.messages():
                bodies.append(message.body)
                if len(bodies) == 2:
                    break
        assert bodies == ["one", "two"]


async def test_drain_reconnects_through_gateway_and_syncs(server: TinyChatServer) -> None:
    inbox = Inbox()
    async with client_for(server, 1) as alice, client_for(server, 2, inbox) as bob:
        assert bob.access_endpoint == server.access(0)
        await alice.send_p2p(2, "before")
        await inbox.wait_for(1)
        server.gateway_choice = 1
        server.drain(0)
        # Sends while bob (and alice) reconnect are stored and reach bob by sync.
        await alice.send_p2p(2, "during")
        await alice.send_p2p(2, "after")
        await inbox.wait_for(3)
        assert inbox.bodies() == ["before", "during", "after"]
        assert bob.access_endpoint == server.access(1)
        assert bob.stats.reconnects == 1 and server.logins[2] == 2


async def test_send_refused_by_a_draining_server_is_sent_again_elsewhere(server: TinyChatServer) -> None:
    inbox = Inbox()
    async with client_for(server, 1) as alice, client_for(server, 2, inbox):
        server.gateway_choice = 1
        server.arrive_while_draining.add("late")
        ack = await alice.send_p2p(2, "sent as the server drained", msg_id="late")
        assert ack.msg_id == "late" and ack.version == 1
        assert server.received[(1, "late")] == 2 and alice.access_endpoint == server.access(1)
        await inbox.wait_for(1)
        assert inbox.bodies() == ["sent as the server drained"]


async def test_drain_to_named_address(server: TinyChatServer) -> None:
    async with client_for(server, 2, Inbox()) as bob:
        server.drain(0, addr=f"127.0.0.1:{server.access_ports[1]}")
        await until(lambda: bob.access_endpoint == server.access(1))


async def test_lost_connection_resends_with_same_msg_id(server: TinyChatServer) -> None:
    inbox = Inbox()
    async with client_for(server, 1) as alice, client_for(server, 2, inbox):
        server.drop_before_ack.add("retry-me")
        ack = await alice.send_p2p(2, "stored once", msg_id="retry-me")
        assert server.received[(1, "retry-me")] == 2  # sent on two connections
        assert ack.version == 1
        await alice.send_p2p(2, "next")
        await inbox.wait_for(2)
        await asyncio.sleep(0.05)
        assert inbox.bodies() == ["stored once", "next"]  # not twice


async def test_dropped_connection_reconnects(server: TinyChatServer) -> None:
    inbox = Inbox()
    async with client_for(server, 1) as alice, client_for(server, 2, inbox) as bob:
        server.drop(2)
        await alice.send_p2p(2, "while away")
        await inbox.wait_for(1)
        assert bob.state is ClientState.ONLINE and bob.stats.reconnects == 1


async def test_unanswered_pings_reconnect(server: TinyChatServer) -> None:
    server.answer_pings = False
    async with client_for(server, 2, Inbox(), ping_interval=0.1) as bob:
        await until(lambda: bob.stats.reconnects > 0)
        assert server.logins[2] >= 2


async def test_replaced_session_ends_the_old_client(server: TinyChatServer) -> None:
    first = client_for(server, 2, Inbox(), device="phone")
    await first.connect()
    second = client_for(server, 2, Inbox(), device="phone")
    await second.connect()
    try:
        error = await asyncio.wait_for(first.wait_closed(), 5)
        assert isinstance(error, SessionEnded) and error.reason == "replaced"
        assert first.state is ClientState.CLOSED
        with pytest.raises(ClientClosed):
            await first.send_p2p(1, "too late")
        assert second.state is ClientState.ONLINE
    finally:
        await first.close()
        await second.close()


async def test_bad_token_is_refused_at_connect(server: TinyChatServer) -> None:
    client = ChatClient(5, "wrong", gateway=server.gateway)
    with pytest.raises(RequestRefused) as refused:
        await client.connect()
    assert refused.value.code == ErrCode.TOKEN_INVALID and refused.value.cmd == Cmd.LOGIN
    assert client.state is ClientState.CLOSED


async def test_unreachable_gateway() -> None:
    client = ChatClient(5, "t", gateway="127.0.0.1:1", connect_timeout=1)
    with pytest.raises(ConnectionLost):
        await client.connect()


async def test_without_backoff_a_drop_closes(server: TinyChatServer) -> None:
    bob = client_for(server, 2, Inbox(), backoff=None)
    await bob.connect()
    server.drop(2)
    error = await asyncio.wait_for(bob.wait_closed(), 5)
    assert isinstance(error, ConnectionLost)


async def test_logout_closes_without_reconnecting(server: TinyChatServer) -> None:
    bob = client_for(server, 2, Inbox())
    await bob.connect()
    await bob.logout()
    assert bob.state is ClientState.CLOSED and await bob.wait_closed() is None
    await asyncio.sleep(0.1)
    assert server.logins[2] == 1 and not server.online(2)


async def test_invalid_fields_refused_locally(server: TinyChatServer) -> None:
    async with client_for(server, 1) as alice:
        with pytest.raises(InvalidRequest):
            await alice.send_p2p(0, "nobody")
        with pytest.raises(InvalidRequest):
            await alice.send_p2p(2, "x", msg_id="m" * 65)
        with pytest.raises(InvalidRequest):
            await alice.send_p2p(2, "x" * 70_000)
    with pytest.raises(InvalidRequest):
        ChatClient(0, "t")
    with pytest.raises(InvalidRequest):
        ChatClient(1, "t", device="bad device name")
    with pytest.raises(InvalidRequest):
        ChatClient(1, "t", gateway="nonsense")


async def test_stale_notify_costs_no_sync(server: TinyChatServer) -> None:
    inbox = Inbox()
    async with client_for(server, 1) as alice, client_for(server, 2, inbox) as bob:
        await alice.send_p2p(2, "one")
        await inbox.wait_for(1)
        await asyncio.sleep(0.05)
        before = server.syncs[2]
        for conn in server.online(2):
            conn.send(access_pb2.ResNotify(cmd=Cmd.NOTIFY, currentID=1))  # bob has version 1 already
        await asyncio.sleep(0.1)
        assert server.syncs[2] == before
        assert bob.cursor == 1 and bob.latest_version == 1


async def test_held_back_gap_is_retried_without_a_new_notify(server: TinyChatServer) -> None:
    inbox = Inbox()
    async with client_for(server, 1) as alice, client_for(server, 2, inbox, sync_retry=0.05) as bob:
        await alice.send_p2p(2, "one")
        await inbox.wait_for(1)
        server.hold_back_from = 2  # version 2 is "still in flight": sync stops before it
        await alice.send_p2p(2, "two")
        await alice.send_p2p(2, "three")
        await asyncio.sleep(0.2)
        assert bob.cursor == 1 and bob.latest_version == 3  # notified, but not yet synced
        server.hold_back_from = 0  # no further notify comes; the client retries by itself
        await inbox.wait_for(3)
        assert inbox.bodies() == ["one", "two", "three"]
