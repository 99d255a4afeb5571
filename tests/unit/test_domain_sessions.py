"""Sessions over the embedded backend: login, several devices on several access nodes, ping and
route expiry, a device moving to another node, disconnect, logout, and gateway choice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fishchat.domain import AccessNode, ChatService, ChatSettings, ManualClock, Notice, ServiceInstance
from fishchat.domain.errors import (
    BadToken,
    InvalidField,
    NoAccessServer,
    NoSuchUser,
    NotLoggedIn,
    NoToken,
    TooManyDevices,
)
from fishchat.domain.passwords import ScryptParams
from fishchat.domain.settings import ORIGINAL_LEGACY_SALT
from fishchat.domain.tokens import legacy_token
from fishchat.embedded import EmbeddedBackend
from fishchat.errcodes import ErrCode

SETTINGS = ChatSettings(scrypt=ScryptParams(log2_n=4), route_ttl_s=30)
ALICE, BOB = 1, 2
NODE_A = AccessNode("access-a", "127.0.0.1:20001")
NODE_B = AccessNode("access-b", "127.0.0.1:20002")


class Inboxes:
    """Notices received per access node, as the access servers would push them."""

    def __init__(self, backend: EmbeddedBackend) -> None:
        self.by_node: dict[str, list[Notice]] = {}
        for node in (NODE_A, NODE_B):
            self.by_node[node.node_id] = []
            backend.notifier.attach(node.node_id, self._handler(node.node_id))

    def _handler(self, node_id: str) -> Callable[[Notice], Awaitable[None]]:
        async def handle(notice: Notice) -> None:
            self.by_node[node_id].append(notice)

        return handle

    def clear(self) -> None:
        for notices in self.by_node.values():
            notices.clear()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    async with await EmbeddedBackend.open(tmp_path, settings=SETTINGS, clock=ManualClock()) as opened:
        await opened.service.register(ALICE, "alice", "password-1")
        await opened.service.register(BOB, "bob", "password-1")
        yield opened


@pytest.fixture
def chat(backend: EmbeddedBackend) -> ChatService:
    return backend.service


@pytest.fixture
def inboxes(backend: EmbeddedBackend) -> Inboxes:
    return Inboxes(backend)


@pytest.fixture
def clock(chat: ChatService) -> ManualClock:
    assert isinstance(chat.clock, ManualClock)
    return chat.clock


async def login(chat: ChatService, uid: int, device: str, node: AccessNode) -> str:
    token = (await chat.auth(uid, "password-1")).token
    await chat.login(uid, token, device, node)
    return token


async def send_and_deliver(backend: EmbeddedBackend, msg_id: str) -> int:
    """Alice sends bob a message; returns bob's newest version once it is stored and notified."""
    await backend.service.send_p2p(ALICE, BOB, msg_id, "hi")
    assert await backend.drain(5)
    return await backend.service.latest_version(BOB)


async def test_login_returns_the_session(chat: ChatService, backend: EmbeddedBackend) -> None:
    await chat.send_p2p(ALICE, BOB, "m", "waiting for you")
    assert await backend.drain(5)
    issued = await chat.auth(BOB, "password-1")
    session = await chat.login(BOB, issued.token, "phone", NODE_A)
    assert (session.uid, session.device, session.node_id) == (BOB, "phone", "access-a")
    assert session.latest_version == 1
    assert session.token_expires_at_ms == issued.expires_at_ms
    assert await chat.is_online(BOB)


async def test_login_refusals(chat: ChatService) -> None:
    alice_token = (await chat.auth(ALICE, "password-1")).token
    with pytest.raises(NoToken):
        await chat.login(BOB, "", "phone", NODE_A)
    with pytest.raises(BadToken):
        await chat.login(BOB, alice_token, "phone", NODE_A)
    with pytest.raises(BadToken):
        await chat.login(BOB, "made-up", "phone", NODE_A)
    with pytest.raises(InvalidField):
        await chat.login(BOB, alice_token, "", NODE_A)
    assert not await chat.is_online(BOB)


async def test_legacy_login_requires_a_registered_user(backend: EmbeddedBackend) -> None:
    legacy = ChatService(
        backend.ports,
        ChatSettings(scrypt=SETTINGS.scrypt, legacy_token_salt=ORIGINAL_LEGACY_SALT),
        backend.service.clock,
    )
    session = await legacy.login(BOB, legacy_token(BOB, ORIGINAL_LEGACY_SALT), "legacy", NODE_A)
    assert session.uid == BOB
    with pytest.raises(NoSuchUser):
        await legacy.login(77, legacy_token(77, ORIGINAL_LEGACY_SALT), "legacy", NODE_A)


async def test_every_device_of_the_user_is_notified(
    chat: ChatService, backend: EmbeddedBackend, inboxes: Inboxes
) -> None:
    await login(chat, BOB, "phone", NODE_A)
    await login(chat, BOB, "laptop", NODE_B)
    await login(chat, BOB, "tablet", NODE_B)
    version = await send_and_deliver(backend, "m1")
    # One notice per node (a node pushes to all its connections of the user), none for the sender.
    assert inboxes.by_node == {"access-a": [Notice(BOB, version)], "access-b": [Notice(BOB, version)]}
    assert {r.device for r in await chat.presence.routes(BOB)} == {"phone", "laptop", "tablet"}


async def test_the_senders_other_devices_are_notified_of_its_own_copy(
    chat: ChatService, backend: EmbeddedBackend, inboxes: Inboxes
) -> None:
    await login(chat, ALICE, "laptop", NODE_B)
    result = await chat.send_p2p(ALICE, BOB, "from-phone", "hi")
    assert await backend.drain(5)
    assert inboxes.by_node["access-b"] == [Notice(ALICE, result.version)]


