"""`fishchat serve <role>`: one role of the production profile as its own process.

Settings come from `--config FILE` (or $FISHCHAT_CONFIG), then `FISHCHAT_<SECTION>_<KEY>` variables
(`fishchat.serve.config`). Once the role listens and is announced in etcd, one JSON line
`{"event": "ready", "role": ..., "grpc": ..., "metrics": ..., "pid": ...}` is printed on stdout.
Logs are JSON lines on stderr. SIGTERM or SIGINT drains and exits 0. Exit status 2: bad settings;
1: a server (etcd, MariaDB, Redis, Kafka, HBase) could not be reached at start, or a port is taken.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fishchat.config import ConfigError
from fishchat.serve.config import ROLES

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1
CONFIG_ENV = "FISHCHAT_CONFIG"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run one server role as its own process (production profile)",
        description=(
            "Run one role (" + ", ".join(ROLES) + ") against the production servers, finding the other "
            "roles through etcd. Prints one JSON ready line on stdout; SIGTERM/SIGINT drain and stop."
        ),
    )
    parser.add_argument("role", choices=ROLES, help="the role to run")
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help=f"TOML settings (default ${CONFIG_ENV})"
    )
    parser.set_defaults(handler=_serve)


async def _serve(args: argparse.Namespace) -> int:
    from fishchat.observability import run_until_signalled, setup_logging
    from fishchat.production.backend import BackendUnavailable
    from fishchat.serve.config import load_serve_config
    from fishchat.serve.runtime import print_ready, serve_role

    path = args.config or os.environ.get(CONFIG_ENV) or None
    try:
        config = load_serve_config(args.role, path, os.environ)
    except ConfigError as exc:
        print(f"fishchat serve {args.role}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_level)
    log = logging.getLogger(f"fishchat.{args.role}")

    async def serve(stop: Any) -> None:
        await serve_role(args.role, config, stop, print_ready)

    try:
        await run_until_signalled(serve, log)
    except (BackendUnavailable, OSError) as exc:
        print(f"fishchat serve {args.role}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0
