"""End to end over WebSocket: the session cases of `test_chat_e2e` again, with every client on a
WebSocket, plus what only a WebSocket has.

The cases run twice: on the access server's own WebSocket port (`ws`: `ChatClient` asks the gateway,
which hands out the WebSocket URL) and on `/ws` of the HTTP API's port (`http-ws`, the embedded
profile's same-origin path). The clients are the `websockets` library's. Left out are the cases about
TCP bytes (garbage and oversized length prefixes, a small receive buffer), the gateway and the HTTP
API and the admin endpoints; the WebSocket counterparts (text, empty and oversized messages) are here.
"""

from __future__ import annotations

import aiohttp
import pytest
from websockets.exceptions import InvalidStatus

from fishchat.client import ApiClient, ChatClient
from fishchat.proto.gen.external import access_pb2, base_pb2, error_pb2, gateway_pb2
from fishchat.protocol.commands import Cmd, ErrCode
from tests.integration import test_chat_e2e as tcp_cases
from tests.integration.harness import (
    ChatServer,
    Inbox,
    Wire,
    WsWire,
    chat_client,
    outcomes,
    register,
)

pytestmark = pytest.mark.timeout(60)

_TCP_ONLY = {
    "test_gateway_hands_out_the_access_server",
    "test_garbage_and_oversized_frames_close_only_that_connection",
    "test_a_client_that_does_not_read_is_dropped",
    "test_admin_endpoints",
}
for _name, _case in list(vars(tcp_cases).items()):  # in the order they are written
    if _name.startswith("test_") and _name not in _TCP_ONLY and "http" not in _name:
        globals()[_name] = _case


@pytest.fixture(scope="module", params=["ws", "http-ws"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_tcp_user_and_a_websocket_user_talk(chat_server: ChatServer) -> None:
    browser, browser_token = await register(chat_server.api)
    terminal, terminal_token = await register(chat_server.api)
    async with ApiClient(chat_server.api, token=browser_token) as api:
        gid = await api.create_group("mixed")
    async with ApiClient(chat_server.api, token=terminal_token) as api:
        await api.join_group(gid)
    browser_inbox, terminal_inbox = Inbox(), Inbox()
    async with (
        chat_client(chat_server, browser, browser_token, on_message=browser_inbox) as on_ws,
        ChatClient(
            terminal, terminal_token, gateway=chat_server.gateway, on_message=terminal_inbox
        ) as on_tcp,
    ):
        await on_ws.send_p2p(terminal, "from the browser")
        await on_tcp.send_p2p(browser, "from the terminal")
        await on_ws.send_group(gid, "group from the browser")
        await on_tcp.send_group(gid, "group from the terminal")
        expected = (
            "from the browser",
            "from the terminal",
            "group from the browser",
            "group from the terminal",
        )
        for inbox in (browser_inbox, terminal_inbox):
            received = await inbox.wait_bodies(*expected)
            assert [m.body for m in received if m.group_id] == list(expected[2:])


async def test_bad_messages_get_the_tcp_codes(chat_server: ChatServer) -> None:
    alice, alice_token = await register(chat_server.api)
    # A text message is no frame: 10003, then the WebSocket closes with 1002 (protocol error).
    text = await WsWire.open(chat_server.ws_url)
    await text.send_message("hello")
    assert outcomes(await text.closed()) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
    assert text.close_code == 1002
    # An empty binary message, and one that is no protobuf.
    for payload in (b"", b"\xff" * 11):
        wire = await WsWire.open(chat_server.ws_url)
        await wire.send_message(payload)
        assert outcomes(await wire.closed()) == [(Cmd.ERR_SERVER, ErrCode.MALFORMED_FRAME)]
    # A message over the frame limit (60000 in the test config) is refused as a frame over the limit
    # would be, without reading it (close 1009, message too big).
    huge = await WsWire.open(chat_server.ws_url)
    assert (await huge.login(alice, alice_token)).errCode == 0
    await huge.send_message(base_pb2.Base(cmd=Cmd.PING).SerializeToString() + b"\x00" * 70_000)
    assert outcomes(await huge.closed()) == [(Cmd.ERR_SERVER, ErrCode.FRAME_TOO_LARGE)]
    assert huge.close_code == 1009
    # An unknown command is answered and the connection stays, as over TCP.
    wire = await WsWire.open(chat_server.ws_url)
    try:
        await wire.send_message(base_pb2.Base(cmd=31337).SerializeToString())
        unknown = await wire.reply(error_pb2.Error, Cmd.ERR_SERVER)
        assert unknown.errCode == ErrCode.UNKNOWN_COMMAND
        assert (await wire.login(alice, alice_token)).errCode == 0
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        assert (await wire.reply(error_pb2.Error, Cmd.PING)).errCode == 0
    finally:
        await wire.close()


async def test_origin_check(chat_server: ChatServer) -> None:
    # A page of another site may not open a WebSocket (the default allows pages of this host only).
    with pytest.raises(InvalidStatus) as refused:
        await WsWire.open(chat_server.ws_url, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    # A page served from this host (the HTTP API's port) may, and so may a client that is no page.
    for origin in (f"http://127.0.0.1:{chat_server.ports['http']}", None):
        wire = await WsWire.open(chat_server.ws_url, origin=origin)
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=1))
        assert (await wire.reply(error_pb2.Error, Cmd.PING)).errCode == ErrCode.NOT_LOGGED_IN
        await wire.close()


async def test_clients_are_handed_the_websocket_url(chat_server: ChatServer) -> None:
    wire = await Wire.open(chat_server.gateway)
    try:
        await wire.send(gateway_pb2.ReqAccessServer(cmd=Cmd.REQ_ACCESS_SERVER))
        reply = await wire.reply(gateway_pb2.ResSelectAccessServerForClient, Cmd.REQ_ACCESS_SERVER)
    finally:
        await wire.close()
    assert reply.errCode == 0 and reply.wsURL == f"ws://127.0.0.1:{chat_server.ports['access_ws']}/ws"
    # Browsers ask the HTTP API; it serves WebSocket clients itself at /ws (same origin as the page).
    async with aiohttp.ClientSession() as http, http.post(f"{chat_server.api}/x/access/server") as response:
        answer = await response.json()
    assert answer["code"] == 0 and answer["data"] == {
        "addr": f"127.0.0.1:{chat_server.ports['access']}",
        "wsURL": "/ws",
    }
    # A plain GET of the WebSocket port is answered, not left hanging.
    async with (
        aiohttp.ClientSession() as http,
        http.get(chat_server.ws_url.replace("ws://", "http://")) as plain,
    ):
        assert plain.status == 426
