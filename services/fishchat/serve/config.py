"""The configuration of one role process: `[server]` listeners, the backends, and the role's knobs.

The same file shape the operator renders (`fishchat_operator.roleconfig`): listeners are `host:port`
strings in `[server]` (port 0 picks a free one, as `fishchat cluster up` does), backends are the
production adapters' own settings classes, and every value can be overridden by an environment
variable (`FISHCHAT_SERVER_GRPC_LISTEN=0.0.0.0:21000`). A role ignores sections it does not use.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fishchat.config import ConfigError, load_config
from fishchat.domain.settings import ChatSettings
from fishchat.production.backend import (
    DeliverySettings,
    ProductionSettings,
    RegistrySettings,
    SnowflakeSettings,
)
from fishchat.production.etcd import EtcdSettings, VersionSettings
from fishchat.production.hbase import HBaseSettings
from fishchat.production.kafka import KafkaSettings
from fishchat.production.mysql import MySQLSettings
from fishchat.production.redis import RedisSettings
from fishchat.rpc.server import split_listen
from fishchat.server.config import LOG_LEVELS, AccessConfig, GatewayConfig, HttpConfig
from fishchat.tls import TlsSettings

ROLES = ("gateway", "access", "logic", "register", "manager", "notify", "idgen", "msg-job")

#: Default listeners per role (the operator's ports); metrics ports differ so a laptop runs them all.
DEFAULT_LISTEN: dict[str, dict[str, str]] = {
    "gateway": {"client": "127.0.0.1:10000", "metrics": "127.0.0.1:9101"},
    "access": {"client": "127.0.0.1:11000", "grpc": "127.0.0.1:20000", "metrics": "127.0.0.1:9102"},
    "logic": {"grpc": "127.0.0.1:21000", "metrics": "127.0.0.1:9103"},
    "register": {"grpc": "127.0.0.1:23000", "http": "127.0.0.1:6001", "metrics": "127.0.0.1:9104"},
    "manager": {"grpc": "127.0.0.1:24000", "metrics": "127.0.0.1:9105"},
    "notify": {"grpc": "127.0.0.1:25000", "metrics": "127.0.0.1:9106"},
    "idgen": {"grpc": "127.0.0.1:31000", "metrics": "127.0.0.1:9107"},
    "msg-job": {"metrics": "127.0.0.1:9108"},
}


@dataclass(frozen=True)
class ServerSection:
    """Listeners and process identity. An empty listener means the role's default (`DEFAULT_LISTEN`)."""

    client_listen: str = ""
    #: access: the WebSocket listener (one frame per binary message), on the client listener's host;
    #: empty: the client port + 1 (any free port when that is 0), unless `access.ws_enabled` is false.
    ws_listen: str = ""
    grpc_listen: str = ""
    http_listen: str = ""
    metrics_listen: str = ""
    #: Host other processes and clients reach this one by (the pod IP); empty: the listening host, or
    #: 127.0.0.1 when listening on every interface.
    advertise_host: str = ""
    #: Stable id in the registry and in presence routes (the pod name); empty: <role>-<host>-<pid>.
    instance: str = ""
    #: On SIGTERM: how long in-flight work may take before the process stops anyway.
    drain_timeout_seconds: float = 10.0
    #: Deadline of every outgoing RPC.
    rpc_timeout_seconds: float = 5.0
    #: Create the Kafka topics and the HBase table at start when missing (development and
    #: `fishchat cluster up`). The operator renders false: it owns them, with per-topic settings.
    provision: bool = True

    def __post_init__(self) -> None:
        for name in ("client_listen", "ws_listen", "grpc_listen", "http_listen", "metrics_listen"):
            value = getattr(self, name)
            if value:
                try:
                    split_listen(value)
                except ValueError as exc:
                    raise ValueError(f"server.{name}: {exc}") from None
        if self.drain_timeout_seconds <= 0 or self.rpc_timeout_seconds <= 0:
            raise ValueError("server.drain_timeout_seconds and server.rpc_timeout_seconds must be positive")


@dataclass(frozen=True)
class ServeConfig:
    """Everything `fishchat serve <role>` runs with. `role`, `cluster` and `namespace` are labels the
    operator writes; a `role` that names another role than the one started is refused."""

    role: str = ""
    cluster: str = ""
    namespace: str = ""
    log_level: str = "info"
    server: ServerSection = field(default_factory=ServerSection)
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    mysql: MySQLSettings = field(default_factory=MySQLSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    hbase: HBaseSettings = field(default_factory=HBaseSettings)
    versions: VersionSettings = field(default_factory=VersionSettings)
    snowflake: SnowflakeSettings = field(default_factory=SnowflakeSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    access: AccessConfig = field(default_factory=AccessConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    chat: ChatSettings = field(default_factory=ChatSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)

    def __post_init__(self) -> None:
        if self.role and self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        self.chat.validate()

    def production(self) -> ProductionSettings:
        return ProductionSettings(
            mysql=self.mysql,
            redis=self.redis,
            kafka=self.kafka,
            hbase=self.hbase,
            etcd=self.etcd,
            versions=self.versions,
            registry=self.registry,
            snowflake=self.snowflake,
            delivery=self.delivery,
        )

    def listen(self, role: str, kind: str) -> str:
        """The `host:port` this role listens on for `kind` (client, ws, grpc, http, metrics)."""
        return getattr(self.server, f"{kind}_listen") or DEFAULT_LISTEN[role][kind]

    def advertise(self, listen_host: str) -> str:
        if self.server.advertise_host:
            return self.server.advertise_host
        return "127.0.0.1" if listen_host in ("", "0.0.0.0", "::") else listen_host

    def instance_id(self, role: str) -> str:
        return self.server.instance or f"{role}-{socket.gethostname()}-{os.getpid()}"


def load_serve_config(
    role: str,
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServeConfig:
    """Defaults, the TOML file, `FISHCHAT_*` variables, then `overrides`; checked against `role`."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    try:
        config = load_config(ServeConfig, path, env, overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.role and config.role != role:
        raise ConfigError(f"the config file is for role {config.role!r}, not {role!r}")
    return replace(config, role=role)
