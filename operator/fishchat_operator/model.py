"""The FishChatCluster spec as frozen dataclasses: what a user may ask for, with defaults and bounds.

These types are the single source of the CRD's spec schema (see `schema.py` and `crd.py`), so every
field carries its description, default and limits here. `parse_cluster` turns a custom-resource body
into a `Cluster` the pure renderer works on; it applies the same defaults the API server applies, so
the operator behaves the same on a body that went through defaulting and on a hand-written test input.
"""

# `spec_field` is a dataclasses.field() with schema metadata; ruff only knows the plain one.
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from fishchat_operator.constants import (
    AutoscalingMode,
    PullPolicy,
    ReclaimPolicy,
    Role,
    ServiceType,
)
from fishchat_operator.schema import CelRule, Described, SpecError, parse, spec_field

# Kubernetes resource.Quantity, as controller-gen writes it.
_DECIMAL = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = rf"^(\+|-)?{_DECIMAL}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_DECIMAL}))?$"
HOST_PORT_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}$"
HOST_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
ORIGIN_PATTERN = r"^(\*|https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?)$"
WS_URL_PATTERN = r"^wss?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[-A-Za-z0-9._~/]*)?$"
# A label value (app.kubernetes.io/version carries it) that is also a valid image tag.
VERSION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
IMAGE_PATTERN = r"^[a-z0-9]([-a-z0-9._/:]*[a-z0-9])?$"
RESOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
KAFKA_TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"
HBASE_TABLE_PATTERN = r"^([A-Za-z0-9_]+:)?[A-Za-z0-9_][A-Za-z0-9_.-]*$"
ETCD_ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
ETCD_PREFIX_PATTERN = r"^/([-A-Za-z0-9_.]+/)*$"
REDIS_URL_PATTERN = r"^rediss?://"
PROMETHEUS_URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
PROMETHEUS_LABEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

DEFAULT_IMAGE = "ghcr.io/fishchat/fishchat"
DEFAULT_VERSION = "0.1.0"
DEFAULT_P2P_TOPIC = "logic_producer_p2p"
DEFAULT_GROUP_TOPIC = "logic_producer_group"
DEFAULT_TABLE = "im"
# Pods of a Deployment are named <deployment>-<pod-template-hash>-<5 characters>; the regular
# expression is anchored by PromQL, so another cluster's pods never match.
DEFAULT_PROMETHEUS_QUERY = 'sum by (pod) (fishchat_access_connections{namespace="$namespace", pod=~"$pods"})'


@dataclass(frozen=True)
class Quantities(Described):
    cpu: str | None = spec_field(
        "CPU as a Kubernetes quantity, e.g. 250m or 2.", None, int_or_string=True, pattern=QUANTITY_PATTERN
    )
    memory: str | None = spec_field(
        "Memory as a Kubernetes quantity, e.g. 256Mi or 1Gi.",
        None,
        int_or_string=True,
        pattern=QUANTITY_PATTERN,
    )


@dataclass(frozen=True)
class Resources(Described):
    requests: Quantities = spec_field(
        "What the scheduler reserves for each pod of the role.", default_factory=Quantities
    )
    limits: Quantities = spec_field(
        "Upper bounds for each pod of the role; no CPU limit by default, so pods are not throttled.",
        default_factory=Quantities,
    )


def _resources(cpu: str, memory: str, memory_limit: str) -> Resources:
    return Resources(Quantities(cpu=cpu, memory=memory), Quantities(memory=memory_limit))


@dataclass(frozen=True)
class RoleSpec(Described):
    replicas: int = spec_field("Number of pods of the role (0 stops the role).", 2, minimum=0, maximum=1000)
    resources: Resources = spec_field(
        "CPU and memory requests and limits of the role's container.",
        default_factory=lambda: _resources("100m", "128Mi", "256Mi"),
    )


