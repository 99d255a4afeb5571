"""What every FishChat process shares for being watched and stopped: structured logs, metrics, health.

- Logs are one JSON object per line on stderr (`log.info("sent", extra={"uid": 7})` adds fields).
- Metrics live in one registry per process, served with `/metrics` by the admin HTTP server, which
  also answers `/healthz` (the process runs) and `/readyz` (every readiness check passes).
- `run_until_signalled` turns SIGTERM and SIGINT into a graceful shutdown of the main coroutine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter at INFO drowns the service's own lines.
    for noisy in ("aiokafka", "kafka", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


ReadinessCheck = Callable[[], Awaitable[bool]]


class AdminServer:
    """`/metrics`, `/healthz` and `/readyz` on their own port, apart from client traffic."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._checks: dict[str, ReadinessCheck] = {}
        self._draining = False
        self._runner: web.AppRunner | None = None

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    def mark_draining(self) -> None:
        """From now on /readyz fails, so load balancers stop sending new work."""
        self._draining = True

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the real one when 0 asked the OS to pick

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._draining:
            return web.json_response({"status": "draining"}, status=503)
        failed: list[str] = []
        for name, check in self._checks.items():
            try:
                ok = await asyncio.wait_for(check(), timeout=2.0)
            except Exception:
                ok = False
            if not ok:
                failed.append(name)
        if failed:
            return web.json_response({"status": "not ready", "failed": failed}, status=503)
        return web.json_response({"status": "ready"})


async def run_until_signalled(
    serve: Callable[[asyncio.Event], Awaitable[None]], log: logging.Logger | None = None
) -> None:
    """Run `serve(stop)`; SIGTERM or SIGINT sets `stop`, and `serve` drains and returns."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log = log or logging.getLogger("fishchat")

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("shutting down", extra={"signal": sig.name})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await serve(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
