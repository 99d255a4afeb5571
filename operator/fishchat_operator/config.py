"""The operator's own settings (not a cluster's): resync period, timeouts, metrics port.

Read once from the environment (or built directly by tests), so every knob is visible in the
operator's Deployment manifest and nothing is read from the environment deep inside a reconcile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    resync_seconds: float = 30.0
    """Full reconcile of every cluster at least this often (also how soon a broken backend is retried)."""
    backend_timeout_seconds: float = 10.0
    """Per-call timeout towards Kafka and HBase Thrift."""
    reclaim_retry_seconds: float = 15.0
    """Delay before retrying a failed topic/table deletion (the finalizer stays until it succeeds)."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9100
    """Port of /metrics; 0 turns the endpoint off."""
    kubeconfig: str | None = None
    """A kubeconfig to use instead of the in-cluster service account (or KUBECONFIG)."""

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
        )
