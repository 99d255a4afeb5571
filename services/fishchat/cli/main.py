"""Entry point of the `fishchat` command (`python -m fishchat` too): parse, dispatch, report errors.

Subcommands are registered by their modules (see `fishchat.cli`). `up` (all servers in one process)
is imported only when the parser is built, so the client commands do not pay for loading the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from fishchat import __version__
from fishchat.cli import chat, group, user
from fishchat.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for
from fishchat.client.errors import ClientError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fishchat",
        description="FishChat: chat from the command line, manage accounts and groups, run the servers.",
        epilog="Run `fishchat COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"fishchat {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more on stderr (-v info, -vv debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat.register(subparsers)
    user.register(subparsers)
    group.register(subparsers)
    from fishchat.cli import cluster, serve, up  # here, not at the top: the servers' commands

    up.register(subparsers)
    serve.register(subparsers)
    cluster.register(subparsers)
    return parser


def _run(result: Coroutine[Any, Any, int | None]) -> int | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(result)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="fishchat: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = handler(args)
        if inspect.iscoroutine(result):
            result = _run(result)
    except ClientError as exc:
        print(f"fishchat: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("fishchat: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed by a consumer such as `head`; nothing more to say.
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
