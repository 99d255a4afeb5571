"""The baseline of the chat benchmark: a bare uvloop relay speaking the same framing and commands.

It does the least a server can do for the client protocol and nothing more: no storage, no
durability, no versions, no authentication (any token logs in), no sync backlog. A p2p send is
forwarded at once to the target's connection as the original server's direct push
(`ResSendP2PMsg` carrying the body) and acked to the sender; login, ping, sync (always empty) and
logout get their usual replies, and `ReqAccessServer` is answered with the relay's own address, so
the benchmark's clients take the same gateway-then-access path against it as against FishChat.

    .venv/bin/python bench/relay.py --port 0     # prints {"event": "ready", "port": P} when listening
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from typing import cast

import uvloop
from google.protobuf.message import Message

from fishchat.proto.gen.external import access_pb2, error_pb2, gateway_pb2
from fishchat.protocol.codec import FrameDecoder, ProtocolError, encode_frame
from fishchat.protocol.commands import Cmd, ErrCode
from fishchat.protocol.frames import decode_request

OK = int(ErrCode.OK)


class Relay:
    """Who is connected as which uid, and the address to hand out for ReqAccessServer."""

    def __init__(self) -> None:
        self.sessions: dict[int, set[RelayConnection]] = {}
        self.address = ""


class RelayConnection(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.uid = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.uid:
            peers = self.relay.sessions.get(self.uid)
            if peers is not None:
                peers.discard(self)
                if not peers:
                    del self.relay.sessions[self.uid]
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except ProtocolError:
            if self.transport is not None:
                self.transport.close()
            return
        out: list[bytes] = []
        for payload in frames:
            try:
                cmd, message = decode_request(payload)
            except ProtocolError:
                continue
            reply = self.handle(cmd, message)
            if reply is not None:
                out.append(encode_frame(reply.SerializeToString()))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def handle(self, cmd: Cmd, message: Message) -> Message | None:
        if cmd == Cmd.SEND_P2P_MSG:
            assert isinstance(message, access_pb2.ReqSendP2PMsg)
            targets = self.relay.sessions.get(message.targetUID)
            if not targets:
                return access_pb2.ResSendP2PMsg(
                    cmd=Cmd.SEND_P2P_MSG,
                    errCode=ErrCode.NO_DATA,
                    errStr="target offline",
                    sourceUID=message.sourceUID,
                    targetUID=message.targetUID,
                    msgID=message.msgID,
                )
            push = encode_frame(
                access_pb2.ResSendP2PMsg(
                    cmd=Cmd.SEND_P2P_MSG,
                    errCode=OK,
                    errStr="ok",
                    sourceUID=message.sourceUID,
                    targetUID=message.targetUID,
                    msgID=message.msgID,
                    msg=message.msg,
                ).SerializeToString()
            )
            for target in targets:
                if target.transport is not None:
                    target.transport.write(push)
            return access_pb2.ResSendP2PMsg(
                cmd=Cmd.SEND_P2P_MSG,
                errCode=OK,
                errStr="ok",
                sourceUID=message.sourceUID,
                targetUID=message.targetUID,
                msgID=message.msgID,
            )
        if cmd == Cmd.PING:
            return error_pb2.Error(cmd=Cmd.PING, errCode=OK, errStr="ok")
        if cmd == Cmd.LOGIN:
            assert isinstance(message, access_pb2.ReqLogin)
            self.uid = message.UID
            self.relay.sessions.setdefault(self.uid, set()).add(self)
            return error_pb2.Error(cmd=Cmd.LOGIN, errCode=OK, errStr="ok")
        if cmd == Cmd.SYNC_MSG:
            assert isinstance(message, access_pb2.ReqSyncMsg)
            return access_pb2.ResSyncMsg(
                cmd=Cmd.SYNC_MSG, errCode=OK, errStr="ok", currentID=message.currentID
            )
        if cmd == Cmd.REQ_ACCESS_SERVER:
            return gateway_pb2.ResSelectAccessServerForClient(
                cmd=Cmd.REQ_ACCESS_SERVER, errCode=OK, errStr="ok", addr=self.relay.address
            )
        if cmd == Cmd.LOGOUT:
            if self.transport is not None:
                self.transport.write(
                    encode_frame(
                        access_pb2.ResLogout(cmd=Cmd.LOGOUT, errCode=OK, errStr="ok").SerializeToString()
                    )
                )
                self.transport.close()
            return None
        return None


async def serve(host: str, port: int) -> None:
    relay = Relay()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RelayConnection(relay), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    relay.address = f"{host}:{bound}"
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(json.dumps({"event": "ready", "port": bound, "pid": os.getpid()}), flush=True)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Bare uvloop relay with FishChat's framing (a benchmark baseline)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default 0: any free port)")
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.host, args.port))
    except OSError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
