"""What the `fishchat` subcommands share: server address options, credentials, exit codes, output.

Credentials come from `--token` or `--password` (or the variables FISHCHAT_TOKEN and
FISHCHAT_PASSWORD, which keep secrets out of the process list), and, on a terminal, from a prompt.
A token made from a password just for one command is revoked when the command ends.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fishchat.client.chat import ChatClient
from fishchat.client.errors import (
    ApiError,
    ApiUnavailable,
    ClientClosed,
    ClientError,
    ConnectionLost,
    RequestTimeout,
)
from fishchat.client.gateway import DEFAULT_GATEWAY
from fishchat.client.http import DEFAULT_API, ApiClient
from fishchat.client.reconnect import ClientState
from fishchat.client.records import Endpoint

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

TOKEN_ENV = "FISHCHAT_TOKEN"
PASSWORD_ENV = "FISHCHAT_PASSWORD"


class UsageError(ClientError):
    """The command line is incomplete or contradictory (exit 2)."""


def exit_code_for(error: ClientError) -> int:
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, ConnectionLost | ApiUnavailable | RequestTimeout | ClientClosed):
        return EXIT_UNREACHABLE
    return EXIT_REFUSED


def positive_int(text: str) -> int:
    """argparse type: an id (1 or more)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive id")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def endpoint(text: str) -> Endpoint:
    """argparse type: host:port."""
    try:
        return Endpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def api_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// address")
    return text.rstrip("/")


def add_api_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        type=api_url,
        default=os.environ.get("FISHCHAT_API", DEFAULT_API),
        metavar="URL",
        help=f"HTTP API address (default: $FISHCHAT_API or {DEFAULT_API})",
    )


def add_gateway_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateway",
        type=endpoint,
        default=os.environ.get("FISHCHAT_GATEWAY", str(DEFAULT_GATEWAY)),
        metavar="HOST:PORT",
        help=f"gateway that picks the access server (default: $FISHCHAT_GATEWAY or {DEFAULT_GATEWAY})",
    )
    parser.add_argument(
        "--access",
        type=endpoint,
        metavar="HOST:PORT",
        help="connect to this access server directly instead of asking the gateway",
    )
    parser.add_argument(
        "--device",
        default="",
        help="name of this device (default: the single default device of the user)",
    )


def add_credential_options(parser: argparse.ArgumentParser, *, uid_required: bool) -> None:
    parser.add_argument(
        "--uid",
        type=positive_int,
        required=uid_required,
        help="your user id" + ("" if uid_required else " (needed with --password)"),
    )
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--token", help=f"a token from `fishchat user auth` (or set ${TOKEN_ENV})")
    secret.add_argument(
        "--password",
        help=f"your password, to get a token for this command (or set ${PASSWORD_ENV}; "
        "prompted on a terminal)",
    )


def password_from(args: argparse.Namespace, *, prompt: str = "Password: ") -> str:
    """The password given on the command line, in the environment, or typed at a prompt."""
    password: str | None = getattr(args, "password", None) or os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if sys.stdin.isatty():
        try:
            typed = getpass.getpass(prompt)
        except EOFError:
            typed = ""
        if typed:
            return typed
    raise UsageError(f"give --password (or set ${PASSWORD_ENV})")


@dataclass(frozen=True)
class Credentials:
    uid: int | None
    token: str
    #: The token was made from the password for this command alone: revoke it at the end.
    temporary: bool


async def credentials(args: argparse.Namespace) -> Credentials:
    """A token for the command: --token / $FISHCHAT_TOKEN, or one obtained with the password."""
    uid: int | None = getattr(args, "uid", None)
    token: str | None = args.token or (None if args.password else os.environ.get(TOKEN_ENV))
    if token:
        return Credentials(uid, token, temporary=False)
    if uid is None:
        raise UsageError(f"give --token (or set ${TOKEN_ENV}), or --uid with --password")
    password = password_from(args)
    async with ApiClient(args.api) as api:
        token = await api.auth(uid, password)
    return Credentials(uid, token, temporary=True)


@asynccontextmanager
async def authenticated_api(args: argparse.Namespace) -> AsyncIterator[ApiClient]:
    """An ApiClient holding the command's token; a temporary token is revoked on the way out."""
    creds = await credentials(args)
    async with ApiClient(args.api, token=creds.token) as api:
        try:
            yield api
        finally:
            if creds.temporary:
                await revoke_quietly(api)


async def revoke_quietly(api: ApiClient) -> None:
    """Revoke the API client's token; a failure only costs a token that expires by itself."""
    try:
        await api.logout()
    except (ApiError, ApiUnavailable) as exc:
        print(f"fishchat: warning: could not revoke the temporary token: {exc}", file=sys.stderr)


def emit(args: argparse.Namespace, text: str, record: dict[str, Any]) -> None:
    """One result line on stdout: `text` normally, `record` as JSON with --json."""
    if getattr(args, "json", False):
        print(json.dumps(record, ensure_ascii=False), flush=True)
    else:
        print(text, flush=True)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print results as JSON, one object per line")


def chat_client(args: argparse.Namespace, creds: Credentials, **options: Any) -> ChatClient:
    """A ChatClient for the command's user, gateway or access address, and device."""
    if creds.uid is None:
        raise UsageError("give --uid")
    return ChatClient(
        creds.uid,
        creds.token,
        device=args.device,
        gateway=args.gateway,
        access=args.access,
        **options,
    )


async def end_session(client: ChatClient, creds: Credentials) -> None:
    """Log out when the token was made for this command (which revokes it), else just close."""
    if creds.temporary and client.state is ClientState.ONLINE:
        try:
            await client.logout()
        except ClientError as exc:
            print(f"fishchat: warning: logout failed: {exc}", file=sys.stderr)
    await client.close()
