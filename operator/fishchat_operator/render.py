"""`render(cluster) -> manifests`: every Kubernetes child of a FishChatCluster, as plain dicts.

Pure: the same cluster always gives the same list, in the same order, so server-side apply of the
whole list is idempotent and golden files can pin the output. Each role gets a ConfigMap (its TOML),
a Service, a Deployment and a PodDisruptionBudget; the cluster gets one ServiceAccount. Every object
carries the recommended `app.kubernetes.io/*` labels and a controller owner reference to the cluster,
so Kubernetes garbage-collects them with it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from fishchat_operator.constants import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_SCRAPE,
    ANNOTATION_SCRAPE_PATH,
    ANNOTATION_SCRAPE_PORT,
    API_VERSION,
    APP_NAME,
    CLI_COMMAND,
    COMPONENT_SHARED,
    CONFIG_MOUNT_PATH,
    CONFIG_VOLUME,
    CONNECTIONS_METRIC,
    CONTAINER_NAME,
    ENV_ADVERTISE_HOST,
    ENV_CONFIG,
    ENV_INSTANCE,
    ENV_MYSQL_PASSWORD,
    ENV_MYSQL_USER,
    ENV_REDIS_PASSWORD,
    HEALTHZ_PATH,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_VERSION,
    METRICS_PATH,
    OPERATOR_NAME,
    PART_OF,
    READYZ_PATH,
    ROLES,
    RUN_AS_GROUP,
    RUN_AS_USER,
    TERMINATION_GRACE_SECONDS,
    TLS_MOUNT_PATH,
    TLS_VOLUME,
    TMP_VOLUME,
    AutoscalingMode,
    Port,
    PortName,
    Role,
    ServiceType,
)
from fishchat_operator.model import AccessSpec, Cluster, ExposedRoleSpec, Quantities
from fishchat_operator.roleconfig import (
    CLIENT_PORT,
    GRPC_PORT,
    HTTP_PORT,
    MYSQL_ROLES,
    REDIS_ROLES,
    WS_PORT,
    config_file_name,
    render_role_config,
)

Manifest = dict[str, Any]

REVISION_HISTORY_LIMIT: Final = 5
HOSTNAME_TOPOLOGY_KEY: Final = "kubernetes.io/hostname"
# The HorizontalPodAutoscaler's period bounds (autoscaling/v2 HPAScalingPolicy.periodSeconds).
HPA_MAX_PERIOD_SECONDS: Final = 1800


def render(cluster: Cluster) -> list[Manifest]:
    """Every child of `cluster`: the ServiceAccount, then per role ConfigMap, Service, Deployment, PDB
    (and the public Service of an exposed role), then the access HorizontalPodAutoscaler when
    autoscaling is delegated to one."""
    manifests: list[Manifest] = [service_account(cluster)]
    for role in ROLES:
        config = config_map(cluster, role)
        manifests += [config, service(cluster, role), deployment(cluster, role, config), pdb(cluster, role)]
        if role in EXPOSED_ROLES:
            manifests.append(public_service(cluster, role))
    if wants_hpa(cluster):
        manifests.append(horizontal_pod_autoscaler(cluster))
    return manifests


# --- names and labels ------------------------------------------------------------------------------


def child_name(cluster: Cluster, role: Role) -> str:
    return f"{cluster.name}-{role.value}"


def service_account_name(cluster: Cluster) -> str:
    return f"{cluster.name}-fishchat"


def selector_labels(cluster: Cluster, component: str) -> dict[str, str]:
    """The immutable subset used in selectors: never the version, which changes on upgrade."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: cluster.name, LABEL_COMPONENT: component}


def labels(cluster: Cluster, component: str) -> dict[str, str]:
    return {
        **selector_labels(cluster, component),
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: OPERATOR_NAME,
        LABEL_VERSION: cluster.spec.version,
    }