@dataclass(frozen=True)
class ExposedRoleSpec(RoleSpec):
    """A role clients outside the cluster talk to: the gateway, access (client protocol, WebSocket) and
    register (HTTP API). Its Service `<cluster>-<role>` is ClusterIP with every port; the Service
    `<cluster>-<role>-public` has the client-facing ports only (never gRPC or metrics), of serviceType."""

    __cel__: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.nodePort) || self.serviceType == 'NodePort' || self.serviceType == 'LoadBalancer'",
            "nodePort needs serviceType NodePort or LoadBalancer",
            field_path=".nodePort",
        ),
    )

    service_type: ServiceType = spec_field(
        "Type of the Service `<cluster>-<role>-public`, which carries only the client-facing ports "
        "(ClusterIP: not exposed outside the cluster; NodePort or LoadBalancer: exposed).",
        ServiceType.CLUSTER_IP,
    )
    node_port: int | None = spec_field(
        "Node port of the client-facing port (the client protocol; register: the HTTP API) when "
        "serviceType is NodePort or LoadBalancer; Kubernetes picks one when unset.",
        None,
        minimum=1,
        maximum=65535,
    )


@dataclass(frozen=True)
class GatewaySpec(ExposedRoleSpec):
    pass


@dataclass(frozen=True)
class AccessSpec(ExposedRoleSpec):
    __cel__ = (
        *ExposedRoleSpec.__cel__,
        CelRule(
            "self.terminationGracePeriodSeconds > self.preStopSleepSeconds",
            "terminationGracePeriodSeconds must be longer than preStopSleepSeconds, "
            "or the pod is killed before it can drain its connections",
            field_path=".terminationGracePeriodSeconds",
        ),
        CelRule(
            "!has(self.wsNodePort) || self.serviceType == 'NodePort' || self.serviceType == 'LoadBalancer'",
            "wsNodePort needs serviceType NodePort or LoadBalancer",
            field_path=".wsNodePort",
        ),
        CelRule(
            "!has(self.wsNodePort) || !has(self.nodePort) || self.wsNodePort != self.nodePort",
            "wsNodePort must differ from nodePort",
            field_path=".wsNodePort",
        ),
    )

    termination_grace_period_seconds: int = spec_field(
        "Seconds an access pod may take to drain on shutdown: it stops accepting, tells each client "
        "to reconnect elsewhere and waits for them to go, before it is killed.",
        60,
        minimum=1,
        maximum=3600,
    )
    pre_stop_sleep_seconds: int = spec_field(
        "Seconds the preStop hook waits before SIGTERM, so Service endpoints and load balancers stop "
        "sending new connections to a pod that is about to drain.",
        5,
        minimum=0,
        maximum=300,
    )
    public_address: str | None = spec_field(
        "host:port the gateway hands clients instead of each access pod's own address (pod IP and "
        "client port, reachable inside the cluster only): where clients outside reach the public "
        "Service, e.g. a load balancer's name or a node's address and the nodePort.",
        None,
        max_length=260,
        pattern=HOST_PORT_PATTERN,
    )
    public_ws_url: str | None = spec_field(
        "WebSocket URL (ws:// or wss://, path /ws) the gateway and the HTTP API hand browsers instead of "
        "each access pod's own, e.g. an ingress or a load balancer in front of the access Service's ws "
        "port.",
        None,
        max_length=512,
        pattern=WS_URL_PATTERN,
    )
    ws_node_port: int | None = spec_field(
        "Node port of the WebSocket port when serviceType is NodePort or LoadBalancer, so that "
        "publicWsUrl can name it up front; Kubernetes picks one when unset.",
        None,
        minimum=1,
        maximum=65535,
    )
    ws_origins: tuple[str, ...] = spec_field(
        "Origins of the web pages that may open a WebSocket (`https://chat.example.com`, "
        "`http://host:port`), or `*` for any page; empty: pages from the WebSocket's own host name.",
        (),
        max_items=64,
        item_pattern=ORIGIN_PATTERN,
        item_max_length=270,
    )


