"""`fishchat cluster up`: every production role as its own process on this machine, supervised.

It runs `fishchat serve <role>` for gateway, logic, register, manager, notify, idgen, msg-job and
`--access N` access servers against the real servers (the stack's addresses, or `FISHCHAT_*`
variables, or `--config FILE`), each on free loopback ports with names of its own on the servers
(`fishchat.cluster`). Once every role is ready it prints one JSON line on stdout:

    {"event": "ready", "namespace": "3f2a...", "dir": ".../.stack/cluster/3f2a...",
     "gateway": "127.0.0.1:41234", "access": ["127.0.0.1:40111", "127.0.0.1:40112"],
     "http": "http://127.0.0.1:40500", "metrics": {"logic-0": "http://127.0.0.1:40600", ...},
     "grpc": {"logic-0": "127.0.0.1:40601", ...}, "pids": {"logic-0": 4242, ...}}

and runs until SIGTERM or SIGINT, restarting a role process that dies (with a capped backoff). Then
it stops the roles (access servers first: their clients are told to reconnect) and, unless the
namespace was named with `--namespace` or `--keep` is given, removes what the cluster wrote on the
servers. Each process's config and logs are in the run directory (`--dir`, default
`.stack/cluster/<namespace>` in the checkout). Exit status 2: bad settings; 1: a role did not start.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from fishchat.config import ConfigError

log = logging.getLogger("fishchat.cluster")

EXIT_CONFIG = 2
EXIT_START_FAILED = 1


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "cluster",
        help="run every role as its own process against the real servers (production profile)",
        description="Run a local multi-process FishChat cluster against the real servers.",
    )
    actions = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="start every role, print the addresses as one JSON line, supervise until SIGTERM/SIGINT",
        description=(
            "Start gateway, logic, register, manager, notify, idgen, msg-job and N access servers as "
            "separate `fishchat serve` processes on free ports, print their addresses as one JSON line, "
            "restart any that dies, and stop them all (access first) on SIGTERM/SIGINT."
        ),
    )
    up.add_argument("--access", type=int, default=2, metavar="N", help="access servers (default 2)")
    up.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="TOML settings for every role (ServeConfig)"
    )
    up.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="run directory (default .stack/cluster/<namespace>)",
    )
    up.add_argument(
        "--namespace",
        default=None,
        metavar="NAME",
        help="names on the servers (prefixes, topics, table, database); reuse one to keep data across "
        "runs (default: a fresh one, removed at exit)",
    )
    up.add_argument("--keep", action="store_true", help="keep a fresh namespace's data at exit")
    up.add_argument(
        "--ready-timeout", type=float, default=90.0, metavar="S", help="seconds a role may take to start"
    )
    up.set_defaults(handler=_up)


def _up(args: argparse.Namespace) -> int:
    from fishchat.cluster import Cluster, ClusterError, Namespace
    from fishchat.stack.base import stack_dir

    logging.getLogger("fishchat.cluster").setLevel(logging.INFO)
    if args.access < 1:
        print("fishchat cluster up: --access must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    try:
        namespace = Namespace(args.namespace) if args.namespace else Namespace.fresh()
    except ValueError as exc:
        print(f"fishchat cluster up: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    ephemeral = args.namespace is None and not args.keep
    run_dir = args.dir or stack_dir() / "cluster" / namespace.name
    stop = threading.Event()
    started = False

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if not started:
            # Still starting: abandon the start (Cluster.start stops what it launched).
            raise KeyboardInterrupt

    previous = {number: signal.signal(number, handle) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            cluster = Cluster(
                run_dir,
                access=args.access,
                config=args.config,
                namespace=namespace,
                fresh_database=True,
                ready_timeout_s=args.ready_timeout,
            )
            cluster.write_configs()
        except ConfigError as exc:
            print(f"fishchat cluster up: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            cluster.start()
        except BaseException as exc:
            if ephemeral:
                cluster.destroy()
            if isinstance(exc, KeyboardInterrupt):
                print("fishchat cluster up: interrupted while starting", file=sys.stderr)
                return 130
            if isinstance(exc, ClusterError | ConfigError):
                print(f"fishchat cluster up: {exc}", file=sys.stderr)
                return EXIT_START_FAILED
            raise
        started = True
        print(json.dumps(cluster.describe()), flush=True)
        try:
            cluster.supervise(stop)
        finally:
            log.info("stopping the cluster")
            codes = cluster.stop()
            log.info("stopped: %s", json.dumps(codes))
            if ephemeral:
                cluster.destroy()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
