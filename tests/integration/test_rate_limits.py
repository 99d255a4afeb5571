"""Rate limits end to end: per connection, per user and per client address; the limit, its error, its
recovery, and its metric. A server of its own with small buckets (`LIMITS`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import aiohttp
import pytest

from fishchat.proto.gen.external import access_pb2
from fishchat.protocol.commands import Cmd, ErrCode
from tests.integration.harness import PASSWORD, TEST_CONFIG, AnyWire, ChatServer, register
from tests.integration.test_chat_e2e import p2p

pytestmark = pytest.mark.timeout(60)

LIMITS = """
[chat.limits.connection_send]
per_s = 4.0
burst = 3

[chat.limits.user_send]
per_s = 4.0
burst = 5

[chat.limits.connection_login]
per_s = 4.0
burst = 2

[chat.limits.user_auth]
per_s = 2.0
burst = 3
"""
_RETRY = re.compile(r"retry after (\d+) ms")


@pytest.fixture(scope="module")
def limited(server_factory: Callable[[str], ChatServer]) -> ChatServer:
    server = server_factory(LIMITS + TEST_CONFIG)
    server.start()
    return server


async def _sends(
    wire: AnyWire, uid: int, target: int, prefix: str, count: int
) -> list[access_pb2.ResSendP2PMsg]:
    await wire.send(*(p2p(uid, target, f"{prefix}-{n}", "hi") for n in range(count)))
    return [await wire.reply(access_pb2.ResSendP2PMsg, Cmd.SEND_P2P_MSG) for _ in range(count)]


def _retry_after_s(text: str) -> float:
    match = _RETRY.search(text)
    assert match, text
    return int(match.group(1)) / 1000


async def _metric(server: ChatServer, action: str, scope: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{server.admin}/metrics") as response:
        text = await response.text()
    line = f'fishchat_rate_limited_total{{action="{action}",scope="{scope}"}} '
    return sum(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))


async def test_sends_per_connection_are_limited_and_recover(limited: ChatServer) -> None:
    alice, token = await register(limited.api)
    bob, _ = await register(limited.api)
    before = await _metric(limited, "send", "connection")
    wire = await limited.wire()
    try:
        assert (await wire.login(alice, token)).errCode == 0
        acks = await _sends(wire, alice, bob, "burst", 4)
        assert [a.errCode for a in acks] == [0, 0, 0, ErrCode.RATE_LIMITED]
        refused = acks[-1]
        assert refused.msgID == "burst-3" and "connection" in refused.errStr  # matched to its request
        await asyncio.sleep(_retry_after_s(refused.errStr) + 0.05)
        (again,) = await _sends(wire, alice, bob, "burst", 1)  # the same msgID, now taken
        assert again.errCode == 0
    finally:
        await wire.close()
    assert await _metric(limited, "send", "connection") >= before + 1


async def test_sends_per_user_count_every_connection(limited: ChatServer) -> None:
    alice, token = await register(limited.api)
    bob, _ = await register(limited.api)
    phone, laptop = await limited.wire(), await limited.wire()
    try:
        assert (await phone.login(alice, token, "phone")).errCode == 0
        assert (await laptop.login(alice, token, "laptop")).errCode == 0
        first = await _sends(phone, alice, bob, "phone", 3)
        second = await _sends(laptop, alice, bob, "laptop", 3)
        # Each connection had 3 tokens, the user 5: the sixth send is refused by the user's bucket.
        assert [a.errCode for a in first + second] == [0] * 5 + [ErrCode.RATE_LIMITED]
        assert "user" in second[-1].errStr
    finally:
        await phone.close()
        await laptop.close()


async def test_logins_per_connection(limited: ChatServer) -> None:
    alice, token = await register(limited.api)
    wire = await limited.wire()
    try:
        codes = [(await wire.login(alice, token)).errCode for _ in range(3)]
        assert codes == [0, 0, ErrCode.RATE_LIMITED]
    finally:
        await wire.close()


async def test_password_guessing_gets_429_with_retry_after(limited: ChatServer) -> None:
    uid, _ = await register(limited.api)  # one password check
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(f"{limited.api}/x/user/auth", data={"uid": uid, "pw": "wrong guess"}) as r:
                statuses.append(r.status)
                body = await r.json()
                retry_after = r.headers.get("Retry-After")
        assert statuses == [200, 200, 429]
        assert body["code"] == ErrCode.RATE_LIMITED and retry_after is not None and int(retry_after) >= 1
        # The right password waits its turn too; after the wait it works.
        await asyncio.sleep(_retry_after_s(body["detail"]) + 0.05)
        async with http.post(f"{limited.api}/x/user/auth", data={"uid": uid, "pw": PASSWORD}) as r:
            answer = await r.json()
        assert r.status == 200 and answer["code"] == 0 and answer["data"]["token"]
    assert await _metric(limited, "auth", "user") >= 1
