"""The front roles of `fishchat serve` (register, logic, access, gateway) on the real servers, in-process.

Each role runs as an asyncio task of this test process through `serve_role`, exactly as
`fishchat serve <role>` runs it (its own etcd session, registry entry, gRPC server, metrics and
ready line), on free ports and in a namespace of its own (etcd prefixes, Redis prefix, Kafka topics,
HBase table and a fresh MariaDB database), removed at the end. The multi-process cluster is tested
elsewhere (`test_cluster.py`); here every role is reached by its real protocol: the HTTP API, gRPC,
the gateway's and the access server's client protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest

from fishchat.client import ApiClient, ApiError, ChatClient, Endpoint, RequestRefused, SessionEnded
from fishchat.cluster import Namespace, destroy_namespace, provision
from fishchat.domain.records import ServiceInstance
from fishchat.errcodes import ErrCode
from fishchat.production.etcd import EtcdRegistry, EtcdSession, connect_etcd
from fishchat.proto.gen.external import gateway_pb2
from fishchat.proto.gen.rpc import (
    logic_pb2,
    logic_pb2_grpc,
    manager_pb2,
    manager_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
    register_pb2,
    register_pb2_grpc,
)
from fishchat.protocol.commands import Cmd
from fishchat.serve.config import DEFAULT_LISTEN, ServeConfig, load_serve_config
from tests.integration.cluster_fixtures import http_get, synced
from tests.integration.harness import HOST, PASSWORD, Inbox, Wire, eventually, new_uid
from tests.integration.roles_harness import RunningRole, flatten

BACKEND_ROLES = ("idgen", "manager", "notify", "msg-job")
#: The full chain needs the back roles too (written alongside these); without them it is skipped.
HAVE_BACKEND_ROLES = all(
    importlib.util.find_spec(f"fishchat.serve.roles.{role.replace('-', '_')}") is not None
    for role in BACKEND_ROLES
)


@dataclass
class Namespaced:
    """Role configurations that all point into one fresh namespace on the stack's servers."""

    env: dict[str, str]
    namespace: Namespace
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    def config(self, role: str, **extra: Any) -> ServeConfig:
        """`role`'s settings: the stack's addresses, this namespace, free ports, cheap hashing."""
        settings = flatten(self.namespace.settings())
        base_url = self.env["FISHCHAT_MYSQL_URL"]
        settings["mysql.url"] = base_url.rsplit("/", 1)[0] + "/" + self.namespace.database
        for kind in DEFAULT_LISTEN[role]:
            settings[f"server.{kind}_listen"] = f"{HOST}:0"
        settings["server.instance"] = f"{role}-{self.namespace.name}-{next(self.counter)}"
        settings["server.drain_timeout_seconds"] = 3.0
        settings["chat.scrypt.log2_n"] = 10
        settings["kafka.partitions"] = 2
        settings["access.load_report_interval_s"] = 0.2
        settings["access.drain_timeout_s"] = 3.0
        settings["access.reconnect_spread_ms"] = 200
        settings.update(extra)
        return load_serve_config(role, None, env=self.env, overrides=settings)


@pytest.fixture(scope="module")
def namespaced(stack_env: dict[str, str]) -> Iterator[Namespaced]:
    env = {key: value for key, value in stack_env.items() if key.startswith("FISHCHAT_")}
    spaced = Namespaced(env, Namespace.fresh())
    config = spaced.config("logic")
    asyncio.run(provision(config, spaced.namespace))
    try:
        yield spaced
    finally:
        asyncio.run(destroy_namespace(config, spaced.namespace))


@pytest.fixture(scope="module")
async def register(namespaced: Namespaced) -> AsyncIterator[RunningRole]:
    role = await RunningRole("register", namespaced.config("register")).start()
    try:
        yield role
    finally:
        await role.shutdown()


@pytest.fixture
async def register_stub(register: RunningRole) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(register.address()) as channel:
        yield register_pb2_grpc.RegisterServerRPCStub(channel)


async def _user(api_url: str) -> tuple[int, str]:
    uid = new_uid()
    async with ApiClient(api_url) as api:
        await api.register(uid, f"front-{uid}", PASSWORD)
        return uid, await api.auth(uid, PASSWORD)


# --- register ----------------------------------------------------------------------------------------