async def test_a_device_limit_refuses_one_more_device(backend: EmbeddedBackend, clock: ManualClock) -> None:
    chat = ChatService(
        backend.ports, ChatSettings(scrypt=SETTINGS.scrypt, route_ttl_s=30, max_devices=2), clock
    )
    await login(chat, BOB, "phone", NODE_A)
    await login(chat, BOB, "laptop", NODE_B)
    with pytest.raises(TooManyDevices, match="too many devices: uid 2 has 2 logged in") as refused:
        await login(chat, BOB, "tablet", NODE_A)
    assert refused.value.code == ErrCode.TOO_MANY_DEVICES == 93008
    await login(chat, BOB, "phone", NODE_B)  # a known device logging in again is no new device
    await login(chat, ALICE, "tablet", NODE_A)  # the limit is per user
    await chat.disconnect(BOB, "laptop", NODE_B.node_id)
    await login(chat, BOB, "tablet", NODE_A)  # a device that left frees its place
    clock.advance(SETTINGS.route_ttl_s * 1000)  # ... and so does one that went silent
    await login(chat, BOB, "watch", NODE_A)
    assert {r.device for r in await chat.presence.routes(BOB)} == {"watch"}


def test_the_device_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_devices"):
        ChatSettings(max_devices=0).validate()


async def test_routes_expire_without_ping(
    chat: ChatService, backend: EmbeddedBackend, inboxes: Inboxes, clock: ManualClock
) -> None:
    await login(chat, BOB, "phone", NODE_A)
    await login(chat, BOB, "laptop", NODE_B)
    for _ in range(3):
        clock.advance(20_000)
        await chat.ping(BOB, "phone", NODE_A)  # only the phone keeps pinging
    assert [r.device for r in await chat.presence.routes(BOB)] == ["phone"]
    await send_and_deliver(backend, "m1")
    assert inboxes.by_node["access-b"] == []
    assert len(inboxes.by_node["access-a"]) == 1
    clock.advance(SETTINGS.route_ttl_s * 1000)
    assert not await chat.is_online(BOB)


async def test_ping_recreates_a_route_presence_lost(chat: ChatService, backend: EmbeddedBackend) -> None:
    await login(chat, BOB, "phone", NODE_A)
    await backend.ports.presence.remove_route(BOB, "phone", NODE_A.node_id)  # e.g. Redis restarted
    assert not await chat.is_online(BOB)
    await chat.ping(BOB, "phone", NODE_A)
    assert [r.node_id for r in await chat.presence.routes(BOB)] == ["access-a"]


async def test_a_device_that_moved_to_another_node(
    chat: ChatService, backend: EmbeddedBackend, inboxes: Inboxes
) -> None:
    await login(chat, BOB, "phone", NODE_A)
    await login(chat, BOB, "phone", NODE_B)  # reconnected elsewhere (e.g. after a drain)
    with pytest.raises(NotLoggedIn):
        await chat.ping(BOB, "phone", NODE_A)  # the old connection learns it is stale
    await chat.disconnect(BOB, "phone", NODE_A.node_id)  # and its close does not remove the new route
    await send_and_deliver(backend, "m1")
    assert inboxes.by_node["access-a"] == []
    assert len(inboxes.by_node["access-b"]) == 1


async def test_disconnect_stops_notices(
    chat: ChatService, backend: EmbeddedBackend, inboxes: Inboxes
) -> None:
    await login(chat, BOB, "phone", NODE_A)
    await chat.disconnect(BOB, "phone", NODE_A.node_id)
    assert not await chat.is_online(BOB)
    await send_and_deliver(backend, "m1")
    assert inboxes.by_node == {"access-a": [], "access-b": []}


async def test_logout_revokes_the_token_and_drops_the_route(chat: ChatService) -> None:
    token = await login(chat, BOB, "phone", NODE_A)
    other_device_token = await login(chat, BOB, "laptop", NODE_B)
    await chat.logout(BOB, "phone", NODE_A.node_id, token)
    with pytest.raises(BadToken):
        await chat.login(BOB, token, "phone", NODE_A)
    assert [r.device for r in await chat.presence.routes(BOB)] == ["laptop"]
    await chat.logout(ALICE, "x", NODE_B.node_id, other_device_token)  # not alice's token: kept
    await chat.verify_token(other_device_token, BOB)


async def test_notices_for_many_users_run_concurrently(
    chat: ChatService, backend: EmbeddedBackend, inboxes: Inboxes
) -> None:
    await login(chat, BOB, "phone", NODE_A)
    await asyncio.gather(*(chat.send_p2p(ALICE, BOB, f"m{i}", "x") for i in range(20)))
    assert await backend.drain(5)
    notices = inboxes.by_node["access-a"]
    assert notices and max(n.version for n in notices) == 20


async def test_gateway_picks_the_least_loaded_access_server(backend: EmbeddedBackend) -> None:
    chat = backend.service
    with pytest.raises(NoAccessServer) as none:
        await chat.pick_access_server()
    assert none.value.code == 92001
    await backend.registry.register(
        ServiceInstance("access", "a", NODE_A.address, "127.0.0.1:11001", load=10)
    )
    await backend.registry.register(ServiceInstance("access", "b", NODE_B.address, "127.0.0.1:11002", load=3))
    assert (await chat.pick_access_server()).client_address == "127.0.0.1:11002"
    await backend.registry.set_load("access", "b", 50)
    assert (await chat.pick_access_server()).instance_id == "a"
