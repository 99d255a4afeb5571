"""`fishchat chat`: an interactive chat session on stdin and stdout.

Lines typed (or piped) on stdin are sent; messages are printed as they arrive by sync. The session
keeps running while stdin is open, so it works the same on a terminal, in a pipe, or from a file.

Line syntax: plain text goes to the default target (--to or --group); `@UID text` sends to a user and
`#GID text` to a group; `/quit` ends the session. Messages this session sent itself are not printed
again when its own copy syncs back; those sent from another device of the same user are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from fishchat.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    UsageError,
    add_api_option,
    add_credential_options,
    add_gateway_options,
    add_json_option,
    chat_client,
    credentials,
    end_session,
    non_negative_int,
    positive_int,
)
from fishchat.client.chat import ChatClient
from fishchat.client.errors import ClientError, InvalidRequest, RequestRefused
from fishchat.client.records import ChatMessage, SendAck

EPILOG = """\
line syntax on stdin:
  text         send text to the default target (--to or --group)
  @UID text    send text to user UID
  #GID text    send text to group GID
  /quit        end the session

examples:
  fishchat chat --uid 1 --password secret --to 2
  echo hello | fishchat chat --uid 1 --token "$TOKEN" --to 2
  fishchat chat --uid 2 --token "$TOKEN" --listen --json
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = subparsers.add_parser(
        "chat",
        help="chat interactively: send stdin lines, print received messages",
        description="Log in and chat: every line of stdin is sent, every message received is printed.\n"
        "Ends at end of input (after the sends are acknowledged and --wait seconds), at /quit,\n"
        "or on Ctrl-C; with --listen it only receives.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_credential_options(chat, uid_required=True)
    target = chat.add_mutually_exclusive_group()
    target.add_argument("--to", type=positive_int, metavar="UID", help="send plain lines to this user")
    target.add_argument("--group", type=positive_int, metavar="GID", help="send plain lines to this group")
    chat.add_argument("--listen", action="store_true", help="only receive; do not read stdin")
    chat.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="keep receiving this long after stdin ends (default 0; with --listen: until interrupted)",
    )
    chat.add_argument(
        "--cursor",
        type=non_negative_int,
        default=0,
        help="newest version you already have; older messages are not shown (default 0: show everything)",
    )
    chat.add_argument(
        "--ping-interval", type=float, default=10.0, metavar="SECONDS", help="heartbeat interval (default 10)"
    )
    add_gateway_options(chat)
    add_api_option(chat)
    add_json_option(chat)
    chat.set_defaults(handler=_chat)


@dataclass(frozen=True)
class Target:
    uid: int = 0
    gid: int = 0


def parse_line(line: str, default: Target | None) -> tuple[Target, str] | None:
    """The target and body of an input line; None for a blank line. UsageError if it has no target."""
    text = line.strip()
    if not text:
        return None
    if text[0] in "@#":
        head, _, body = text[1:].partition(" ")
        if head.isdigit() and int(head) > 0:
            target = Target(uid=int(head)) if text[0] == "@" else Target(gid=int(head))
            if not body.strip():
                raise UsageError(f"nothing to send after {text[0]}{head}")
            return target, body.strip()
    if default is None:
        raise UsageError("no target: start the line with @UID or #GID, or run with --to or --group")
    return default, text


def format_message(message: ChatMessage, me: int) -> str:
    stamp = (
        time.strftime("%H:%M:%S", time.localtime(message.timestamp_ms / 1000)) if message.timestamp_ms else ""
    )
    sender = "me" if message.source_uid == me else str(message.source_uid)
    if message.is_group:
        where = f"#{message.group_id} {sender}"
    else:
        receiver = "me" if message.target_uid == me else str(message.target_uid)
        where = f"{sender} -> {receiver}"
    return f"[{stamp}] {where}: {message.body}" if stamp else f"{where}: {message.body}"


def message_record(message: ChatMessage) -> dict[str, Any]:
    return {
        "event": "message",
        "version": message.version,
        "type": message.msg_type,
        "from": message.source_uid,
        "to": message.target_uid,
        "group": message.group_id,
        "msg_id": message.msg_id,
        "server_msg_id": message.server_msg_id,
        "timestamp_ms": message.timestamp_ms,
        "body": message.body,
    }