@dataclass(frozen=True)
class RolesSpec(Described):
    gateway: GatewaySpec = spec_field(
        "The gateway: answers ReqAccessServer with the least-loaded access server.",
        default_factory=lambda: GatewaySpec(replicas=2, resources=_resources("100m", "128Mi", "256Mi")),
    )
    access: AccessSpec = spec_field(
        "Access servers: hold client connections. The scale subresource of the cluster moves these replicas.",
        default_factory=lambda: AccessSpec(replicas=2, resources=_resources("250m", "256Mi", "1Gi")),
    )
    logic: RoleSpec = spec_field(
        "Logic: validates, orders and produces sends to Kafka.",
        default_factory=lambda: RoleSpec(replicas=2, resources=_resources("250m", "256Mi", "512Mi")),
    )
    notify: RoleSpec = spec_field(
        "Notify: routes new-message notices to the access servers holding a user's devices.",
        default_factory=lambda: RoleSpec(replicas=2, resources=_resources("100m", "128Mi", "256Mi")),
    )
    register: ExposedRoleSpec = spec_field(
        "Register: accounts, tokens, presence, routes and groups; serves the HTTP API.",
        default_factory=lambda: ExposedRoleSpec(replicas=2, resources=_resources("100m", "128Mi", "256Mi")),
    )
    manager: RoleSpec = spec_field(
        "Manager: serves sync from HBase.",
        default_factory=lambda: RoleSpec(replicas=2, resources=_resources("250m", "256Mi", "512Mi")),
    )
    idgen: RoleSpec = spec_field(
        "Idgen: per-user versions and snowflake ids.",
        default_factory=lambda: RoleSpec(replicas=2, resources=_resources("100m", "128Mi", "256Mi")),
    )
    msg_job: RoleSpec = spec_field(
        "Msg-job: consumes Kafka, writes HBase rows, then asks notify to tell recipients.",
        default_factory=lambda: RoleSpec(replicas=2, resources=_resources("250m", "256Mi", "512Mi")),
    )

    def of(self, role: Role) -> RoleSpec:
        spec: RoleSpec = getattr(self, role.value.replace("-", "_"))
        return spec


@dataclass(frozen=True)
class KafkaSpec(Described):
    bootstrap_servers: tuple[str, ...] = spec_field(
        "Kafka bootstrap brokers as host:port.",
        min_items=1,
        max_items=16,
        item_pattern=HOST_PORT_PATTERN,
        item_max_length=260,
    )


@dataclass(frozen=True)
class HBaseSpec(Described):
    thrift_host: str = spec_field(
        "Host of the HBase Thrift (v1) server.", max_length=253, pattern=HOST_PATTERN
    )
    thrift_port: int = spec_field("Port of the HBase Thrift (v1) server.", 9090, minimum=1, maximum=65535)


@dataclass(frozen=True)
class SecretKeyRef(Described):
    name: str = spec_field(
        "Name of a Secret in the cluster's namespace.", max_length=253, pattern=RESOURCE_NAME_PATTERN
    )
    key: str = spec_field("Key inside the Secret.", max_length=253, min_length=1)


@dataclass(frozen=True)
class CredentialsSecret(Described):
    name: str = spec_field(
        "Name of a Secret in the cluster's namespace holding the user name and password.",
        max_length=253,
        pattern=RESOURCE_NAME_PATTERN,
    )
    username_key: str = spec_field("Key of the user name in the Secret.", "username", max_length=253)
    password_key: str = spec_field("Key of the password in the Secret.", "password", max_length=253)


@dataclass(frozen=True)
class RedisSpec(Described):
    url: str = spec_field(
        "Redis URL without the password, e.g. redis://redis:6379/0 (rediss:// for TLS).",
        max_length=1024,
        pattern=REDIS_URL_PATTERN,
    )
    password_secret: SecretKeyRef | None = spec_field(
        "Secret key holding the Redis password, when Redis requires one.", None
    )