async def test_register_http_api_accounts_and_groups(register: RunningRole) -> None:
    api_url = f"http://{register.address('http')}"
    owner, owner_token = await _user(api_url)
    member, member_token = await _user(api_url)
    async with ApiClient(api_url) as api:
        with pytest.raises(ApiError) as wrong:
            await api.auth(owner, "not the password")
        assert wrong.value.code == ErrCode.WRONG_PASSWORD
        with pytest.raises(ApiError) as taken:
            await api.register(owner, "someone else", PASSWORD)
        assert taken.value.code == ErrCode.USER_ALREADY_EXISTS
    async with ApiClient(api_url, token=owner_token) as api:
        gid = await api.create_group("front roles")
        assert gid > 0
    async with ApiClient(api_url, token=member_token) as api:
        with pytest.raises(ApiError) as outsider:
            await api.group_members(gid)
        assert outsider.value.code == ErrCode.NOT_GROUP_MEMBER
        await api.join_group(gid)
        assert await api.group_members(gid) == sorted([owner, member])
    status, text = await http_get(f"http://{register.address('metrics')}/metrics")
    assert status == 200
    assert 'fishchat_http_requests_total{code="0",path="/x/group/join"}' in text


async def test_register_grpc_tokens_users_and_routes(register: RunningRole, register_stub: Any) -> None:
    uid, token = await _user(f"http://{register.address('http')}")
    verified = await register_stub.VerifyToken(register_pb2.RGVerifyTokenReq(UID=uid, token=token))
    assert verified.errCode == 0 and verified.expiresAt > time.time() * 1000
    foreign = await register_stub.VerifyToken(register_pb2.RGVerifyTokenReq(UID=uid + 1, token=token))
    assert foreign.errCode == ErrCode.TOKEN_INVALID
    user = await register_stub.GetUser(register_pb2.RGGetUserReq(UID=uid))
    assert (user.errCode, user.UID, user.name) == (0, uid, f"front-{uid}") and user.createdAt > 0
    missing = await register_stub.GetUser(register_pb2.RGGetUserReq(UID=new_uid()))
    assert missing.errCode == ErrCode.NO_SUCH_USER

    node = {"nodeID": "access-test-1", "accessAddr": "127.0.0.1:1"}
    login = await register_stub.Login(register_pb2.RGLoginReq(UID=uid, token=token, device="phone", **node))
    assert login.errCode == 0 and login.replacedNodeID == "" and login.expiresAt == verified.expiresAt
    routes = await register_stub.Routes(register_pb2.RGRoutesReq(UID=uid))
    assert [(r.device, r.nodeID, r.accessAddr) for r in routes.routes] == [("phone", *node.values())]
    # The same device on another node replaces the route; the first node's ping is then refused.
    other = {"nodeID": "access-test-2", "accessAddr": "127.0.0.1:2"}
    moved = await register_stub.Login(register_pb2.RGLoginReq(UID=uid, token=token, device="phone", **other))
    assert (moved.replacedNodeID, moved.replacedAccessAddr) == tuple(node.values())
    stale = await register_stub.Ping(register_pb2.RGPingReq(UID=uid, device="phone", **node))
    assert stale.errCode == ErrCode.NOT_LOGGED_IN
    assert (await register_stub.Online(register_pb2.RGOnlineReq(UID=uid))).online
    logout = await register_stub.Logout(
        register_pb2.RGLogoutReq(
            UID=uid, device="phone", nodeID="access-test-2", revokeToken=True, token=token
        )
    )
    assert logout.errCode == 0
    assert not (await register_stub.Online(register_pb2.RGOnlineReq(UID=uid))).online
    revoked = await register_stub.VerifyToken(register_pb2.RGVerifyTokenReq(UID=uid, token=token))
    assert revoked.errCode == ErrCode.TOKEN_INVALID