def selector_string(cluster: Cluster, role: Role) -> str:
    """A label selector in string form, as the scale subresource publishes it."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(cluster, role.value).items()))


def owner_reference(cluster: Cluster) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": cluster.name,
        "uid": cluster.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(cluster: Cluster, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": cluster.namespace,
        "labels": labels(cluster, component),
        "ownerReferences": [owner_reference(cluster)],
    }


# --- children --------------------------------------------------------------------------------------


def service_account(cluster: Cluster) -> Manifest:
    # The services never call the Kubernetes API, so no token is mounted.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(cluster, service_account_name(cluster), COMPONENT_SHARED),
        "automountServiceAccountToken": False,
    }


def config_map(cluster: Cluster, role: Role) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(cluster, child_name(cluster, role), role.value),
        "data": {config_file_name(role): render_role_config(cluster, role)},
    }


def container_ports(role: Role) -> list[tuple[PortName, Port]]:
    ports: list[tuple[PortName, Port]] = []
    if role in CLIENT_PORT:
        ports.append((PortName.CLIENT, CLIENT_PORT[role]))
    if role in WS_PORT:
        ports.append((PortName.WS, WS_PORT[role]))
    if role in GRPC_PORT:
        ports.append((PortName.GRPC, GRPC_PORT[role]))
    if role in HTTP_PORT:
        ports.append((PortName.HTTP, HTTP_PORT[role]))
    ports.append((PortName.METRICS, Port.METRICS))
    return ports


def service(cluster: Cluster, role: Role) -> Manifest:
    """The role's Service inside the cluster: every port, ClusterIP."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cluster, child_name(cluster, role), role.value),
        "spec": {
            "type": ServiceType.CLUSTER_IP.value,
            "selector": selector_labels(cluster, role.value),
            "ports": [
                {"name": name.value, "port": port.value, "targetPort": name.value, "protocol": "TCP"}
                for name, port in container_ports(role)
            ],
        },
    }


#: Roles a serviceType can expose outside the cluster (their spec is an ExposedRoleSpec).
EXPOSED_ROLES: Final = (Role.GATEWAY, Role.ACCESS, Role.REGISTER)


def public_service_name(cluster: Cluster, role: Role) -> str:
    return f"{child_name(cluster, role)}-public"


def public_ports(role: Role) -> list[tuple[PortName, Port]]:
    """The ports clients outside the cluster use: the client protocol (and WebSocket), the HTTP API."""
    return [(n, p) for n, p in container_ports(role) if n in (PortName.CLIENT, PortName.WS, PortName.HTTP)]


def public_service(cluster: Cluster, role: Role) -> Manifest:
    """The Service that exposes a role's client-facing ports outside the cluster, of its serviceType.

    A Service of its own, so that NodePort or LoadBalancer never exposes gRPC or metrics; it exists
    (as ClusterIP) when the role is not exposed too, so a change of serviceType is one apply each way."""
    role_spec = cluster.spec.roles.of(role)
    assert isinstance(role_spec, ExposedRoleSpec), role
    node_ports: dict[PortName, int | None] = {}
    if role_spec.service_type is not ServiceType.CLUSTER_IP:
        node_ports = {PortName.CLIENT: role_spec.node_port, PortName.HTTP: role_spec.node_port}
        if isinstance(role_spec, AccessSpec):
            node_ports[PortName.WS] = role_spec.ws_node_port
    ports: list[dict[str, Any]] = []
    for name, port in public_ports(role):
        entry: dict[str, Any] = {"name": name.value, "port": port.value, "targetPort": name.value}
        entry["protocol"] = "TCP"
        if (node_port := node_ports.get(name)) is not None:
            entry["nodePort"] = node_port
        ports.append(entry)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cluster, public_service_name(cluster, role), role.value),
        "spec": {
            "type": role_spec.service_type.value,
            "selector": selector_labels(cluster, role.value),
            "ports": ports,
        },
    }


def pdb(cluster: Cluster, role: Role) -> Manifest:
    # maxUnavailable rather than minAvailable: a one-replica role can still be drained off a node.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(cluster, child_name(cluster, role), role.value),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(cluster, role.value)}},
    }


def wants_hpa(cluster: Cluster) -> bool:
    autoscaling = cluster.spec.autoscaling
    return autoscaling.enabled and autoscaling.mode is AutoscalingMode.HPA


def hpa_name(cluster: Cluster) -> str:
    return child_name(cluster, Role.ACCESS)


def horizontal_pod_autoscaler(cluster: Cluster) -> Manifest:
    """mode HPA: an autoscaling/v2 HPA on the cluster's scale subresource (the access replicas), on
    the access pods' connection count as a custom metric (a custom-metrics adapter, e.g.
    prometheus-adapter, serves it from Prometheus). Scale-down follows the same window and step as
    the operator's own loop, one step per drain (the access grace period)."""
    policy = cluster.spec.autoscaling
    drain = cluster.spec.roles.access.termination_grace_period_seconds
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(cluster, hpa_name(cluster), Role.ACCESS.value),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": cluster.name},
            "minReplicas": policy.min_replicas,
            "maxReplicas": policy.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": CONNECTIONS_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(policy.target_connections_per_pod),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": policy.scale_down_window_seconds,
                    "policies": [
                        {
                            "type": "Pods",
                            "value": policy.scale_down_step,
                            "periodSeconds": min(drain, HPA_MAX_PERIOD_SECONDS),
                        }
                    ],
                },
            },
        },
    }


