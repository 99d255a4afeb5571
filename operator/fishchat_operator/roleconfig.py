"""The TOML configuration each role's pods read: listeners, etcd discovery and its backends.

The file is what `fishchat serve <role>` loads (`fishchat.serve.config.ServeConfig`, which refuses
unknown keys), so the services' section and key names are the contract: `[etcd] endpoints` is one
comma-separated `host:port` string, `[kafka] bootstrap` likewise, `[hbase] thrift` is `host:port`,
`[mysql] url` a `mysql://host:port/database` URL. `tests/unit/operator/test_roleconfig_loads.py`
loads every rendered file with the services' own loader.

Each role gets only the sections of the servers it talks to (design §2), so a role cannot quietly
grow a dependency the operator does not know about. Every role talks to etcd, so every role gets the
cluster's whole etcd key layout (`[registry]`, `[versions]`, `[snowflake]` under the cluster's etcd
prefix): a section left out would fall back to the services' shared default prefix, where two
FishChatClusters on one etcd would meet. Redis keys are likewise under a per-cluster prefix.

Secrets and pod facts (database credentials, Redis password, the pod IP to advertise) are not here:
they reach the pod as environment overrides (`FISHCHAT_<SECTION>_<KEY>`, see `render.py`), so a
ConfigMap never holds a password.
"""

from __future__ import annotations

from typing import Any, Final

from fishchat_operator import tomlfmt
from fishchat_operator.constants import TLS_MOUNT_PATH, Port, Role
from fishchat_operator.model import Cluster

ANY_HOST: Final = "0.0.0.0"
ETCD_LEASE_TTL_SECONDS: Final = 10
ETCD_DEFAULT_PORT: Final = 2379
# Margin between the end of the drain and the kill at the end of the grace period.
DRAIN_MARGIN_SECONDS: Final = 5
# Longest time the access pod's gRPC server gets to stop once its connections are drained (it serves
# only SendNotify pushes, which end with the connections).
ACCESS_GRPC_STOP_SECONDS: Final = 5

KAFKA_ROLES: Final = frozenset({Role.LOGIC, Role.MSG_JOB})
HBASE_ROLES: Final = frozenset({Role.MSG_JOB, Role.MANAGER})
# msg-job completes the idempotency keys of the sends it stored.
REDIS_ROLES: Final = frozenset({Role.REGISTER, Role.NOTIFY, Role.LOGIC, Role.MSG_JOB})
MYSQL_ROLES: Final = frozenset({Role.REGISTER})
# Where the rate limits are checked: access (per connection), logic (sends and logins per user),
# register (password checks).
LIMIT_ROLES: Final = frozenset({Role.ACCESS, Role.LOGIC, Role.REGISTER})

# Which container ports each role listens on, by port name; the metrics port is everyone's.
GRPC_PORT: Final[dict[Role, Port]] = {
    Role.ACCESS: Port.ACCESS_GRPC,
    Role.LOGIC: Port.LOGIC_GRPC,
    Role.REGISTER: Port.REGISTER_GRPC,
    Role.MANAGER: Port.MANAGER_GRPC,
    Role.NOTIFY: Port.NOTIFY_GRPC,
    Role.IDGEN: Port.IDGEN_GRPC,
}
CLIENT_PORT: Final[dict[Role, Port]] = {Role.GATEWAY: Port.GATEWAY_CLIENT, Role.ACCESS: Port.ACCESS_CLIENT}
WS_PORT: Final[dict[Role, Port]] = {Role.ACCESS: Port.ACCESS_WS}
HTTP_PORT: Final[dict[Role, Port]] = {Role.REGISTER: Port.REGISTER_HTTP}


def config_file_name(role: Role) -> str:
    return f"{role.value}.toml"


def msg_job_consumer_group(cluster: Cluster) -> str:
    return f"fishchat-{cluster.namespace}-{cluster.name}-msg-job"


def redis_prefix(cluster: Cluster) -> str:
    """Key prefix of the cluster in Redis; names and namespaces are DNS labels, so never hold ':'."""
    return f"fishchat:{cluster.namespace}:{cluster.name}:"


def etcd_prefixes(cluster: Cluster) -> dict[str, str]:
    """The cluster's etcd key layout: section -> prefix, all under the cluster's etcd prefix."""
    root = cluster.etcd_prefix
    return {"registry": f"{root}services/", "versions": f"{root}seqs/", "snowflake": f"{root}snowflake/"}


def etcd_endpoints(cluster: Cluster) -> str:
    """The spec's etcd client URLs as the services' comma-separated `host:port` list.

    The services dial etcd without TLS, so an `https://` URL's scheme is dropped like `http://`'s
    (docs/operator.md, Limitations); a URL without a port gets etcd's client port.
    """
    addresses = (url.split("://", 1)[-1] for url in cluster.spec.backends.etcd.endpoints)
    # The spec's pattern allows host names and IPv4 only, so a ':' is always the port's.
    return ",".join(a if ":" in a else f"{a}:{ETCD_DEFAULT_PORT}" for a in addresses)


