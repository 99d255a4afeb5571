"""Prometheus metrics of internal RPCs, both sides, labelled by method and outcome."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RpcMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.server_requests = Counter(
            "fishchat_rpc_server_requests",
            "RPCs answered, by method and errCode (0: success)",
            ["method", "code"],
            registry=registry,
        )
        self.server_seconds = Histogram(
            "fishchat_rpc_server_seconds",
            "Time spent answering an RPC",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.client_requests = Counter(
            "fishchat_rpc_client_requests",
            "RPCs made to other roles, by role, method and outcome (ok, refused, unavailable)",
            ["role", "method", "outcome"],
            registry=registry,
        )
        self.client_seconds = Histogram(
            "fishchat_rpc_client_seconds",
            "Time an RPC to another role took, retries included",
            ["role", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
