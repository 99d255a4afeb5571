"""The operator's own settings (not a cluster's): resync period, timeouts, metrics port, autoscaling.

Read once from the environment (or built directly by tests), so every knob is visible in the
operator's Deployment manifest and nothing is read from the environment deep inside a reconcile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# prometheus-operator's Service for the Prometheus of kube-prometheus(-stack) in namespace monitoring.
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"


@dataclass(frozen=True)
class OperatorConfig:
    resync_seconds: float = 30.0
    """Full reconcile of every cluster at least this often (also how soon a broken backend is retried)."""
    backend_timeout_seconds: float = 10.0
    """Per-call timeout towards Kafka, HBase Thrift and Prometheus."""
    reclaim_retry_seconds: float = 15.0
    """Delay before retrying a failed topic/table deletion (the finalizer stays until it succeeds)."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9100
    """Port of /metrics; 0 turns the endpoint off."""
    kubeconfig: str | None = None
    """A kubeconfig to use instead of the in-cluster service account (or KUBECONFIG)."""
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    """Prometheus of clusters whose spec.autoscaling.prometheus.url is unset (the in-cluster default)."""
    autoscale_seconds: float = 5.0
    """How often access autoscaling reads the connection count and decides (per cluster)."""

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        default = OperatorConfig()

        def number(name: str, fallback: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return fallback
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None
            if value < 0:
                raise ValueError(f"{name}={raw!r} must not be negative")
            return value

        prometheus_url = env.get("FISHCHAT_OPERATOR_PROMETHEUS_URL") or default.prometheus_url
        if not prometheus_url.startswith(("http://", "https://")):
            raise ValueError(f"FISHCHAT_OPERATOR_PROMETHEUS_URL={prometheus_url!r} is not an http(s) URL")
        autoscale_seconds = number("FISHCHAT_OPERATOR_AUTOSCALE_SECONDS", default.autoscale_seconds)
        if autoscale_seconds <= 0:
            raise ValueError("FISHCHAT_OPERATOR_AUTOSCALE_SECONDS must be positive")
        return OperatorConfig(
            resync_seconds=number("FISHCHAT_OPERATOR_RESYNC_SECONDS", default.resync_seconds),
            backend_timeout_seconds=number(
                "FISHCHAT_OPERATOR_BACKEND_TIMEOUT_SECONDS", default.backend_timeout_seconds
            ),
            reclaim_retry_seconds=number(
                "FISHCHAT_OPERATOR_RECLAIM_RETRY_SECONDS", default.reclaim_retry_seconds
            ),
            metrics_host=env.get("FISHCHAT_OPERATOR_METRICS_HOST", default.metrics_host),
            metrics_port=int(number("FISHCHAT_OPERATOR_METRICS_PORT", default.metrics_port)),
            kubeconfig=env.get("FISHCHAT_OPERATOR_KUBECONFIG") or None,
            prometheus_url=prometheus_url,
            autoscale_seconds=autoscale_seconds,
        )
