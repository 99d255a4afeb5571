"""The admin endpoints and JSON log lines every service shares."""

from __future__ import annotations

import json
import logging

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from fishchat.observability import AdminServer, JsonFormatter


async def test_admin_server_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    Counter("fishchat_test_requests_total", "test counter", registry=registry).inc(3)
    admin = AdminServer(registry, "127.0.0.1", 0)
    ready = True

    async def check() -> bool:
        return ready

    admin.add_readiness_check("backend", check)
    await admin.start()
    base = f"http://127.0.0.1:{admin.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as response:
                assert "fishchat_test_requests_total 3.0" in await response.text()
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            ready = False
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["failed"] == ["backend"]
            ready = True
            admin.mark_draining()
            async with http.get(f"{base}/readyz") as response:
                assert (await response.json())["status"] == "draining"
    finally:
        await admin.stop()


def test_json_log_line_carries_extra_fields() -> None:
    record = logging.makeLogRecord({"name": "fishchat.access", "levelname": "INFO", "msg": "login %s"})
    record.args = ("ok",)
    record.uid = 7
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "login ok"
    assert line["uid"] == 7
    assert line["level"] == "info"
