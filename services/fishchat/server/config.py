"""Settings of `fishchat up` and of each server role: a TOML file, `FISHCHAT_*` variables, then flags.

One frozen dataclass per role section, nested in `UpConfig`; `load_up_config` fills it through
`fishchat.config.load_config`, so `[access] ping_interval_s = 5` in the file and
`FISHCHAT_ACCESS_PING_INTERVAL_S=5` in the environment set the same value. `[chat]` is the domain's
`ChatSettings` itself (`[chat.scrypt]` its password-hash cost). Command-line flags win over both.

Every value is range-checked when the dataclass is built, so a bad setting stops the start with a
message naming it instead of surfacing later as odd behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fishchat.config import ConfigError, check_port, load_config
from fishchat.domain.settings import ChatSettings
from fishchat.protocol.codec import MAX_PAYLOAD
from fishchat.protocol.frames import MAX_DEVICE_BYTES, MAX_MSG_BYTES, MAX_MSG_ID_BYTES, FieldLimits
from fishchat.tls import TlsSettings

DEFAULT_DATA_DIR = Path(".data")
_ORIGIN_RE = re.compile(r"https?://[^/\s]+")
_WS_URL_RE = re.compile(r"wss?://[^/\s]+(/\S*)?")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's client port (10000 in the original) and its connection limits."""

    port: int = 10000
    max_connections: int = 10_000
    #: A gateway connection is only for one question; one that stays silent this long is closed.
    idle_timeout_s: float = 30.0
    max_write_buffer_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        check_port(self.port, "gateway.port")
        _positive("gateway.max_connections", self.max_connections)
        _positive("gateway.idle_timeout_s", self.idle_timeout_s)
        _positive("gateway.max_write_buffer_bytes", self.max_write_buffer_bytes)