async def test_register_grpc_refuses_bad_fields(register: RunningRole, register_stub: Any) -> None:
    uid, token = await _user(f"http://{register.address('http')}")
    refusals = [
        await register_stub.GetUser(register_pb2.RGGetUserReq(UID=0)),
        await register_stub.GetUser(register_pb2.RGGetUserReq(UID=-7)),
        await register_stub.VerifyToken(register_pb2.RGVerifyTokenReq(UID=-1, token=token)),
        await register_stub.Members(register_pb2.RGMembersReq(gid=0)),
        await register_stub.GetGroup(register_pb2.RGGetGroupReq(gid=-3)),
        await register_stub.JoinGroup(register_pb2.RGJoinGroupReq(uid=uid, gid=0)),
        await register_stub.CreateGroup(register_pb2.RGCreateGroupReq(uid=uid, groupName="")),
        await register_stub.CreateGroup(register_pb2.RGCreateGroupReq(uid=0, groupName="x")),
        # A login must name the node (routes are per node), a valid device and a sane token.
        await register_stub.Login(
            register_pb2.RGLoginReq(UID=uid, token=token, device="d", accessAddr="a:1")
        ),
        await register_stub.Login(
            register_pb2.RGLoginReq(UID=uid, token=token, device="bad\ndevice", accessAddr="a:1", nodeID="n")
        ),
        await register_stub.Login(
            register_pb2.RGLoginReq(UID=uid, token="t" * 300, device="d", accessAddr="a:1", nodeID="n")
        ),
        await register_stub.Ping(
            register_pb2.RGPingReq(UID=uid, device="d", nodeID="n\x00", accessAddr="a:1")
        ),
        await register_stub.Logout(register_pb2.RGLogoutReq(UID=uid, device="", nodeID="n")),
        await register_stub.Register(register_pb2.RGRegisterReq(UID=0, name="x", password=PASSWORD)),
    ]
    assert [r.errCode for r in refusals] == [ErrCode.INVALID_FIELD] * len(refusals)
    assert (await register_stub.Members(register_pb2.RGMembersReq(gid=new_uid()))).errCode == (
        ErrCode.NO_SUCH_GROUP
    )
    empty = await register_stub.Login(
        register_pb2.RGLoginReq(UID=uid, device="d", accessAddr="a:1", nodeID="n")
    )
    assert empty.errCode == ErrCode.NO_TOKEN
    # Still serving after all of that.
    assert (await register_stub.GetUser(register_pb2.RGGetUserReq(UID=uid))).errCode == 0


async def _registered(config: ServeConfig, role: str) -> list[ServiceInstance]:
    """The instances of `role` in `config`'s registry, as a fresh reader of etcd sees them."""
    etcd = connect_etcd(config.etcd)
    try:
        session = await EtcdSession.open(etcd, config.etcd.lease_ttl_s)
        try:
            registry = await EtcdRegistry.open(session, config.registry.prefix)
            try:
                return await registry.instances(role)
            finally:
                await registry.close()
        finally:
            await session.close()
    finally:
        await etcd.close()


# --- gateway -----------------------------------------------------------------------------------------


async def _ask_gateway(endpoint: Endpoint) -> gateway_pb2.ResSelectAccessServerForClient:
    wire = await Wire.open(endpoint)
    try:
        await wire.send(gateway_pb2.ReqAccessServer(cmd=Cmd.REQ_ACCESS_SERVER))
        return await wire.reply(gateway_pb2.ResSelectAccessServerForClient, Cmd.REQ_ACCESS_SERVER)
    finally:
        await wire.close()


async def test_gateway_hands_out_the_least_loaded_access_server(namespaced: Namespaced) -> None:
    # A registry of its own, so that only the two announcements below are in it.
    prefix = f"{namespaced.namespace.etcd_root}gateway-test/"
    gateway = await RunningRole(
        "gateway", namespaced.config("gateway", **{"registry.prefix": prefix})
    ).start()
    etcd = connect_etcd(gateway.config.etcd)
    session = await EtcdSession.open(etcd, gateway.config.etcd.lease_ttl_s)
    registry = await EtcdRegistry.open(session, prefix)
    try:
        endpoint = Endpoint(HOST, gateway.ready["client"])
        none = await _ask_gateway(endpoint)
        assert none.errCode == ErrCode.NO_ACCESS_SERVER
        for name, load in (("a", 5), ("b", 1)):
            await registry.register(
                ServiceInstance(
                    "access", f"access-{name}", f"127.0.0.1:2000{load}", f"10.0.0.{load}:11000", load
                )
            )

        async def answer(expected: str) -> None:
            async def answered() -> bool:
                reply = await _ask_gateway(endpoint)
                return (reply.errCode, reply.addr) == (0, expected)

            await eventually(answered)  # the gateway follows the registry by a watch

        await answer("10.0.0.1:11000")
        await registry.set_load("access", "access-b", 9)
        await answer("10.0.0.5:11000")
        await registry.deregister("access", "access-a")
        await answer("10.0.0.1:11000")  # the only one left, however loaded
    finally:
        await registry.close()
        await session.close()
        await etcd.close()
        await gateway.shutdown()


# --- the whole chain ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def chain(namespaced: Namespaced, register: RunningRole) -> AsyncIterator[dict[str, RunningRole]]:
    if not HAVE_BACKEND_ROLES:
        pytest.skip("the idgen, manager, notify and msg-job role modules are not there yet")
    roles: dict[str, RunningRole] = {"register": register}
    try:
        for role in (*BACKEND_ROLES, "logic", "access", "gateway"):
            roles[role] = await RunningRole(role, namespaced.config(role)).start()
        # access prints its ready line once it listens and enters the registry right after; the gateway
        # sees it as soon as its watch delivers the announcement.
        access_address = f"{HOST}:{roles['access'].ready['client']}"
        gateway = Endpoint(HOST, roles["gateway"].ready["client"])

        async def announced() -> bool:
            return (await _ask_gateway(gateway)).addr == access_address

        await eventually(announced)
        yield roles
    finally:
        # Access first (its clients are told to reconnect), the rest after; register is the module's.
        for role in ("gateway", "access", "logic", "msg-job", "notify", "manager", "idgen"):
            if role in roles:
                with contextlib.suppress(Exception):
                    await roles[role].shutdown()


def _client(chain: dict[str, RunningRole], uid: int, token: str, inbox: Inbox, **options: Any) -> ChatClient:
    gateway = Endpoint(HOST, chain["gateway"].ready["client"])
    return ChatClient(
        uid, token, gateway=gateway, on_message=inbox, ping_interval=1.0, request_timeout=10.0, **options
    )


async def test_chain_access_routes_and_announcement(chain: dict[str, RunningRole]) -> None:
    access = chain["access"]
    api_url = f"http://{chain['register'].address('http')}"
    uid, token = await _user(api_url)
    inbox = Inbox()
    async with _client(chain, uid, token, inbox) as client:
        assert client.access_endpoint == Endpoint(HOST, access.ready["client"])
        async with grpc.aio.insecure_channel(chain["register"].address()) as channel:
            routes = await register_pb2_grpc.RegisterServerRPCStub(channel).Routes(
                register_pb2.RGRoutesReq(UID=uid)
            )
        # Presence routes carry the node's gRPC address, which notify calls SendNotify on.
        assert [(r.nodeID, r.accessAddr) for r in routes.routes] == [
            (access.ready["instance"], access.address())
        ]
        # The announcement: the node's gRPC address, the client address, the live connection count.
        instance = ServiceInstance(
            "access",
            access.ready["instance"],
            access.address(),
            access.address("client"),
            1,
            f"ws://{access.address('ws')}/ws",
        )
        config = access.config

        async def announced_with_load() -> bool:
            return instance in await _registered(config, "access")

        await eventually(announced_with_load)
        status, text = await http_get(f"http://{access.address('metrics')}/metrics")
        assert status == 200 and 'fishchat_connections{role="access"} 1.0' in text
        assert (await http_get(f"http://{access.address('metrics')}/readyz"))[0] == 200


async def test_chain_p2p_send_is_received_through_notify_and_sync(chain: dict[str, RunningRole]) -> None:
    api_url = f"http://{chain['register'].address('http')}"
    alice, alice_token = await _user(api_url)
    bob, bob_token = await _user(api_url)
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with (
        _client(chain, alice, alice_token, alice_inbox) as alice_client,
        _client(chain, bob, bob_token, bob_inbox) as bob_client,
    ):
        acks = [await alice_client.send_p2p(bob, f"hello bob {n}", msg_id=f"m-{n}") for n in range(3)]
        assert [ack.version for ack in acks] == sorted({ack.version for ack in acks})
        assert all(ack.server_msg_id > 0 and ack.target_uid == bob for ack in acks)
        again = await alice_client.send_p2p(bob, "hello bob 0", msg_id="m-0")
        assert (again.version, again.server_msg_id) == (acks[0].version, acks[0].server_msg_id)
        # bob is told by notify (the rows are in HBase by then) and syncs them through manager.
        received = await bob_inbox.wait_bodies("hello bob 0", "hello bob 1", "hello bob 2", timeout_s=20)
        assert [m.body for m in received] == [f"hello bob {n}" for n in range(3)]
        assert {(m.source_uid, m.target_uid, m.msg_type) for m in received} == {(alice, bob, "p2p")}
        await bob_client.send_p2p(alice, "hi alice")
        mine = await synced(alice_client, alice_inbox, 4)
        assert [m.body for m in mine][-1] == "hi alice"
        assert [m.version for m in mine if m.source_uid == alice] == [ack.version for ack in acks]
        with pytest.raises(RequestRefused) as unknown:
            await alice_client.send_p2p(new_uid(), "nobody there")
        assert unknown.value.code == ErrCode.NO_SUCH_USER


