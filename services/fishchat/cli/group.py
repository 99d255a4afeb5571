"""`fishchat group create|join|quit|members|send`: groups over the HTTP API, group messages over TCP."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from typing import Any

from fishchat.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    UsageError,
    add_api_option,
    add_credential_options,
    add_gateway_options,
    add_json_option,
    authenticated_api,
    chat_client,
    credentials,
    emit,
    end_session,
    positive_int,
)
from fishchat.client.errors import InvalidRequest, RequestRefused


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "group",
        help="create, join, quit and list groups; send to a group",
        description="Groups: membership over the HTTP API, messages over the chat protocol. "
        "Every command acts as the user of the token (--token, or --uid with --password).",
    )
    commands = group.add_subparsers(dest="group_command", required=True, metavar="COMMAND")

    create = commands.add_parser(
        "create", help="create a group and print its id", description="Create a group; you become its member."
    )
    create.add_argument("--name", required=True, help="the group's name")
    _api_command(create, _create)

    for name, text, handler in (
        ("join", "join a group", _join),
        ("quit", "leave a group", _quit),
        ("members", "list a group's members", _members),
    ):
        command = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        command.add_argument("--gid", type=positive_int, required=True, help="the group id")
        _api_command(command, handler)

    send = commands.add_parser(
        "send",
        help="send a message to a group",
        description="Send MESSAGE to group GID and print the server's acknowledgement. Without MESSAGE, "
        "every line of stdin is sent as one message. You must be a member.",
    )
    send.add_argument("--gid", type=positive_int, required=True, help="the group id")
    send.add_argument("message", nargs="*", help="the message (words are joined with spaces)")
    send.add_argument("--msg-id", help="the client message id (reuse it to retry a send safely)")
    add_credential_options(send, uid_required=True)
    add_gateway_options(send)
    add_api_option(send)
    add_json_option(send)
    send.set_defaults(handler=_send)


def _api_command(parser: argparse.ArgumentParser, handler: Any) -> None:
    add_credential_options(parser, uid_required=False)
    add_api_option(parser)
    add_json_option(parser)
    parser.set_defaults(handler=handler)


def _create(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        async with authenticated_api(args) as api:
            gid = await api.create_group(args.name)
        emit(args, str(gid), {"gid": gid, "name": args.name})
        return EXIT_OK

    return run()


def _join(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        async with authenticated_api(args) as api:
            await api.join_group(args.gid)
        emit(args, f"joined group {args.gid}", {"gid": args.gid, "joined": True})
        return EXIT_OK

    return run()


def _quit(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        async with authenticated_api(args) as api:
            await api.quit_group(args.gid)
        emit(args, f"left group {args.gid}", {"gid": args.gid, "left": True})
        return EXIT_OK

    return run()


def _members(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        async with authenticated_api(args) as api:
            uids = await api.group_members(args.gid)
        if args.json:
            emit(args, "", {"gid": args.gid, "members": uids})
        else:
            for uid in uids:
                print(uid, flush=True)
        return EXIT_OK

    return run()


def _send(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        if args.message:
            bodies = [" ".join(args.message)]
        elif sys.stdin.isatty():
            raise UsageError("give the message, or pipe it on stdin")
        else:
            bodies = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        if args.msg_id and len(bodies) != 1:
            raise UsageError("--msg-id goes with exactly one message")
        creds = await credentials(args)
        client = chat_client(args, creds, auto_sync=False)
        failed = 0
        await client.connect()
        try:
            for body in bodies:
                try:
                    ack = await client.send_group(args.gid, body, msg_id=args.msg_id)
                except (RequestRefused, InvalidRequest) as exc:
                    failed += 1
                    print(f"fishchat: send to group {args.gid} failed: {exc}", file=sys.stderr)
                    continue
                emit(
                    args,
                    f"sent {ack.msg_id} to group {args.gid} (version {ack.version})",
                    {
                        "event": "sent",
                        "group": args.gid,
                        "msg_id": ack.msg_id,
                        "version": ack.version,
                        "server_msg_id": ack.server_msg_id,
                        "timestamp_ms": ack.timestamp_ms,
                    },
                )
        finally:
            await end_session(client, creds)
        return EXIT_REFUSED if failed else EXIT_OK

    return run()
