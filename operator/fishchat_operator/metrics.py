"""Operator metrics for Prometheus: reconciles, errors by stage, durations and managed clusters.

A registry of its own (not prometheus-client's global one) so the operator can run inside another
process, such as the test session, without clashing with that process's metrics; it is served on
its own port by `handlers.py` at startup.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

REGISTRY: Final = CollectorRegistry(auto_describe=True)

RECONCILES: Final = Counter(
    "fishchat_operator_reconciles_total",
    "Reconcile passes, by trigger and result (ok, degraded, invalid, error).",
    ["trigger", "result"],
    registry=REGISTRY,
)
ERRORS: Final = Counter(
    "fishchat_operator_reconcile_errors_total",
    "Failures inside reconcile passes, by stage (apply, kafka, hbase, status, reclaim).",
    ["stage"],
    registry=REGISTRY,
)
DURATION: Final = Histogram(
    "fishchat_operator_reconcile_duration_seconds",
    "Wall time of one reconcile pass.",
    ["trigger"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
CLUSTERS: Final = Gauge(
    "fishchat_operator_clusters",
    "FishChatCluster objects the operator currently manages.",
    registry=REGISTRY,
)
READY: Final = Gauge(
    "fishchat_operator_cluster_ready",
    "1 when a cluster's Ready condition is True.",
    ["namespace", "name"],
    registry=REGISTRY,
)
ROLE_REPLICAS: Final = Gauge(
    "fishchat_operator_role_replicas",
    "Pods of each role of a cluster, by state: desired (the spec) and ready (passing readiness), "
    "as the operator last observed its Deployment.",
    ["namespace", "name", "role", "state"],
    registry=REGISTRY,
)


ACCESS_CONNECTIONS: Final = Gauge(
    "fishchat_operator_access_connections",
    "Logged-in connections over a cluster's access pods, as access autoscaling last read them.",
    ["namespace", "name"],
    registry=REGISTRY,
)
SCALINGS: Final = Counter(
    "fishchat_operator_access_scalings_total",
    "Access replica changes made by autoscaling, by direction (up, down).",
    ["direction"],
    registry=REGISTRY,
)
METRIC_ERRORS: Final = Counter(
    "fishchat_operator_autoscaling_metric_errors_total",
    "Connection counts autoscaling could not read, by reason (PrometheusUnavailable, InvalidQuery, "
    "MissingMetrics).",
    ["reason"],
    registry=REGISTRY,
)


async def serve(host: str, port: int) -> web.AppRunner:
    """Serve /metrics on host:port until the returned runner is cleaned up."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