async def test_chain_websocket_client_and_read_receipts(chain: dict[str, RunningRole]) -> None:
    """A browser's path: the HTTP API names the access server's WebSocket; receipts go through logic."""
    api_url = f"http://{chain['register'].address('http')}"
    async with aiohttp.ClientSession() as http, http.post(f"{api_url}/x/access/server") as response:
        answer = await response.json()
    access = chain["access"]
    assert answer["data"]["wsURL"] == f"ws://{access.address('ws')}/ws"
    alice, alice_token = await _user(api_url)
    bob, bob_token = await _user(api_url)
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with (
        _client(chain, alice, alice_token, alice_inbox, websocket=True, receipts=True) as on_ws,
        _client(chain, bob, bob_token, bob_inbox, receipts=True) as on_tcp,
    ):
        ack = await on_ws.send_p2p(bob, "read me")
        (message,) = await bob_inbox.wait_bodies("read me", timeout_s=20)
        await on_tcp.mark_read(message.version, peer_uid=alice)
        marks = await alice_inbox.wait_for(lambda ms: any(m.is_receipt for m in ms), timeout_s=20)
        read = next(m for m in marks if m.is_receipt)
        assert (read.msg_type, read.source_uid, read.mark_server_msg_id) == ("read", bob, ack.server_msg_id)


async def test_chain_logout_ends_the_sessions_of_the_token(chain: dict[str, RunningRole]) -> None:
    """register (HTTP) revokes the token and tells the access server holding the device (gRPC
    SendNotify with revokedToken): the client is ended with ResReconnect "revoked"."""
    api_url = f"http://{chain['register'].address('http')}"
    uid, token = await _user(api_url)
    client = _client(chain, uid, token, Inbox(), websocket=True)
    await client.connect()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{api_url}/x/user/logout", data={"token": token}) as response,
        ):
            assert (await response.json())["code"] == 0
        error = await asyncio.wait_for(client.wait_closed(), 20)
        assert isinstance(error, SessionEnded) and error.reason == "revoked"
    finally:
        await client.close()


async def test_logic_sync_rpc_pages_the_timeline_and_refuses_bad_fields(
    chain: dict[str, RunningRole],
) -> None:
    """LogicRPC.SyncMsg (the original's sync path through logic; access itself asks manager)."""
    api_url = f"http://{chain['register'].address('http')}"
    alice, alice_token = await _user(api_url)
    bob, _ = await _user(api_url)
    inbox = Inbox()
    async with _client(chain, alice, alice_token, inbox) as alice_client:
        acks = [await alice_client.send_p2p(bob, f"to bob {n}", msg_id=f"s-{n}") for n in range(3)]
    async with grpc.aio.insecure_channel(chain["logic"].address()) as channel:
        logic = logic_pb2_grpc.LogicRPCStub(channel)

        async def sync(cursor: int) -> logic_pb2.SyncMsgRes:
            return await logic.SyncMsg(logic_pb2.SyncMsgReq(UID=bob, currentID=cursor, limit=2), timeout=5)

        async def stored() -> bool:
            return len((await sync(0)).Msgs) == 2 and (await sync(0)).more

        await eventually(stored, timeout_s=20)
        first = await sync(0)
        rest = await sync(first.currentID)
        bodies = [m.msg for m in (*first.Msgs, *rest.Msgs)]
        assert bodies == [f"to bob {n}" for n in range(3)] and not rest.more
        assert [m.serverMsgID for m in (*first.Msgs, *rest.Msgs)] == [a.server_msg_id for a in acks]
        for bad in (logic_pb2.SyncMsgReq(UID=0), logic_pb2.SyncMsgReq(UID=bob, currentID=-1)):
            assert (await logic.SyncMsg(bad, timeout=5)).errCode == ErrCode.INVALID_FIELD


