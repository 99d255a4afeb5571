"""`fishchat-stack up|down|status|env [component ...]`: real servers on loopback, for tests and by hand."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from fishchat.stack.base import StackError, stack_dir
from fishchat.stack.components import COMPONENTS, Stack
from fishchat.stack.images import build_and_report
from fishchat.stack.progress import ConsoleProgress, Heartbeat
from fishchat.stack.tools import TOOLS, ensure_tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fishchat-stack",
        description="Install, start and stop the real servers FishChat's tests use, on loopback. "
        f"Data and logs live under {stack_dir()}.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in [
        ("up", "install what is missing, start, and wait until every server answers"),
        ("down", "stop the servers"),
        ("status", "say which servers are running"),
        ("env", "print shell export lines pointing clients at the servers"),
    ]:
        cmd = sub.add_parser(command, help=text, description=text)
        cmd.add_argument(
            "components",
            nargs="*",
            metavar="component",
            help=f"any of: {', '.join(COMPONENTS)} (default: all)",
        )
    tools = sub.add_parser(
        "tools",
        help="build the command-line tools the tests use (cached), print name and path of each",
        description="Build what is missing from the Go module proxy (cached under FISHCHAT_CACHE) "
        "and print one `name path` line per tool.",
    )
    tools.add_argument("names", nargs="*", metavar="tool", help=f"any of: {', '.join(TOOLS)} (default: all)")
    images = sub.add_parser(
        "images",
        help="build FishChat's container images without a Docker daemon (make images), print their sizes",
        description="Build ghcr.io/fishchat/fishchat, ghcr.io/fishchat/fishchat-operator and the node's "
        "pause image with buildah (caches under FISHCHAT_CACHE).",
    )
    images.add_argument("--tag", action="append", default=[], help="an extra tag for both images")
    args = parser.parse_args(argv)
    try:
        if args.command == "images":
            return build_and_report(args.tag)
        if args.command == "tools":
            # A cold build takes minutes: say what is being built (a heartbeat, or a live status line).
            with ConsoleProgress() as progress, Heartbeat(progress, progress.heartbeat_s):
                built = ensure_tools(args.names or None)
            for name, path in built.items():
                print(f"{name} {path}")
            return 0
        stack = Stack(args.components or None)
        if args.command == "up":
            began = time.monotonic()
            with ConsoleProgress() as progress:
                started = stack.up(progress, heartbeat_s=progress.heartbeat_s)
            took = time.monotonic() - began
            print(
                f"up: started {', '.join(started) or 'nothing (all running)'} in {took:.1f}s", file=sys.stderr
            )
        elif args.command == "down":
            stack.down()
            print("down: stopped", file=sys.stderr)
        elif args.command == "status":
            states = stack.status()
            for name, running in states.items():
                print(f"{name:12} {'running' if running else 'stopped'}")
            return 0 if all(states.values()) else 3
        else:
            for key, value in stack.env().items():
                print(f"export {key}={shlex.quote(value)}")
    except StackError as exc:
        print(f"fishchat-stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