def access_drain_seconds(cluster: Cluster) -> tuple[int, int]:
    """(connection drain, gRPC stop) of an access pod, which together fit its SIGTERM budget.

    The kubelet runs the preStop sleep, then sends SIGTERM and kills the pod at the end of the grace
    period. In between the access server tells every client to reconnect elsewhere and waits for the
    sends it already received to be acked (`access.drain_timeout_s`), then its gRPC server stops
    (`server.drain_timeout_seconds`); both end DRAIN_MARGIN_SECONDS before the kill.
    """
    access = cluster.spec.roles.access
    budget = access.termination_grace_period_seconds - access.pre_stop_sleep_seconds - DRAIN_MARGIN_SECONDS
    grpc_stop = min(ACCESS_GRPC_STOP_SECONDS, max(1, budget // 5))
    return max(1, budget - grpc_stop), grpc_stop


def role_config(cluster: Cluster, role: Role) -> dict[str, Any]:
    """The configuration of `role` in `cluster` as a mapping (tables are nested mappings)."""
    spec = cluster.spec
    backends = spec.backends
    # The operator creates the topics and the table itself (per-topic partitions and replication).
    server: dict[str, Any] = {"metrics_listen": f"{ANY_HOST}:{Port.METRICS.value}", "provision": False}
    if role in CLIENT_PORT:
        server["client_listen"] = f"{ANY_HOST}:{CLIENT_PORT[role].value}"
    if role in WS_PORT:
        server["ws_listen"] = f"{ANY_HOST}:{WS_PORT[role].value}"
    if role in GRPC_PORT:
        server["grpc_listen"] = f"{ANY_HOST}:{GRPC_PORT[role].value}"
    if role in HTTP_PORT:
        server["http_listen"] = f"{ANY_HOST}:{HTTP_PORT[role].value}"
    drain = access_drain_seconds(cluster)
    if role is Role.ACCESS:
        server["drain_timeout_seconds"] = drain[1]

    config: dict[str, Any] = {
        "role": role.value,
        "cluster": cluster.name,
        "namespace": cluster.namespace,
        "server": server,
        "etcd": {"endpoints": etcd_endpoints(cluster), "lease_ttl_s": ETCD_LEASE_TTL_SECONDS},
    }
    config.update({section: {"prefix": prefix} for section, prefix in etcd_prefixes(cluster).items()})
    if role is Role.ACCESS:
        config["access"] = {"drain_timeout_s": drain[0]}
        if spec.roles.access.public_address:
            config["access"]["public_address"] = spec.roles.access.public_address
        if spec.roles.access.public_ws_url:
            config["access"]["ws_public_url"] = spec.roles.access.public_ws_url
        if spec.roles.access.ws_origins:
            config["access"]["ws_origins"] = list(spec.roles.access.ws_origins)
    if role in LIMIT_ROLES:
        limits: dict[str, Any] = {"enabled": spec.limits.enabled}
        for name, rate in spec.limits.buckets().items():
            limits[name] = {"per_s": rate.per_minute / 60, "burst": rate.burst}
        config["chat"] = {"limits": limits}
    if spec.tls is not None:
        tls: dict[str, Any] = {
            "cert_file": f"{TLS_MOUNT_PATH}/tls.crt",
            "key_file": f"{TLS_MOUNT_PATH}/tls.key",
            "clients": spec.tls.clients,
            "grpc": spec.tls.grpc,
        }
        if spec.tls.grpc:
            tls["ca_file"] = f"{TLS_MOUNT_PATH}/ca.crt"
        if spec.tls.grpc_server_name:
            tls["grpc_server_name"] = spec.tls.grpc_server_name
        config["tls"] = tls
    if role in KAFKA_ROLES:
        kafka: dict[str, Any] = {
            "bootstrap": ",".join(backends.kafka.bootstrap_servers),
            "p2p_topic": spec.topics.p2p.name,
            "group_topic": spec.topics.group.name,
        }
        if role is Role.MSG_JOB:
            kafka["consumer_group"] = msg_job_consumer_group(cluster)
        config["kafka"] = kafka
    if role in HBASE_ROLES:
        config["hbase"] = {
            "thrift": f"{backends.hbase.thrift_host}:{backends.hbase.thrift_port}",
            "table": spec.table.name,
        }
    if role in REDIS_ROLES:
        # The spec's URL has no password; FISHCHAT_REDIS_PASSWORD (from passwordSecret) sets redis.password.
        config["redis"] = {"url": backends.redis.url, "prefix": redis_prefix(cluster)}
    if role in MYSQL_ROLES:
        # No userinfo: FISHCHAT_MYSQL_USER and FISHCHAT_MYSQL_PASSWORD set mysql.user and .password.
        mariadb = backends.mariadb
        config["mysql"] = {"url": f"mysql://{mariadb.host}:{mariadb.port}/{mariadb.database}"}
    return config


def render_role_config(cluster: Cluster, role: Role) -> str:
    header = (
        f"FishChat {role.value} configuration of FishChatCluster {cluster.namespace}/{cluster.name}.",
        "Rendered by fishchat-operator from the cluster's spec; edits here are overwritten.",
        "Credentials and the advertised address come from FISHCHAT_* environment overrides.",
    )
    return tomlfmt.dumps(role_config(cluster, role), header)