async def test_chain_pipelined_sends_keep_their_order(chain: dict[str, RunningRole]) -> None:
    """Sends of one connection overlap on the wire but reach logic in arrival order (send tickets)."""
    api_url = f"http://{chain['register'].address('http')}"
    alice, alice_token = await _user(api_url)
    bob, bob_token = await _user(api_url)
    bob_inbox = Inbox()
    bodies = [f"burst {n}" for n in range(20)]
    async with _client(chain, alice, alice_token, Inbox()) as alice_client:
        acks = await asyncio.gather(*(alice_client.send_p2p(bob, body, msg_id=body) for body in bodies))
    assert [ack.msg_id for ack in acks] == bodies
    assert [ack.version for ack in acks] == sorted({ack.version for ack in acks})
    async with _client(chain, bob, bob_token, bob_inbox) as bob_client:
        received = await synced(bob_client, bob_inbox, len(bodies))
    assert [m.body for m in received] == bodies


async def test_internal_rpcs_refuse_bad_fields(chain: dict[str, RunningRole]) -> None:
    """Every role checks the fields of what other roles send it; a bad one is a refusal, not a crash."""
    calls: list[tuple[str, str, Any, Any]] = [
        ("logic", "Login", logic_pb2_grpc.LogicRPCStub, logic_pb2.LoginReq(UID=0, token="t", device="d")),
        ("logic", "Ping", logic_pb2_grpc.LogicRPCStub, logic_pb2.PingReq(UID=-4, device="d")),
        (
            "logic",
            "SendP2PMsg",
            logic_pb2_grpc.LogicRPCStub,
            logic_pb2.SendP2PMsgReq(sourceUID=7, targetUID=0, msgID="m", msgType="p2p", msg="x", device="d"),
        ),
        (
            "logic",
            "SendGroupMsg",
            logic_pb2_grpc.LogicRPCStub,
            logic_pb2.SendGroupMsgReq(sourceUID=7, groupID=3, msgID="m" * 500, msgType="group", msg="x"),
        ),
        ("manager", "Sync", manager_pb2_grpc.ManagerServerRPCStub, manager_pb2.MGSyncMsgReq(UID=0)),
        (
            "manager",
            "LatestVersion",
            manager_pb2_grpc.ManagerServerRPCStub,
            manager_pb2.MGLatestVersionReq(UID=-1),
        ),
        (
            "notify",
            "Notify",
            notify_pb2_grpc.NotifyServerRPCStub,
            notify_pb2.NFNotifyMsgReq(targetUID=5, version=0),
        ),
    ]
    for role, method, stub_type, request in calls:
        async with grpc.aio.insecure_channel(chain[role].address()) as channel:
            response = await getattr(stub_type(channel), method)(request, timeout=5)
        assert response.errCode in (ErrCode.INVALID_FIELD, ErrCode.REQUEST_ERR), (role, method, response)


async def test_logic_ping_many_answers_each_ping_in_order(chain: dict[str, RunningRole]) -> None:
    """PingMany through logic to register: each ping answered in request order, a session replaced on
    another node refused alone (NOT_LOGGED_IN), a bad node refused alone, too many refused whole."""
    api_url = f"http://{chain['register'].address('http')}"
    alice, alice_token = await _user(api_url)
    bob, bob_token = await _user(api_url)
    here = {"nodeID": "access-ping-1", "accessAddr": "127.0.0.1:1"}
    there = {"nodeID": "access-ping-2", "accessAddr": "127.0.0.1:2"}
    async with grpc.aio.insecure_channel(chain["logic"].address()) as channel:
        logic = logic_pb2_grpc.LogicRPCStub(channel)
        for uid, token in ((alice, alice_token), (bob, bob_token)):
            login = await logic.Login(
                logic_pb2.LoginReq(UID=uid, token=token, device="phone", **here), timeout=10
            )
            assert login.errCode == 0
        # bob's phone logs in on the other node: this node's session of it is stale from now on.
        moved = await logic.Login(
            logic_pb2.LoginReq(UID=bob, token=bob_token, device="phone", **there), timeout=10
        )
        assert moved.errCode == 0
        pings = [
            logic_pb2.PingReq(UID=alice, device="phone", **here),
            logic_pb2.PingReq(UID=bob, device="phone", **here),
            logic_pb2.PingReq(UID=alice, device="phone", nodeID="n\x00", accessAddr="a:1"),
            logic_pb2.PingReq(UID=bob, device="phone", **there),
        ]
        answer = await logic.PingMany(logic_pb2.PingManyReq(pings=pings), timeout=10)
        assert answer.errCode == 0
        assert [r.errCode for r in answer.results] == [0, ErrCode.NOT_LOGGED_IN, ErrCode.INVALID_FIELD, 0]
        too_many = await logic.PingMany(logic_pb2.PingManyReq(pings=pings[:1] * 1025), timeout=10)
        assert too_many.errCode == ErrCode.INVALID_FIELD and not too_many.results
        assert (await logic.PingMany(logic_pb2.PingManyReq(), timeout=10)).errCode == 0
    async with grpc.aio.insecure_channel(chain["register"].address()) as channel:
        register = register_pb2_grpc.RegisterServerRPCStub(channel)
        routes = await register.Routes(register_pb2.RGRoutesReq(UID=bob), timeout=10)
        assert [(r.device, r.nodeID) for r in routes.routes] == [("phone", there["nodeID"])]
        too_many_rg = await register.PingMany(
            register_pb2.RGPingManyReq(
                pings=[register_pb2.RGPingReq(UID=alice, device="phone", **here)] * 1025
            ),
            timeout=10,
        )
        assert too_many_rg.errCode == ErrCode.INVALID_FIELD


