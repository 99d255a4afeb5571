"""`fishchat user register|auth|logout`: accounts and tokens over the HTTP API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Coroutine
from typing import Any

from fishchat.cli.common import (
    EXIT_OK,
    TOKEN_ENV,
    UsageError,
    add_api_option,
    add_json_option,
    emit,
    password_from,
    positive_int,
)
from fishchat.client.http import ApiClient


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = subparsers.add_parser(
        "user",
        help="create an account, get or revoke a login token",
        description="Accounts and tokens, over the HTTP API.",
    )
    commands = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")

    reg = commands.add_parser(
        "register",
        help="create an account",
        description="Create the account UID with a unique NAME and a password.",
    )
    reg.add_argument("--uid", type=positive_int, required=True, help="the new user's id")
    reg.add_argument("--name", required=True, help="the new user's unique name")
    reg.add_argument("--password", help="the password (or set $FISHCHAT_PASSWORD; prompted on a terminal)")
    add_api_option(reg)
    add_json_option(reg)
    reg.set_defaults(handler=_register)

    auth = commands.add_parser(
        "auth",
        help="print a login token",
        description=f"Check the password and print a new login token (use it with --token or ${TOKEN_ENV}).",
    )
    auth.add_argument("--uid", type=positive_int, required=True, help="your user id")
    auth.add_argument("--password", help="your password (or set $FISHCHAT_PASSWORD; prompted on a terminal)")
    add_api_option(auth)
    add_json_option(auth)
    auth.set_defaults(handler=_auth)

    logout = commands.add_parser(
        "logout",
        help="revoke a login token",
        description="Revoke a token: it can no longer log in or call the API.",
    )
    logout.add_argument("--token", help=f"the token to revoke (or set ${TOKEN_ENV})")
    add_api_option(logout)
    add_json_option(logout)
    logout.set_defaults(handler=_logout)


def _register(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        password = password_from(args, prompt="New password: ")
        async with ApiClient(args.api) as api:
            await api.register(args.uid, args.name, password)
        emit(args, f"registered user {args.uid} ({args.name})", {"uid": args.uid, "name": args.name})
        return EXIT_OK

    return run()


def _auth(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        password = password_from(args)
        async with ApiClient(args.api) as api:
            token = await api.auth(args.uid, password)
        emit(args, token, {"uid": args.uid, "token": token})
        return EXIT_OK

    return run()


def _logout(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    async def run() -> int:
        token = args.token or os.environ.get(TOKEN_ENV)
        if not token:
            raise UsageError(f"give --token (or set ${TOKEN_ENV})")
        async with ApiClient(args.api, token=token) as api:
            await api.logout()
        if args.json:
            emit(args, "", {"revoked": True})
        else:
            print("token revoked", file=sys.stderr)
        return EXIT_OK

    return run()