@dataclass(frozen=True)
class MariaDBSpec(Described):
    host: str = spec_field("Host of MariaDB or MySQL.", max_length=253, pattern=HOST_PATTERN)
    credentials_secret: CredentialsSecret = spec_field(
        "Secret with the database user name and password; the operator never reads it, the pods do."
    )
    port: int = spec_field("Port of MariaDB or MySQL.", 3306, minimum=1, maximum=65535)
    database: str = spec_field(
        "Database that holds users, groups and members; the services migrate its schema.",
        "fishchat",
        max_length=64,
        pattern=r"^[A-Za-z0-9_]+$",
    )


@dataclass(frozen=True)
class EtcdSpec(Described):
    __cel__ = (
        CelRule(
            "has(self.prefix) == has(oldSelf.prefix)",
            "backends.etcd.prefix cannot be added or removed after creation: the registry would move",
            field_path=".prefix",
        ),
    )

    endpoints: tuple[str, ...] = spec_field(
        "etcd client URLs used for service discovery, access announcements and idgen high-water marks.",
        min_items=1,
        max_items=16,
        item_pattern=ETCD_ENDPOINT_PATTERN,
        item_max_length=270,
    )
    prefix: str | None = spec_field(
        "Key prefix of this cluster in etcd, e.g. /fishchat/prod/. Defaults to "
        "/fishchat/<namespace>/<name>/ so clusters sharing an etcd never meet.",
        None,
        max_length=512,
        pattern=ETCD_PREFIX_PATTERN,
        immutable=True,
    )


@dataclass(frozen=True)
class BackendsSpec(Described):
    kafka: KafkaSpec = spec_field("Kafka, the durable message log.")
    hbase: HBaseSpec = spec_field("HBase (through its Thrift server), the message store.")
    redis: RedisSpec = spec_field("Redis: presence, routes, tokens and idempotency keys.")
    mariadb: MariaDBSpec = spec_field("MariaDB or MySQL: accounts, groups and members.")
    etcd: EtcdSpec = spec_field("etcd: the service registry.")


@dataclass(frozen=True)
class TopicSpec(Described):
    name: str = spec_field(
        "Kafka topic name. Immutable: renaming would strand the messages in the old topic.",
        max_length=249,
        pattern=KAFKA_TOPIC_PATTERN,
        immutable=True,
    )
    partitions: int = spec_field(
        "Number of partitions. It may grow; Kafka cannot remove partitions, so a smaller number is "
        "reported in the Degraded condition and not applied.",
        12,
        minimum=1,
        maximum=10000,
    )
    replication_factor: int = spec_field(
        "Replicas of each partition; min.insync.replicas is set to one less (at least 1). Applied "
        "when the topic is created; a later change is reported and not applied.",
        3,
        minimum=1,
        maximum=32,
    )


@dataclass(frozen=True)
class TopicsSpec(Described):
    __cel__ = (
        CelRule(
            "self.p2p.name != self.group.name",
            "the p2p and group topics must have different names",
            field_path=".group.name",
        ),
    )

    p2p: TopicSpec = spec_field(
        "Topic of one-to-one messages, keyed by recipient UID.",
        default_factory=lambda: TopicSpec(name=DEFAULT_P2P_TOPIC),
    )
    group: TopicSpec = spec_field(
        "Topic of group messages, keyed by recipient UID.",
        default_factory=lambda: TopicSpec(name=DEFAULT_GROUP_TOPIC),
    )


@dataclass(frozen=True)
class TableSpec(Described):
    name: str = spec_field(
        "HBase table of messages (optionally namespace:table); its column families are always "
        "user and msg. Immutable: renaming would strand the stored messages.",
        DEFAULT_TABLE,
        max_length=255,
        pattern=HBASE_TABLE_PATTERN,
        immutable=True,
    )