async def test_logic_send_many_answers_each_send_in_order(chain: dict[str, RunningRole]) -> None:
    """SendMany: every send answered in request order, each sender's sends stored in request order,
    a bad item refused alone, a retry answered with the first result, too many sends refused whole."""
    api_url = f"http://{chain['register'].address('http')}"
    alice, _ = await _user(api_url)
    bob, _ = await _user(api_url)

    def p2p(source: int, target: int, n: int, msg_type: str = "p2p") -> logic_pb2.SendItem:
        return logic_pb2.SendItem(
            p2p=logic_pb2.SendP2PMsgReq(
                sourceUID=source, targetUID=target, msgID=f"many-{n}", msgType=msg_type, msg=f"{source} #{n}"
            )
        )

    items = [p2p(alice, bob, n) if n % 2 else p2p(bob, alice, n) for n in range(10)]
    items.insert(3, p2p(alice, bob, 99, msg_type="group"))  # the wrong kind: refused alone
    items.insert(5, logic_pb2.SendItem())  # neither p2p nor group
    items.append(p2p(alice, bob, 1))  # a retry of a send earlier in the same request
    async with grpc.aio.insecure_channel(chain["logic"].address()) as channel:
        logic = logic_pb2_grpc.LogicRPCStub(channel)
        answer = await logic.SendMany(logic_pb2.SendManyReq(sends=items), timeout=10)
        assert answer.errCode == 0 and len(answer.results) == len(items)
        codes = [r.errCode for r in answer.results]
        assert codes[3] == codes[5] == ErrCode.INVALID_FIELD
        acks = [r for n, r in enumerate(answer.results) if n not in (3, 5, len(items) - 1)]
        assert all(r.errCode == 0 and r.version > 0 and r.serverMsgID > 0 for r in acks)
        # The retry of alice's many-1 (item 1) in the same request: "in progress" if it met its first
        # attempt in one batch, else that attempt's result; asked again, the first result.
        first, retry = answer.results[1], answer.results[-1]
        assert retry.errCode == ErrCode.REQUEST_IN_PROGRESS or (retry.duplicate, retry.version) == (
            True,
            first.version,
        )
        again = await logic.SendMany(logic_pb2.SendManyReq(sends=[p2p(alice, bob, 1)]), timeout=10)
        assert (again.results[0].duplicate, again.results[0].version) == (True, first.version)
        too_many = await logic.SendMany(logic_pb2.SendManyReq(sends=[p2p(alice, bob, 0)] * 1025), timeout=10)
        assert too_many.errCode == ErrCode.INVALID_FIELD and not too_many.results

        async def stored() -> list[str]:
            page = await logic.SyncMsg(logic_pb2.SyncMsgReq(UID=bob, currentID=0), timeout=5)
            return [m.msg for m in page.Msgs if m.sourceUID == alice]

        await eventually(lambda: _has_all(stored, 5), timeout_s=20)
        assert await stored() == [f"{alice} #{n}" for n in (1, 3, 5, 7, 9)]


async def _has_all(read: Any, count: int) -> bool:
    return len(await read()) >= count
