"""Asking the gateway which access server to use (flow A of the original protocol).

One short connection: send `ReqAccessServer{cmd:10001}`, read `ResSelectAccessServerForClient`, close.
The original demo client left the gateway connection open; nothing needs it afterwards, so it is
closed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from dataclasses import dataclass

from fishchat.client.errors import ConnectionLost, ProtocolViolation, RequestRefused
from fishchat.client.records import Endpoint
from fishchat.proto.gen.external import gateway_pb2
from fishchat.protocol.codec import ProtocolError, read_frame, write_frame
from fishchat.protocol.commands import Cmd, ErrCode
from fishchat.protocol.frames import decode_reply

DEFAULT_GATEWAY = Endpoint("127.0.0.1", 10000)
_UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class AccessChoice:
    """The gateway's answer: an access server's TCP address and its WebSocket URL ("" if none)."""

    endpoint: Endpoint
    ws_url: str = ""


async def locate_access_server(
    gateway: Endpoint = DEFAULT_GATEWAY, *, within: float = 5.0, ssl: ssl_module.SSLContext | None = None
) -> Endpoint:
    """The client address of the access server the gateway picks for us (see `locate_access`)."""
    return (await locate_access(gateway, within=within, ssl=ssl)).endpoint


async def locate_access(
    gateway: Endpoint = DEFAULT_GATEWAY, *, within: float = 5.0, ssl: ssl_module.SSLContext | None = None
) -> AccessChoice:
    """The access server the gateway picks for us: its client address and WebSocket URL.

    Raises ConnectionLost if the gateway cannot be reached or does not answer within `within` seconds,
    RequestRefused (e.g. 92001 "no accessServer") if it has none to offer, ProtocolViolation if its
    answer makes no sense.
    """
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(gateway.host, gateway.port, ssl=ssl)
            try:
                await write_frame(
                    writer, gateway_pb2.ReqAccessServer(cmd=Cmd.REQ_ACCESS_SERVER).SerializeToString()
                )
                payload = await read_frame(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise ConnectionLost(f"the gateway {gateway} did not answer within {within:g}s") from None
    except OSError as exc:
        raise ConnectionLost(f"cannot reach the gateway {gateway}: {exc.strerror or exc}") from exc
    except ProtocolError as exc:
        raise ProtocolViolation(f"the gateway {gateway} sent a broken frame: {exc}") from exc
    if payload is None:
        raise ConnectionLost(f"the gateway {gateway} closed the connection without answering")
    try:
        frame = decode_reply(payload)
    except ProtocolError as exc:
        raise ProtocolViolation(f"the gateway {gateway} sent an unreadable answer: {exc}") from exc
    reply = frame.message
    if not isinstance(reply, gateway_pb2.ResSelectAccessServerForClient):
        code = getattr(reply, "errCode", ErrCode.SERVER_ERR)
        raise RequestRefused(code or ErrCode.SERVER_ERR, getattr(reply, "errStr", ""), cmd=frame.cmd)
    if reply.errCode != ErrCode.OK:
        raise RequestRefused(reply.errCode, reply.errStr, cmd=Cmd.REQ_ACCESS_SERVER)
    try:
        endpoint = Endpoint.parse(reply.addr)
    except ValueError as exc:
        raise ProtocolViolation(f"the gateway {gateway} answered an unusable address: {exc}") from exc
    if endpoint.host in _UNSPECIFIED_HOSTS:
        # The access server announced its bind address; it is reachable where the gateway is.
        endpoint = Endpoint(gateway.host, endpoint.port)
    return AccessChoice(endpoint, reply.wsURL)
