"""Roles of `fishchat serve` run in the test's own process (`serve_role` tasks), for tests that look
inside one role or a few; `fishchat.cluster` runs them as separate processes instead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fishchat.serve.config import ServeConfig
from fishchat.serve.runtime import serve_role
from tests.integration.harness import HOST


def flatten(tables: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings tables as the dotted keys `load_serve_config` takes as overrides."""
    flat: dict[str, Any] = {}
    for key, value in tables.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class RunningRole:
    """One role served by `serve_role` in this process until `stop` is set."""

    role: str
    config: ServeConfig
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ready: dict[str, Any] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 60.0) -> RunningRole:
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def on_ready(event: dict[str, Any]) -> None:
            if not started.done():
                started.set_result(event)

        self.task = asyncio.create_task(serve_role(self.role, self.config, self.stop, on_ready))
        waits: set[asyncio.Future[Any]] = {self.task, started}
        done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            if self.task in done:
                self.task.result()  # raises what stopped the role
            raise AssertionError(f"{self.role} not ready within {timeout_s}s")
        self.ready = started.result()
        return self

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout_s)

    def address(self, kind: str = "grpc") -> str:
        return f"{HOST}:{self.ready[kind]}"


@contextlib.asynccontextmanager
async def running(role: str, config: ServeConfig) -> AsyncIterator[RunningRole]:
    served = await RunningRole(role, config).start()
    try:
        yield served
    finally:
        await served.shutdown()
