"""The Prometheus collectors of the server roles, registered in the process's one registry.

Label values are bounded: commands are named from the `Cmd` table (anything else is "unknown"),
result codes come from the `ErrCode` table, HTTP paths from the API's route list.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fishchat.protocol.commands import Cmd


def rate_limit_counter(registry: CollectorRegistry) -> Counter:
    """Requests refused by a rate limit, by what was asked and whose bucket was empty."""
    return Counter(
        "fishchat_rate_limited_total",
        "Requests refused by a rate limit (10007 or HTTP 429), by action and bucket scope",
        ["action", "scope"],
        registry=registry,
    )


def cmd_label(cmd: int | None) -> str:
    """A bounded label for a command id: its name, or "unknown"."""
    if cmd is None:
        return "none"
    try:
        return Cmd(cmd).name.lower()
    except ValueError:
        return "unknown"


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.connections = Gauge(
            "fishchat_connections", "Open client connections (TCP and WebSocket)", ["role"], registry=registry
        )
        self.sessions = Gauge(
            "fishchat_access_connections",
            "Logged-in client connections (one per device session) on this access server; the "
            "operator's access autoscaling sums it over the pods",
            registry=registry,
        )
        self.connections_accepted = Counter(
            "fishchat_connections_accepted_total", "Client connections accepted", ["role"], registry=registry
        )
        self.connections_refused = Counter(
            "fishchat_connections_refused_total",
            "Client connections refused because the server was full or draining",
            ["role"],
            registry=registry,
        )
        self.disconnects = Counter(
            "fishchat_disconnects_total",
            "Connections closed by the server, by reason",
            ["role", "reason"],
            registry=registry,
        )
        self.rate_limited = rate_limit_counter(registry)
        self.websocket_upgrades = Counter(
            "fishchat_websocket_upgrades_total",
            "WebSocket upgrade requests, by the HTTP status answered (101: accepted)",
            ["status"],
            registry=registry,
        )
        self.frames = Counter(
            "fishchat_frames_received_total",
            "Frames received, by command",
            ["role", "cmd"],
            registry=registry,
        )
        self.requests = Counter(
            "fishchat_requests_total",
            "Requests answered, by command and result code",
            ["role", "cmd", "code"],
            registry=registry,
        )
        self.send_latency = Histogram(
            "fishchat_send_latency_seconds",
            "From a send request's arrival to its durable ack",
            ["kind"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.notifies = Counter(
            "fishchat_notifies_total", "ResNotify frames pushed to clients", registry=registry
        )
        self.http_requests = Counter(
            "fishchat_http_requests_total",
            "HTTP API requests, by path and result code",
            ["path", "code"],
            registry=registry,
        )