@dataclass(frozen=True)
class PrometheusSpec(Described):
    url: str | None = spec_field(
        "Base URL of the Prometheus HTTP API that scrapes the access pods, e.g. "
        "http://prometheus-operated.monitoring.svc:9090. Unset: the operator's in-cluster default "
        "(its FISHCHAT_OPERATOR_PROMETHEUS_URL setting).",
        None,
        max_length=2048,
        pattern=PROMETHEUS_URL_PATTERN,
    )
    query: str = spec_field(
        "PromQL template of the live logged-in connections per access pod; $namespace, $cluster and "
        "$pods (a regular expression of the cluster's access pod names) are replaced before it runs. "
        "It must return an instant vector; grouped by pod (the podLabel label), the operator also "
        "removes the emptiest pods first on a scale-down.",
        DEFAULT_PROMETHEUS_QUERY,
        min_length=1,
        max_length=4096,
    )
    pod_label: str = spec_field(
        "The label of the query's result that names the pod.",
        "pod",
        max_length=128,
        pattern=PROMETHEUS_LABEL_PATTERN,
    )


@dataclass(frozen=True)
class AutoscalingSpec(Described):
    __cel__ = (
        CelRule(
            "self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            field_path=".minReplicas",
        ),
        CelRule(
            "self.scaleDownStep <= self.maxReplicas",
            "autoscaling.scaleDownStep must not exceed autoscaling.maxReplicas",
            field_path=".scaleDownStep",
        ),
    )

    enabled: bool = spec_field("Whether access replicas follow the live connection count.", False)
    min_replicas: int = spec_field(
        "Fewest access replicas autoscaling may leave.", 2, minimum=1, maximum=1000
    )
    max_replicas: int = spec_field(
        "Most access replicas autoscaling may create.", 10, minimum=1, maximum=1000
    )
    target_connections_per_pod: int = spec_field(
        "Connections per access pod that autoscaling aims for.", 10000, minimum=1, maximum=10_000_000
    )
    scale_down_step: int = spec_field(
        "Most access pods removed in one scale-down step (each drains its clients first).",
        1,
        minimum=1,
        maximum=100,
    )
    scale_down_window_seconds: int = spec_field(
        "Seconds the connection count must stay low before a scale-down (stabilisation window).",
        300,
        minimum=0,
        maximum=86400,
    )
    mode: AutoscalingMode = spec_field(
        "Operator: the operator reads the connection count from Prometheus and scales access itself. "
        "HPA: it renders a HorizontalPodAutoscaler on the same metric (served by a custom-metrics "
        "adapter) and never writes access replicas itself.",
        AutoscalingMode.OPERATOR,
    )
    prometheus: PrometheusSpec = spec_field(
        "Where the operator reads the connection count (mode Operator).", default_factory=PrometheusSpec
    )


@dataclass(frozen=True)
class RateSpec(Described):
    """One token bucket: `burst` requests at once, refilled at `perMinute` (whole numbers: a CRD
    carries no floats)."""

    per_minute: int = spec_field("Requests the bucket refills per minute.", minimum=1, maximum=6_000_000)
    burst: int = spec_field(
        "Requests the bucket holds: how many may come at once.", minimum=1, maximum=1_000_000
    )


@dataclass(frozen=True)
class LimitsSpec(Described):
    """Per-connection, per-user and per-address rate limits (docs/chat.md, Rate limits); a bucket left
    unset keeps FishChat's default."""

    enabled: bool = spec_field(
        "Whether requests over a limit are refused (error 10007, HTTP 429 with Retry-After).", True
    )
    connection_send: RateSpec | None = spec_field(
        "Messages and receipts of one connection (default 1800/min, burst 100).", None
    )
    user_send: RateSpec | None = spec_field(
        "Messages and receipts of one user, all devices together (default 3000/min, burst 200).", None
    )
    connection_login: RateSpec | None = spec_field(
        "Logins on one connection (default 60/min, burst 5).", None
    )
    user_login: RateSpec | None = spec_field("Logins of one user (default 120/min, burst 20).", None)
    user_auth: RateSpec | None = spec_field(
        "Password checks of one account (default 12/min, burst 10).", None
    )
    address_auth: RateSpec | None = spec_field(
        "Password checks from one client address, any account (default 600/min, burst 200).", None
    )

    def buckets(self) -> dict[str, RateSpec]:
        """The buckets the spec sets, by their name in the services' `[chat.limits]`."""
        buckets = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "enabled"}
        return {name: rate for name, rate in buckets.items() if rate is not None}


