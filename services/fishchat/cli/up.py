"""`fishchat up`: the whole chat system in one process (gateway, access, HTTP API, embedded storage).

Data lives in one directory (`--data-dir`, else $FISHCHAT_DATA_DIR, else `.data` in the current
directory) and survives restarts; a second process on the same directory is refused. Settings come
from `--config FILE` (TOML), then `FISHCHAT_<SECTION>_<KEY>` variables, then the flags. A port of 0
picks a free one; once every role listens, one JSON line is printed on stdout:

    {"event": "ready", "host": "127.0.0.1", "gateway": 10000, "access": 11000, "http": 6001,
     "admin": 6003, "data_dir": ".data", "pid": 4242}

Logs are JSON lines on stderr. SIGTERM or SIGINT drains (clients are told to reconnect, in-flight
sends are acked) and exits 0.

`--profile production` runs the same roles over the real servers instead of the data directory
(`fishchat.production.backend`): MariaDB, Redis, Kafka, HBase and etcd, found through the settings'
`[mysql]`, `[redis]`, `[kafka]`, `[hbase]` and `[etcd]` tables or `FISHCHAT_MYSQL_URL`,
`FISHCHAT_REDIS_URL`, `FISHCHAT_KAFKA_BOOTSTRAP`, `FISHCHAT_HBASE_THRIFT`, `FISHCHAT_ETCD_ENDPOINTS`.
Its ready line carries `"profile": "production"` instead of the data directory. A server that cannot
be reached at start is named on stderr and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fishchat.config import ConfigError, load_config

if TYPE_CHECKING:
    from fishchat.production.backend import ProductionSettings
    from fishchat.server.config import UpConfig

EXIT_CONFIG = 2
EXIT_DATA_DIR_IN_USE = 1
DATA_DIR_ENV = "FISHCHAT_DATA_DIR"
PROFILE_ENV = "FISHCHAT_PROFILE"
PROFILES = ("embedded", "production")
EXIT_BACKEND_UNAVAILABLE = 1


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not within 0..65535 (0: any free port)")
    return value


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="run every server role in one process (embedded storage)",
        description=(
            "Run gateway, access server, HTTP API and admin endpoints in one process, storing data in "
            "one directory. Port 0 picks a free port; the chosen ports are printed as one JSON line "
            '{"event":"ready",...} on stdout. SIGTERM/SIGINT drain and stop.'
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"data directory (default: ${DATA_DIR_ENV}, else .data in the current directory)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help=f"embedded (one data directory) or production (the real servers); default ${PROFILE_ENV}",
    )
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="TOML settings file")
    parser.add_argument("--host", default=None, help="address every role listens on (default 127.0.0.1)")
    parser.add_argument("--gateway-port", type=_port, default=None, metavar="PORT", help="gateway (10000)")
    parser.add_argument(
        "--access-port", type=_port, default=None, metavar="PORT", help="access server (11000)"
    )
    parser.add_argument(
        "--access-ws-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="access server's WebSocket port (default: the access port + 1; 0 with --access-port 0)",
    )
    parser.add_argument("--http-port", type=_port, default=None, metavar="PORT", help="HTTP API (6001)")
    parser.add_argument(
        "--admin-port", type=_port, default=None, metavar="PORT", help="/metrics /healthz /readyz (6003)"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default=None, help="log level (info)"
    )
    parser.set_defaults(handler=_up)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data_dir": str(args.data_dir) if args.data_dir is not None else None,
        "host": args.host,
        "gateway.port": args.gateway_port,
        "access.port": args.access_port,
        "access.ws_port": args.access_ws_port,
        "http.port": args.http_port,
        "admin.port": args.admin_port,
        "log_level": args.log_level,
    }


async def _up(args: argparse.Namespace) -> int:
    profile = args.profile or os.environ.get(PROFILE_ENV) or "embedded"
    if profile not in PROFILES:
        print(f"fishchat up: {PROFILE_ENV}={profile!r} is not one of {', '.join(PROFILES)}", file=sys.stderr)
        return EXIT_CONFIG
    if profile == "production":
        return await _up_production(args)
    return await _up_embedded(args)


async def _up_embedded(args: argparse.Namespace) -> int:
    # Imported here: the client commands of `fishchat` should not pay for loading every server role.
    from fishchat.embedded.backend import DataDirInUse
    from fishchat.observability import run_until_signalled, setup_logging
    from fishchat.server.app import Listening, run_embedded
    from fishchat.server.config import load_up_config

    try:
        config = load_up_config(args.config, os.environ, _overrides(args))
    except ConfigError as exc:
        print(f"fishchat up: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_level)
    log = logging.getLogger("fishchat.up")

    def ready(listening: Listening) -> None:
        print(json.dumps(listening.ready_event(str(config.data_dir))), flush=True)

    async def serve(stop: Any) -> None:
        await run_embedded(config, stop, ready)

    try:
        await run_until_signalled(serve, log)
    except DataDirInUse as exc:
        print(f"fishchat up: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR_IN_USE
    except OSError as exc:  # a port already in use, an unwritable data directory
        print(f"fishchat up: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR_IN_USE
    return 0


def _production_config_class() -> type[UpConfig]:
    """`UpConfig` plus `ProductionSettings`'s sections, as one dataclass for `load_config` (so the
    TOML file and the `FISHCHAT_<SECTION>_<KEY>` variables cover both)."""
    from fishchat.production.backend import ProductionSettings
    from fishchat.server.config import UpConfig

    @dataclass(frozen=True)
    class ProductionUpConfig(UpConfig, ProductionSettings):
        """Every role's settings and where the production servers are."""

    return ProductionUpConfig


def _production_settings(config: UpConfig) -> ProductionSettings:
    from fishchat.production.backend import ProductionSettings

    return ProductionSettings(**{f.name: getattr(config, f.name) for f in fields(ProductionSettings)})


async def _up_production(args: argparse.Namespace) -> int:
    from fishchat.observability import run_until_signalled, setup_logging
    from fishchat.production.backend import BackendUnavailable, ProductionBackend
    from fishchat.server.app import Listening, serve_backend

    overrides = _overrides(args)
    overrides.pop("data_dir")
    try:
        config = load_config(_production_config_class(), args.config, os.environ, overrides)
        settings = _production_settings(config)
    except ValueError as exc:  # ConfigError, or a range check outside a section's own __post_init__
        print(f"fishchat up: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_level)
    log = logging.getLogger("fishchat.up")

    def ready(listening: Listening) -> None:
        event = listening.ready_event("")
        del event["data_dir"]
        print(json.dumps({**event, "profile": "production"}), flush=True)

    async def serve(stop: Any) -> None:
        async with await ProductionBackend.open(settings, chat=config.chat) as backend:
            await serve_backend(config, backend, stop, backend.readiness_checks(), ready)

    try:
        await run_until_signalled(serve, log)
    except BackendUnavailable as exc:
        print(f"fishchat up: {exc}", file=sys.stderr)
        return EXIT_BACKEND_UNAVAILABLE
    except OSError as exc:  # a port already in use
        print(f"fishchat up: {exc}", file=sys.stderr)
        return EXIT_BACKEND_UNAVAILABLE
    return 0