def config_hash(config: Manifest) -> str:
    text = "\n".join(f"{k}\n{v}" for k, v in sorted(config["data"].items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _quantities(quantities: Quantities) -> dict[str, str]:
    return {k: v for k, v in (("cpu", quantities.cpu), ("memory", quantities.memory)) if v is not None}


def _probes(role: Role) -> dict[str, Any]:
    """Readiness asks whether the role serves (gRPC roles answer the gRPC health protocol, which says
    NOT_SERVING while a backend is unreachable or the pod drains); liveness only whether the process
    is alive (/healthz), so a backend outage never restarts every pod. A startup probe gives a slow
    start (a busy node) two minutes before liveness counts; liveness then tolerates a minute of
    missed answers, since a restart under load only adds load."""
    live = {"httpGet": {"path": HEALTHZ_PATH, "port": PortName.METRICS.value}}
    ready: dict[str, Any] = (
        {"grpc": {"port": GRPC_PORT[role].value}}
        if role in GRPC_PORT
        else {"httpGet": {"path": READYZ_PATH, "port": PortName.METRICS.value}}
    )
    return {
        "startupProbe": {**live, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 60},
        "readinessProbe": {**ready, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {**live, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
    }


def _env(cluster: Cluster, role: Role) -> list[dict[str, Any]]:
    backends = cluster.spec.backends
    env: list[dict[str, Any]] = [
        {"name": ENV_CONFIG, "value": f"{CONFIG_MOUNT_PATH}/{config_file_name(role)}"},
        {"name": ENV_ADVERTISE_HOST, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": ENV_INSTANCE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if role in MYSQL_ROLES:
        secret = backends.mariadb.credentials_secret
        env += [
            {
                "name": ENV_MYSQL_USER,
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.username_key}},
            },
            {
                "name": ENV_MYSQL_PASSWORD,
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.password_key}},
            },
        ]
    redis_secret = backends.redis.password_secret
    if role in REDIS_ROLES and redis_secret is not None:
        env.append(
            {
                "name": ENV_REDIS_PASSWORD,
                "valueFrom": {"secretKeyRef": {"name": redis_secret.name, "key": redis_secret.key}},
            }
        )
    return env


def deployment(cluster: Cluster, role: Role, config: Manifest) -> Manifest:
    spec = cluster.spec
    role_spec = spec.roles.of(role)
    selector = selector_labels(cluster, role.value)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": f"{spec.image}:{spec.version}",
        "imagePullPolicy": spec.image_pull_policy.value,
        "command": list(CLI_COMMAND),
        "args": ["serve", role.value, "--config", f"{CONFIG_MOUNT_PATH}/{config_file_name(role)}"],
        "ports": [
            {"name": name.value, "containerPort": port.value, "protocol": "TCP"}
            for name, port in container_ports(role)
        ],
        "env": _env(cluster, role),
        "resources": {
            k: v
            for k, v in (
                ("requests", _quantities(role_spec.resources.requests)),
                ("limits", _quantities(role_spec.resources.limits)),
            )
            if v
        },
        **_probes(role),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT_PATH, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
    }
    grace = TERMINATION_GRACE_SECONDS
    if isinstance(role_spec, AccessSpec):
        grace = role_spec.termination_grace_period_seconds
        if role_spec.pre_stop_sleep_seconds > 0:
            # Wait until endpoints and load balancers forget the pod, then SIGTERM starts the drain
            # (stop accepting, tell clients to reconnect elsewhere, wait for them to leave).
            container["lifecycle"] = {"preStop": {"sleep": {"seconds": role_spec.pre_stop_sleep_seconds}}}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": service_account_name(cluster),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_GROUP,
            "fsGroup": RUN_AS_GROUP,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": HOSTNAME_TOPOLOGY_KEY,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
        "containers": [container],
        "volumes": [
            {"name": CONFIG_VOLUME, "configMap": {"name": config["metadata"]["name"]}},
            {"name": TMP_VOLUME, "emptyDir": {}},
        ],
    }
    if spec.tls is not None:
        # The certificate and key, readable by the pods' group only.
        pod_spec["volumes"].append(
            {"name": TLS_VOLUME, "secret": {"secretName": spec.tls.secret_name, "defaultMode": 0o440}}
        )
        container["volumeMounts"].append({"name": TLS_VOLUME, "mountPath": TLS_MOUNT_PATH, "readOnly": True})
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in spec.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cluster, child_name(cluster, role), role.value),
        "spec": {
            "replicas": role_spec.replicas,
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "selector": {"matchLabels": selector},
            # Surge rather than unavailability: capacity never dips during a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(cluster, role.value),
                    "annotations": {
                        ANNOTATION_CONFIG_HASH: config_hash(config),
                        ANNOTATION_SCRAPE: "true",
                        ANNOTATION_SCRAPE_PORT: str(Port.METRICS.value),
                        ANNOTATION_SCRAPE_PATH: METRICS_PATH,
                    },
                },
                "spec": pod_spec,
            },
        },
    }