class StdinLines:
    """Lines of stdin delivered to the event loop by a daemon thread (works for ttys, pipes and files).

    A thread, because a terminal or a regular file cannot be watched by the event loop everywhere; a
    daemon, so a read still blocked at exit does not keep the process alive.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), name="fishchat-stdin", daemon=True).start()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for raw in sys.stdin.buffer:
                loop.call_soon_threadsafe(self._queue.put_nowait, raw.decode("utf-8", errors="replace"))
        except (OSError, ValueError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._queue.put_nowait, None)

    async def next(self) -> str | None:
        """The next line, or None at end of input."""
        return await self._queue.get()


class ChatSession:
    """Prints what arrives and sends what is typed, for one `fishchat chat` run."""

    def __init__(self, args: argparse.Namespace, uid: int) -> None:
        self.args = args
        self.uid = uid
        self.sent_ids: set[str] = set()
        self.failures = 0
        self.default = Target(uid=args.to) if args.to else Target(gid=args.group) if args.group else None

    def on_message(self, message: ChatMessage) -> None:
        if message.source_uid == self.uid and message.msg_id in self.sent_ids:
            self.sent_ids.discard(message.msg_id)  # our own copy of what this session sent
            return
        if self.args.json:
            print(json.dumps(message_record(message), ensure_ascii=False), flush=True)
        else:
            print(format_message(message, self.uid), flush=True)

    async def send_line(self, client: ChatClient, line: str) -> None:
        try:
            parsed = parse_line(line, self.default)
        except UsageError as exc:
            self.failures += 1
            print(f"fishchat: {exc}", file=sys.stderr, flush=True)
            return
        if parsed is None:
            return
        target, body = parsed
        try:
            if target.gid:
                ack = await client.send_group(target.gid, body)
            else:
                ack = await client.send_p2p(target.uid, body)
        except (RequestRefused, InvalidRequest) as exc:
            self.failures += 1
            where = f"group {target.gid}" if target.gid else f"user {target.uid}"
            print(f"fishchat: send to {where} failed: {exc}", file=sys.stderr, flush=True)
            return
        self.sent_ids.add(ack.msg_id)
        self.on_ack(ack, target)

    def on_ack(self, ack: SendAck, target: Target) -> None:
        if self.args.json:
            record = {
                "event": "sent",
                "to": target.uid,
                "group": target.gid,
                "msg_id": ack.msg_id,
                "version": ack.version,
                "server_msg_id": ack.server_msg_id,
                "timestamp_ms": ack.timestamp_ms,
            }
            print(json.dumps(record), flush=True)


def _chat(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    return _run_chat(args)


async def _run_chat(args: argparse.Namespace) -> int:
    if args.ping_interval <= 0:
        raise UsageError("--ping-interval must be positive")
    creds = await credentials(args)
    assert creds.uid is not None
    session = ChatSession(args, creds.uid)
    client = chat_client(
        args, creds, cursor=args.cursor, on_message=session.on_message, ping_interval=args.ping_interval
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await client.connect()
    if sys.stderr.isatty() and not args.json:
        print(f"fishchat: logged in as {creds.uid}; type messages, /quit to leave", file=sys.stderr)
    try:
        outcome = await _converse(args, client, session, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        await end_session(client, creds)
    if outcome is not None:
        raise outcome
    return EXIT_REFUSED if session.failures else EXIT_OK


async def _converse(
    args: argparse.Namespace, client: ChatClient, session: ChatSession, stop: asyncio.Event
) -> ClientError | None:
    """Run until input ends (plus --wait), /quit, a signal, or the client closes by itself.

    Returns the error that closed the client, if that is why it ended.
    """
    closed = asyncio.ensure_future(client.wait_closed())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        if not args.listen:
            lines = StdinLines()
            while True:
                next_line = asyncio.ensure_future(lines.next())
                done, _ = await asyncio.wait(
                    {next_line, closed, stopped}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_line not in done:
                    next_line.cancel()
                    return closed.result() if closed in done else None
                line = next_line.result()
                if line is None or line.strip() == "/quit":
                    if line is not None:
                        return None
                    break
                await session.send_line(client, line)
        wait = args.wait if args.wait is not None else (-1.0 if args.listen else 0.0)
        if wait != 0:
            # The client keeps syncing on notifies in the background; just wait here.
            await asyncio.wait(
                {closed, stopped}, timeout=None if wait < 0 else wait, return_when=asyncio.FIRST_COMPLETED
            )
        return closed.result() if closed.done() else None
    finally:
        closed.cancel()
        stopped.cancel()
