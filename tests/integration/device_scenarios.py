"""Several devices of one user, as the same scenarios on every profile (embedded, production in one
process, every role its own process with two access servers).

A device is a `ChatClient` of its own. "Original" devices send the login frame without a device
field, as every FishChatServer2 client does, each with its own token from `/x/user/auth` (as two
phones of one user have); "named" devices fill the field and share one token. Devices are spread
over the deployment's access servers (device n on access server n mod count), so on the cluster the
devices of one user sit on different access servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from fishchat.client import ApiClient, ChatClient, ChatMessage, Endpoint, SessionEnded
from fishchat.proto.gen.external import access_pb2, error_pb2
from fishchat.protocol.commands import Cmd, ErrCode, ReconnectReason
from tests.integration.harness import PASSWORD, Inbox, Wire, register


@dataclass(frozen=True)
class Deployment:
    api: str
    gateway: Endpoint
    access: Sequence[Endpoint]

    def access_of(self, device: int) -> Endpoint:
        return self.access[device % len(self.access)]


@dataclass
class Device:
    client: ChatClient
    inbox: Inbox
    token: str
    name: str


async def device_tokens(api: str, uid: int, count: int, *, named: bool) -> list[str]:
    """One token per original device (each authenticates on its own); named devices share one."""
    async with ApiClient(api) as http:
        if named:
            token = await http.auth(uid, PASSWORD)
            return [token] * count
        return [await http.auth(uid, PASSWORD) for _ in range(count)]


def device_client(
    deployment: Deployment, uid: int, token: str, n: int, name: str, inbox: Inbox, cursor: int = 0
) -> ChatClient:
    return ChatClient(
        uid,
        token,
        device=name,
        gateway=deployment.gateway,
        access=deployment.access_of(n),
        cursor=cursor,
        on_message=inbox,
        ping_interval=1.0,
        request_timeout=10.0,
    )


@contextlib.asynccontextmanager
async def devices_of(
    deployment: Deployment, uid: int, count: int, *, named: bool
) -> AsyncIterator[list[Device]]:
    tokens = await device_tokens(deployment.api, uid, count, named=named)
    devices: list[Device] = []
    try:
        for n, token in enumerate(tokens):
            name = f"device-{n}" if named else ""
            inbox = Inbox()
            client = device_client(deployment, uid, token, n, name, inbox)
            devices.append(Device(client, inbox, token, name))
            await client.connect()
        yield devices
    finally:
        for device in devices:
            await device.client.close()


def assert_all_online(devices: Sequence[Device]) -> None:
    for n, device in enumerate(devices):
        assert device.client.closed_error is None, f"device {n}: {device.client.closed_error}"
        assert device.client.access_endpoint is not None, f"device {n} is offline"


def assert_in_order_once(messages: Sequence[ChatMessage]) -> None:
    versions = [m.version for m in messages]
    assert versions == sorted(set(versions)), versions


async def every_device_receives_p2p_and_group(deployment: Deployment, count: int, *, named: bool) -> None:
    """Every device of a user gets p2p and group messages sent to the user, and what one device
    sends shows up on the others (the user's own timeline); none of them is pushed out."""
    alice, alice_token = await register(deployment.api)
    bob, bob_token = await register(deployment.api)
    carol, carol_token = await register(deployment.api)
    async with ApiClient(deployment.api, token=bob_token) as http:
        gid = await http.create_group("devices")
    for token in (alice_token, carol_token):
        async with ApiClient(deployment.api, token=token) as http:
            await http.join_group(gid)
    bob_inbox, carol_inbox = Inbox(), Inbox()
    async with (
        devices_of(deployment, alice, count, named=named) as devices,
        ChatClient(
            bob, bob_token, gateway=deployment.gateway, access=deployment.access_of(0), on_message=bob_inbox
        ) as bob_client,
        ChatClient(
            carol,
            carol_token,
            gateway=deployment.gateway,
            access=deployment.access_of(1),
            on_message=carol_inbox,
        ) as carol_client,
    ):
        await bob_client.send_p2p(alice, "p2p to every device")
        await carol_client.send_group(gid, "group to every device")
        for device in devices:
            await device.inbox.wait_bodies("p2p to every device", "group to every device")
        # What the last device sends reaches bob and the user's other devices (its own copy).
        ack = await devices[-1].client.send_p2p(bob, "from the last device")
        group_ack = await devices[0].client.send_group(gid, "group from device 0")
        await bob_inbox.wait_bodies("from the last device", "group from device 0")
        await carol_inbox.wait_bodies("group from device 0")
        for device in devices:
            received = await device.inbox.wait_bodies("from the last device", "group from device 0")
            own = {m.body: m for m in received}
            assert own["from the last device"].version == ack.version
            assert own["group from device 0"].version == group_ack.version
            assert own["group from device 0"].group_id == gid
            assert_in_order_once(received)
        assert_all_online(devices)


async def an_offline_device_catches_up(deployment: Deployment, *, named: bool) -> None:
    """One of three devices goes offline; the others keep receiving; when it comes back from its own
    cursor it gets exactly what it missed, and the others are not disturbed."""
    alice, _ = await register(deployment.api)
    bob, bob_token = await register(deployment.api)
    async with (
        devices_of(deployment, alice, 3, named=named) as devices,
        ChatClient(bob, bob_token, gateway=deployment.gateway, access=deployment.access_of(0)) as bob_client,
    ):
        await bob_client.send_p2p(alice, "before")
        for device in devices:
            await device.inbox.wait_bodies("before")
        away = devices[2]
        cursor = away.client.cursor
        assert cursor > 0
        await away.client.close()
        missed = [f"missed {n}" for n in range(3)]
        for body in missed:
            await bob_client.send_p2p(alice, body)
        await devices[0].client.send_p2p(bob, "sent by device 0 meanwhile")
        missed.append("sent by device 0 meanwhile")
        for device in devices[:2]:
            await device.inbox.wait_bodies(*missed)
        # Back, on a new connection, from the cursor it had: only what it missed, in order.
        back = Inbox()
        async with device_client(deployment, alice, away.token, 2, away.name, back, cursor=cursor) as client:
            received = await back.wait_for(lambda ms: len(ms) >= len(missed))
            await asyncio.sleep(0.3)  # nothing more arrives
            assert [m.body for m in back.messages] == missed
            assert_in_order_once(received)
            await bob_client.send_p2p(alice, "after")
            for inbox in (devices[0].inbox, devices[1].inbox, back):
                await inbox.wait_bodies("after")
            assert client.access_endpoint is not None
        assert_all_online(devices[:2])
        for device in devices[:2]:
            assert [m.body for m in device.inbox.messages] == ["before", *missed, "after"]


async def _login_ok(wire: Wire, uid: int, token: str, device: str) -> None:
    reply = await wire.login(uid, token, device)
    assert reply.errCode == 0, reply


async def a_device_logging_in_again_replaces_only_itself(deployment: Deployment, *, named: bool) -> None:
    """The same device logging in again ends its own older connection ("replaced"), on the same
    access server at once, on another one at the old connection's next ping; the user's other
    device is untouched and keeps getting notices."""
    alice, _ = await register(deployment.api)
    bob, bob_token = await register(deployment.api)
    first_token, second_token = await device_tokens(deployment.api, alice, 2, named=named)
    first_name, second_name = ("phone", "laptop") if named else ("", "")
    old = await Wire.open(deployment.access_of(0))
    other = await Wire.open(deployment.access_of(1))
    again = await Wire.open(deployment.access_of(1))
    try:
        await _login_ok(old, alice, first_token, first_name)
        await _login_ok(other, alice, second_token, second_name)
        await _login_ok(again, alice, first_token, first_name)
        if deployment.access_of(0) != deployment.access_of(1):
            # Another access server learns it at the old connection's next ping.
            await old.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
            assert (await old.reply(error_pb2.Error, Cmd.PING)).errCode == ErrCode.NOT_LOGGED_IN
        frames = await old.closed()
        reasons = [getattr(f.message, "reason", None) for f in frames if f.cmd == Cmd.RECONNECT]
        assert reasons == [ReconnectReason.REPLACED.value]
        for wire in (other, again):
            await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
            assert (await wire.reply(error_pb2.Error, Cmd.PING)).errCode == 0
        async with ChatClient(
            bob, bob_token, gateway=deployment.gateway, access=deployment.access_of(0)
        ) as bob_client:
            await bob_client.send_p2p(alice, "to both devices")
        for wire in (other, again):
            notice = await wire.reply(access_pb2.ResNotify, Cmd.NOTIFY, timeout_s=10.0, skip_notify=False)
            assert notice.currentID > 0
            entries = await wire.sync_all(alice)
            assert [e.msg for e in entries] == ["to both devices"]
    finally:
        for wire in (old, other, again):
            await wire.close()


async def one_device_too_many_is_refused(deployment: Deployment, limit: int) -> None:
    """With `limit` devices logged in, one more device is refused with 93008 on a connection that
    stays usable; a device that logs out makes room; a known device logging in again is no new device."""
    alice, _ = await register(deployment.api)
    async with devices_of(deployment, alice, limit, named=False) as devices:
        (extra_token,) = await device_tokens(deployment.api, alice, 1, named=False)
        extra = await Wire.open(deployment.access_of(limit))
        again = await Wire.open(deployment.access_of(limit + 1))
        try:
            refused = await extra.login(alice, extra_token)
            assert refused.errCode == ErrCode.TOO_MANY_DEVICES == 93008, refused
            assert refused.errStr.startswith("too many devices"), refused.errStr
            await devices[1].client.logout()
            await _login_ok(extra, alice, extra_token, "")
            # At the limit again: device 0 logging in anew replaces its own older connection.
            await _login_ok(again, alice, devices[0].token, "")
            ended = await asyncio.wait_for(devices[0].client.wait_closed(), 10.0)
            assert isinstance(ended, SessionEnded) and ended.reason == ReconnectReason.REPLACED.value
        finally:
            await extra.close()
            await again.close()
