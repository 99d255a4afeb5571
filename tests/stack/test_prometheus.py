"""Smoke: the stack's Prometheus scrapes a target this test serves, then answers a query about it."""

from __future__ import annotations

import asyncio
import socket
import uuid

import aiohttp
from prometheus_client import CollectorRegistry, Counter, start_http_server

from fishchat.stack.prometheus import add_scrape_target, remove_scrape_target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_scrape_and_query(stack_env: dict[str, str]) -> None:
    registry = CollectorRegistry()
    counter = Counter("fishchat_smoke_total", "Counts for the Prometheus smoke test", registry=registry)
    counter.inc(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    job = f"smoke-{uuid.uuid4().hex[:8]}"
    add_scrape_target(job, [f"127.0.0.1:{port}"])
    query = f'fishchat_smoke_total{{job="{job}"}}'
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(120):
                async with http.get(
                    f"{stack_env['FISHCHAT_PROMETHEUS_URL']}/api/v1/query", params={"query": query}
                ) as response:
                    body = await response.json()
                assert body["status"] == "success"
                if body["data"]["result"]:
                    break
                await asyncio.sleep(0.5)
        result = body["data"]["result"]
        assert len(result) == 1
        assert float(result[0]["value"][1]) == 42.0
    finally:
        remove_scrape_target(job)
        server.shutdown()
        thread.join(timeout=5)
