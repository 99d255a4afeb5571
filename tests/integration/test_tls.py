"""TLS on the client listeners, end to end with real TLS clients: Python's ssl over TCP (raw frames and
the client library, through a TLS gateway), the `websockets` client over wss://, and HTTPS for the
API and the page. The certificate comes from files (a CA made for the test, `tests/certificates.py`)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from fishchat.client import ChatClient, ConnectionLost, Endpoint
from fishchat.proto.gen.external import access_pb2, error_pb2
from fishchat.protocol.commands import Cmd
from tests.certificates import Certificates, make_certificates
from tests.integration.harness import PASSWORD, TEST_CONFIG, ChatServer, Inbox, Wire, WsWire, new_uid

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def tls_server(server_factory: Callable[[str], ChatServer], certificates: Certificates) -> ChatServer:
    config = f"""
[tls]
cert_file = "{certificates.cert_file}"
key_file = "{certificates.key_file}"
{TEST_CONFIG}"""
    server = server_factory(config)
    server.start()
    return server


async def _user(server: ChatServer, context: ssl.SSLContext) -> tuple[int, str]:
    uid = new_uid()
    api = f"https://127.0.0.1:{server.ports['http']}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api}/x/user/register", data={"uid": uid, "name": f"u{uid}", "pw": PASSWORD}, ssl=context
        ) as r:
            assert (await r.json())["code"] == 0
        async with http.post(f"{api}/x/user/auth", data={"uid": uid, "pw": PASSWORD}, ssl=context) as r:
            return uid, str((await r.json())["data"]["token"])


async def test_tls_clients_over_tcp_and_websocket(tls_server: ChatServer, certificates: Certificates) -> None:
    context = certificates.client_context()
    alice, alice_token = await _user(tls_server, context)
    bob, bob_token = await _user(tls_server, context)
    # Raw frames over TLS: the same protocol inside.
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.ports["access"], ssl=context)
    wire = Wire(reader, writer)
    try:
        assert (await wire.login(alice, alice_token)).errCode == 0
        await wire.send(access_pb2.ReqPing(cmd=Cmd.PING, UID=alice))
        assert (await wire.reply(error_pb2.Error, Cmd.PING)).errCode == 0
    finally:
        await wire.close()
    # wss:// with the websockets client.
    ws = await WsWire.open(f"wss://localhost:{tls_server.ports['access_ws']}/ws", ssl=context)
    try:
        assert (await ws.login(bob, bob_token)).errCode == 0
    finally:
        await ws.close()
    # The client library: a TLS gateway hands out the access server (and its wss:// URL).
    gateway = Endpoint("127.0.0.1", tls_server.ports["gateway"])
    inbox = Inbox()
    async with (
        ChatClient(alice, alice_token, gateway=gateway, ssl=context, ping_interval=1.0) as on_tcp,
        ChatClient(bob, bob_token, gateway=gateway, ssl=context, websocket=True, on_message=inbox) as on_ws,
    ):
        await on_tcp.send_p2p(bob, "over TLS")
        await inbox.wait_bodies("over TLS")
        await on_ws.send_p2p(alice, "and back over wss")
    # The page is served over HTTPS too.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://localhost:{tls_server.ports['http']}/app/", ssl=context) as page,
    ):
        assert page.status in (200, 503)  # 503 only when the bundle is not built


async def test_plain_and_untrusting_clients_are_refused(
    tls_server: ChatServer, certificates: Certificates
) -> None:
    # Plain text at a TLS port: no frame is read as one; the connection ends, the server goes on.
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.ports["access"])
    writer.write(b"\x00\x05hello")
    await writer.drain()
    async with asyncio.timeout(15):
        assert await reader.read() == b""  # the server closed it
    writer.close()
    # A client that does not trust the server's CA refuses the server.
    with pytest.raises(ConnectionLost, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await ChatClient(
            1, "t" * 43, gateway=None, access=Endpoint("127.0.0.1", tls_server.ports["access"]),
            ssl=ssl.create_default_context(), backoff=None,
        ).connect()  # fmt: skip
    # Still serving.
    uid, token = await _user(tls_server, certificates.client_context())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tls_server.ports["access"], ssl=certificates.client_context()
    )
    wire = Wire(reader, writer)
    try:
        assert (await wire.login(uid, token)).errCode == 0
    finally:
        await wire.close()