@dataclass(frozen=True)
class TlsSpec(Described):
    """TLS from a Secret (type kubernetes.io/tls): `tls.crt` and `tls.key`, and `ca.crt` for gRPC."""

    secret_name: str = spec_field(
        "Secret holding tls.crt and tls.key (and ca.crt when grpc is on), mounted into every pod.",
        max_length=253,
        min_length=1,
        pattern=RESOURCE_NAME_PATTERN,
    )
    clients: bool = spec_field(
        "Client listeners (gateway and access TCP, access WebSocket, the HTTP API) speak TLS.", True
    )
    grpc: bool = spec_field("Internal gRPC between the roles speaks TLS, verified with ca.crt.", False)
    grpc_server_name: str | None = spec_field(
        "Name every role's certificate holds, which gRPC clients expect (pods are dialed by IP); "
        "unset: the dialed address must be in the certificate.",
        None,
        max_length=253,
        pattern=HOST_PATTERN,
    )


@dataclass(frozen=True)
class ClusterSpec(Described):
    """A FishChat installation: every role, its backends, topics, table and scaling policy."""

    backends: BackendsSpec = spec_field("Endpoints of the servers FishChat stores its data in.")
    image: str = spec_field(
        "Container image repository of FishChat (without tag); every role runs from it.",
        DEFAULT_IMAGE,
        max_length=512,
        pattern=IMAGE_PATTERN,
    )
    version: str = spec_field(
        "FishChat version: the image tag, and the app.kubernetes.io/version label.",
        DEFAULT_VERSION,
        max_length=63,
        pattern=VERSION_PATTERN,
    )
    image_pull_policy: PullPolicy = spec_field("Image pull policy of every role.", PullPolicy.IF_NOT_PRESENT)
    image_pull_secrets: tuple[str, ...] = spec_field(
        "Names of Secrets used to pull the image.",
        (),
        max_items=16,
        item_pattern=RESOURCE_NAME_PATTERN,
        item_max_length=253,
    )
    roles: RolesSpec = spec_field("Replicas and resources of each role.", default_factory=RolesSpec)
    topics: TopicsSpec = spec_field(
        "Kafka topics the operator creates and grows.", default_factory=TopicsSpec
    )
    table: TableSpec = spec_field("HBase table the operator creates.", default_factory=TableSpec)
    autoscaling: AutoscalingSpec = spec_field(
        "Access autoscaling on live connection counts.", default_factory=AutoscalingSpec
    )
    limits: LimitsSpec = spec_field(
        "Rate limits on sends, logins and password checks.", default_factory=LimitsSpec
    )
    tls: TlsSpec | None = spec_field("Optional TLS for client listeners and internal gRPC.", None)
    reclaim_policy: ReclaimPolicy = spec_field(
        "What happens to the topics and the table when the cluster is deleted: Retain keeps them "
        "(and every message), Delete removes them.",
        ReclaimPolicy.RETAIN,
    )


@dataclass(frozen=True)
class Cluster:
    """One FishChatCluster object: identity from metadata plus the parsed spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ClusterSpec

    @property
    def etcd_prefix(self) -> str:
        return self.spec.backends.etcd.prefix or f"/fishchat/{self.namespace}/{self.name}/"


def parse_spec(spec: Any) -> ClusterSpec:
    return parse(ClusterSpec, spec if spec is not None else {}, "spec")


def parse_cluster(body: Mapping[str, Any]) -> Cluster:
    """A Cluster from a custom-resource body; a SpecError names the offending field."""
    meta = body.get("metadata") or {}
    for key in ("name", "namespace", "uid"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise SpecError(f"metadata.{key}", "is required")
    generation = meta.get("generation", 1)
    if not isinstance(generation, int):
        raise SpecError("metadata.generation", "must be an integer")
    return Cluster(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=generation,
        spec=parse_spec(body.get("spec")),
    )
