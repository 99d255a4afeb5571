"""Every name the operator writes into the cluster or reads back from it, in one place.

Labels, annotations, the finalizer, role names, ports and the API coordinates of the custom resource
are part of the operator's contract with the cluster (and with whoever upgrades it): a typo or a silent
rename would orphan live objects. Keeping them here as named constants makes every such name greppable
and reviewed once.
"""

from __future__ import annotations

import enum
from typing import Final

# --- the custom resource ---------------------------------------------------------------------------

GROUP: Final = "fishchat.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "FishChatCluster"
LIST_KIND: Final = "FishChatClusterList"
PLURAL: Final = "fishchatclusters"
SINGULAR: Final = "fishchatcluster"
SHORT_NAMES: Final = ("fcc",)
CATEGORIES: Final = ("fishchat",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# --- our own prefix for annotations, the finalizer and kopf's bookkeeping --------------------------

PREFIX: Final = GROUP
FINALIZER: Final = f"{PREFIX}/finalizer"
ANNOTATION_CONFIG_HASH: Final = f"{PREFIX}/config-hash"
# Read by the ReplicaSet controller: on a scale-down, pods with the lowest cost go first. The
# autoscaler sets it to each access pod's connection count just before it scales down.
ANNOTATION_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
# The conventional annotations Prometheus' kubernetes-pods scrape job reads (the community chart's
# default configuration); a prometheus-operator PodMonitor on the metrics port does the same job.
ANNOTATION_SCRAPE: Final = "prometheus.io/scrape"
ANNOTATION_SCRAPE_PORT: Final = "prometheus.io/port"
ANNOTATION_SCRAPE_PATH: Final = "prometheus.io/path"
METRICS_PATH: Final = "/metrics"
# Every access pod's live logged-in connections (a gauge): what autoscaling sums, and the custom
# metric a rendered HorizontalPodAutoscaler asks for.
CONNECTIONS_METRIC: Final = "fishchat_access_connections"
# kopf stores its handler progress and the last handled spec in annotations under our prefix, so
# the status stays ours alone and nothing mentions kopf's default domain.
KOPF_PROGRESS_PREFIX: Final = PREFIX
KOPF_DIFFBASE_ANNOTATION: Final = "last-handled-configuration"

# The name every server-side apply uses; it owns exactly the fields the operator renders.
FIELD_MANAGER: Final = "fishchat-operator"
OPERATOR_NAME: Final = "fishchat-operator"

# --- recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/)

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_VERSION: Final = "app.kubernetes.io/version"

APP_NAME: Final = "fishchat"
PART_OF: Final = "fishchat"
COMPONENT_SHARED: Final = "shared"  # objects used by every role (the service account)


class Role(enum.StrEnum):
    """The server roles of design §2 that run as Deployments; the value is the Kubernetes name part."""

    GATEWAY = "gateway"
    ACCESS = "access"
    LOGIC = "logic"
    NOTIFY = "notify"
    REGISTER = "register"
    MANAGER = "manager"
    IDGEN = "idgen"
    MSG_JOB = "msg-job"

    @property
    def spec_key(self) -> str:
        """The key of this role under `spec.roles` and `status.roles` (camelCase, as the API likes)."""
        head, *rest = self.value.split("-")
        return head + "".join(part.capitalize() for part in rest)


# Deployment order does not matter to Kubernetes, but a stable order keeps rendered output,
# golden files and event messages deterministic.
ROLES: Final = tuple(Role)


class Port(enum.IntEnum):
    """Container ports; the client and gRPC ports keep the original system's defaults."""

    GATEWAY_CLIENT = 10000
    ACCESS_CLIENT = 11000
    ACCESS_WS = 11001  # the same protocol over WebSocket, for browsers
    ACCESS_GRPC = 20000
    LOGIC_GRPC = 21000
    REGISTER_GRPC = 23000
    REGISTER_HTTP = 6001
    MANAGER_GRPC = 24000
    NOTIFY_GRPC = 25000
    IDGEN_GRPC = 31000
    METRICS = 9100  # /metrics, /healthz and /readyz of every role


class PortName(enum.StrEnum):
    CLIENT = "client"
    WS = "ws"
    GRPC = "grpc"
    HTTP = "http"
    METRICS = "metrics"


# --- pods ------------------------------------------------------------------------------------------

CONTAINER_NAME: Final = "fishchat"
CONFIG_VOLUME: Final = "config"
CONFIG_MOUNT_PATH: Final = "/etc/fishchat"
TLS_VOLUME: Final = "tls"
TLS_MOUNT_PATH: Final = "/etc/fishchat-tls"  # not inside the read-only config volume
TMP_VOLUME: Final = "tmp"
RUN_AS_USER: Final = 10001
RUN_AS_GROUP: Final = 10001
HEALTHZ_PATH: Final = "/healthz"
READYZ_PATH: Final = "/readyz"

# Environment overrides follow the services' rule FISHCHAT_<SECTION>_<KEY> (a TOML key `server.x`
# is overridden by FISHCHAT_SERVER_X), so secrets and pod facts never land in a ConfigMap.
ENV_CONFIG: Final = "FISHCHAT_CONFIG"
ENV_ADVERTISE_HOST: Final = "FISHCHAT_SERVER_ADVERTISE_HOST"
ENV_INSTANCE: Final = "FISHCHAT_SERVER_INSTANCE"
ENV_MYSQL_USER: Final = "FISHCHAT_MYSQL_USER"
ENV_MYSQL_PASSWORD: Final = "FISHCHAT_MYSQL_PASSWORD"
ENV_REDIS_PASSWORD: Final = "FISHCHAT_REDIS_PASSWORD"
CLI_COMMAND: Final = ("fishchat",)
TERMINATION_GRACE_SECONDS: Final = 30  # every role but access, which has its own setting

# --- backends --------------------------------------------------------------------------------------

TABLE_FAMILIES: Final = ("user", "msg")
TOPIC_KEYS: Final = ("p2p", "group")

# --- status conditions -----------------------------------------------------------------------------


class ConditionType(enum.StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    # Access autoscaling can read its metric (only while spec.autoscaling.enabled; the name and the
    # meaning are the HorizontalPodAutoscaler's).
    SCALING_ACTIVE = "ScalingActive"


class Reason(enum.StrEnum):
    """Condition and Event reasons (CamelCase, as Kubernetes expects)."""

    ALL_ROLES_READY = "AllRolesReady"
    ROLES_NOT_READY = "RolesNotReady"
    ROLLING_OUT = "RollingOut"
    RECONCILED = "Reconciled"
    AS_EXPECTED = "AsExpected"
    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    KAFKA_UNAVAILABLE = "KafkaUnavailable"
    TOPIC_FAILED = "TopicFailed"
    PARTITION_SHRINK_REFUSED = "PartitionShrinkRefused"
    REPLICATION_FACTOR_CHANGE_REFUSED = "ReplicationFactorChangeRefused"
    HBASE_UNAVAILABLE = "HBaseUnavailable"
    TABLE_FAMILIES_MISMATCH = "TableFamiliesMismatch"
    BACKENDS_UNAVAILABLE = "BackendsUnavailable"
    # Access autoscaling (ScalingActive, and Degraded for the first three)
    PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
    INVALID_QUERY = "InvalidQuery"
    MISSING_METRICS = "MissingMetrics"
    VALID_METRIC = "ValidMetric"
    NO_READY_PODS = "NoReadyPods"
    HPA_PENDING = "HorizontalPodAutoscalerPending"
    # Event-only reasons
    CHILDREN_CREATED = "ChildrenCreated"
    TOPIC_CREATED = "TopicCreated"
    PARTITIONS_INCREASED = "PartitionsIncreased"
    TABLE_CREATED = "TableCreated"
    CLUSTER_READY = "ClusterReady"
    RECOVERED = "Recovered"
    RECLAIM_RETAINED = "ReclaimRetained"
    RECLAIM_DELETED = "ReclaimDeleted"
    RECLAIM_FAILED = "ReclaimFailed"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"


class ReclaimPolicy(enum.StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class AutoscalingMode(enum.StrEnum):
    """Who moves the access replicas: the operator's own loop, or a HorizontalPodAutoscaler it renders."""

    OPERATOR = "Operator"
    HPA = "HPA"


class ServiceType(enum.StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class PullPolicy(enum.StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"