@dataclass(frozen=True)
class AccessConfig:
    """The access server: client port, heartbeat, limits, drain.

    A connection is closed after `missed_pings` ping intervals without any frame (the client pings
    every `ping_interval_s`), or `login_timeout_s` after it opened if it never logged in.
    """

    port: int = 11000
    #: The host clients are told to connect to (the gateway hands out `advertise_host:port`);
    #: empty means the listening host, or 127.0.0.1 when listening on every interface.
    advertise_host: str = ""
    #: host:port the gateway hands out instead of `advertise_host:port`: where clients outside reach
    #: this server through a load balancer or a node port (every access server behind it says the same).
    public_address: str = ""
    #: Stable id of this access node in presence routes; empty derives one from the address.
    node_id: str = ""
    ping_interval_s: float = 10.0
    missed_pings: int = 3
    login_timeout_s: float = 30.0
    max_connections: int = 100_000
    #: Largest request frame read; a longer declared length is answered 10002 and the connection closed.
    max_frame_bytes: int = MAX_PAYLOAD
    #: Replies waiting for a client that does not read: past this many bytes it is disconnected.
    max_write_buffer_bytes: int = 1024 * 1024
    #: Requests of one connection queued or running before its reads are paused (TCP backpressure).
    max_in_flight: int = 64
    #: Failed logins on one connection before it is closed.
    max_failed_logins: int = 5
    #: False accepts sends with an empty msgID (the original demo client); they cannot be deduplicated.
    require_msg_id: bool = True
    #: How often the connection count is announced to the registry (the gateway balances on it).
    load_report_interval_s: float = 1.0
    #: On SIGTERM: how long in-flight requests may take before the connections are closed anyway.
    drain_timeout_s: float = 10.0
    #: ResReconnect.retryAfterMs on drain: clients spread their reconnects over this window.
    reconnect_spread_ms: int = 2000
    #: WebSocket listener (one frame per binary message, for browsers). None: the client port + 1, or
    #: any free port when that is 0; `ws_enabled = false` turns it off.
    ws_port: int | None = None
    ws_enabled: bool = True
    #: Pages that may open a WebSocket (`Origin` values like `https://chat.example.com`); empty: pages
    #: from the same host name as the WebSocket (any port); `*`: any page.
    ws_origins: tuple[str, ...] = ()
    #: The WebSocket URL the gateway hands out; empty: `ws://<advertise_host>:<ws_port>/ws`.
    ws_public_url: str = ""

    def __post_init__(self) -> None:
        check_port(self.port, "access.port")
        if self.ws_port is not None:
            check_port(self.ws_port, "access.ws_port")
        elif self.ws_enabled and self.port == 65535:
            raise ValueError("access.ws_port must be set when access.port is 65535 (it defaults to port + 1)")
        for origin in self.ws_origins:
            if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
                raise ValueError(f"access.ws_origins: {origin!r} is not * or scheme://host[:port]")
        if self.public_address:
            host, sep, port = self.public_address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"access.public_address: {self.public_address!r} is not host:port")
        if self.ws_public_url and not _WS_URL_RE.fullmatch(self.ws_public_url):
            raise ValueError(f"access.ws_public_url: {self.ws_public_url!r} is not a ws:// or wss:// URL")
        for name in (
            "ping_interval_s",
            "missed_pings",
            "login_timeout_s",
            "max_connections",
            "max_write_buffer_bytes",
            "max_in_flight",
            "max_failed_logins",
            "load_report_interval_s",
            "drain_timeout_s",
        ):
            _positive(f"access.{name}", getattr(self, name))
        if not 1 <= self.max_frame_bytes <= MAX_PAYLOAD:
            raise ValueError(f"access.max_frame_bytes must be within 1..{MAX_PAYLOAD}")
        if not 0 <= self.reconnect_spread_ms <= 0xFFFFFFFF:
            raise ValueError("access.reconnect_spread_ms must be within 0..4294967295")

    @property
    def idle_timeout_s(self) -> float:
        return self.ping_interval_s * self.missed_pings

    @property
    def websocket_port(self) -> int | None:
        """The port to listen on for WebSocket clients (0: any free one), None when turned off."""
        if not self.ws_enabled:
            return None
        if self.ws_port is not None:
            return self.ws_port
        return self.port + 1 if self.port else 0


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP API (user-api 6001 in the original)."""

    port: int = 6001
    #: Larger request bodies are refused with 413 before they are read.
    max_body_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        check_port(self.port, "http.port")
        _positive("http.max_body_bytes", self.max_body_bytes)


@dataclass(frozen=True)
class AdminConfig:
    """/metrics, /healthz and /readyz."""

    port: int = 6003

    def __post_init__(self) -> None:
        check_port(self.port, "admin.port")


@dataclass(frozen=True)
class StorageConfig:
    """The embedded data directory's SQLite file."""

    #: fsync each acknowledged send; false is for throwaway data only (a power cut may lose acked sends).
    durable_commits: bool = True
    #: On SIGTERM: how long delivery may take to store and notify what was accepted before closing.
    drain_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _positive("storage.drain_timeout_s", self.drain_timeout_s)


@dataclass(frozen=True)
class UpConfig:
    """Everything `fishchat up` runs with."""

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    log_level: str = "info"
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    chat: ChatSettings = field(default_factory=ChatSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        self.chat.validate()


def field_limits(access: AccessConfig, chat: ChatSettings) -> FieldLimits:
    """The frame-level limits an access server enforces: the protocol's, tightened by the domain's.

    Checking them at the frame layer gives the precise code (10006 for a body over the limit) before any
    work is done; the domain checks the same limits again.
    """
    return FieldLimits(
        max_msg_bytes=min(chat.body_max_bytes, MAX_MSG_BYTES),
        max_msg_id_bytes=min(chat.msg_id_max_bytes, MAX_MSG_ID_BYTES),
        max_device_bytes=min(chat.device_max_chars, MAX_DEVICE_BYTES),
        require_msg_id=access.require_msg_id,
    )


def load_up_config(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> UpConfig:
    """Defaults, then the TOML file, then `FISHCHAT_*` variables, then `overrides` (the flags)."""
    try:
        return load_config(UpConfig, path, env, overrides)
    except ValueError as exc:  # a range check outside a section's own __post_init__
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc
