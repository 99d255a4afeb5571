"""Helpers of the operator tier: waiting, backends as the tests see them, and playing the kubelet.

There is no kubelet and no scheduler, so no container ever runs. When kube-controller-manager runs,
Deployments get ReplicaSets and Pods; `make_roles_ready` then plays the kubelet and marks those Pods
Ready through the pods/status subresource, and the controllers compute the Deployment status from
them, as in a real cluster. Without a controller-manager it writes the Deployment status itself.
The fixtures that use these helpers are in `conftest.py`.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import happybase
from aiokafka.admin import AIOKafkaAdminClient

from fishchat_operator import yamlio
from fishchat_operator.config import OperatorConfig
from fishchat_operator.constants import API_VERSION, KIND, LABEL_COMPONENT, LABEL_INSTANCE, ROLES
from fishchat_operator.kube import KubeClient

NAMESPACE_PATTERN = "fcc-test-*"
RBAC_DIR = Path(__file__).resolve().parents[2] / "operator" / "rbac"
OPERATOR_RBAC_FILES = ("namespace.yaml", "serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml")
OPERATOR_NAMESPACE = "fishchat-system"
OPERATOR_SERVICE_ACCOUNT = "fishchat-operator"
RESYNC_SECONDS = 2.0
AUTOSCALE_SECONDS = 2.0
WAIT_SECONDS = 90.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, within: float = WAIT_SECONDS, interval: float = 0.5
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}; last value: {last!r}")


# --- environment -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backends:
    kafka_bootstrap: str
    hbase_host: str
    hbase_port: int


# --- the operator ----------------------------------------------------------------------------------


@dataclass
class RunningOperator:
    """The in-process operator: its settings, endpoints and the flags that start and stop it."""

    config: OperatorConfig
    liveness_url: str
    stop_flag: threading.Event = field(default_factory=threading.Event)
    ready_flag: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.config.metrics_port}/metrics"


# --- per-test namespace, names and cleanup ---------------------------------------------------------


@dataclass
class Scenario:
    """One test's namespace and unique backend names, plus what to clean up."""

    namespace: str
    suffix: str
    backends: Backends

    @property
    def p2p_topic(self) -> str:
        return f"fcc_{self.suffix}_p2p"

    @property
    def group_topic(self) -> str:
        return f"fcc_{self.suffix}_group"

    @property
    def table(self) -> str:
        return f"fcc_{self.suffix}_im"

    def cluster(self, name: str = "demo", **spec: Any) -> dict[str, Any]:
        """A FishChatCluster body pointing at the stack's Kafka and HBase."""
        body_spec: dict[str, Any] = {
            "version": "0.1.0",
            "backends": {
                "kafka": {"bootstrapServers": [self.backends.kafka_bootstrap]},
                "hbase": {"thriftHost": self.backends.hbase_host, "thriftPort": self.backends.hbase_port},
                "redis": {"url": "redis://127.0.0.1:6379/0"},
                "mariadb": {"host": "127.0.0.1", "credentialsSecret": {"name": "fishchat-db"}},
                "etcd": {"endpoints": ["http://127.0.0.1:2379"]},
            },
            "topics": {
                "p2p": {"name": self.p2p_topic, "partitions": 2, "replicationFactor": 1},
                "group": {"name": self.group_topic, "partitions": 2, "replicationFactor": 1},
            },
            "table": {"name": self.table},
        }
        for key, value in spec.items():
            if isinstance(value, dict) and isinstance(body_spec.get(key), dict):
                body_spec[key] = {**body_spec[key], **value}
            else:
                body_spec[key] = value
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": body_spec,
        }


# --- the operator's own manifests -----------------------------------------------------------------


def rbac_manifests(names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The manifests of operator/rbac (all files, or the named ones), in file order."""
    paths = [RBAC_DIR / n for n in names] if names else sorted(RBAC_DIR.glob("*.yaml"))
    return [doc for path in paths for doc in yamlio.load_all(path.read_text())]


def write_token_kubeconfig(admin_kubeconfig: Path, token: str, destination: Path) -> None:
    """A kubeconfig for the same API server (and CA) as the admin one, authenticating with `token`."""
    admin = yamlio.load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "operator"}}],
        "current-context": "operator",
    }
    destination.write_text(yamlio.dump(config))


# --- Kafka and HBase as the tests see them ---------------------------------------------------------


async def describe_topics(bootstrap: str, names: list[str]) -> dict[str, tuple[int, int]]:
    """name -> (partitions, replication factor) for those that exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        present = set(await admin.list_topics()) & set(names)
        if not present:
            return {}
        return {
            t["topic"]: (len(t["partitions"]), max(len(p["replicas"]) for p in t["partitions"]))
            for t in await admin.describe_topics(sorted(present))
            if not t["error_code"]
        }
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        present = sorted(set(await admin.list_topics()) & set(names))
        if present:
            await admin.delete_topics(present)
    finally:
        await admin.close()


def table_families_sync(backends: Backends, table: str) -> list[str] | None:
    connection = happybase.Connection(backends.hbase_host, backends.hbase_port, timeout=10000)
    try:
        if table.encode() not in connection.tables():
            return None
        return sorted(f.decode() for f in connection.table(table).families())
    finally:
        connection.close()


def delete_table_sync(backends: Backends, table: str) -> None:
    connection = happybase.Connection(backends.hbase_host, backends.hbase_port, timeout=10000)
    try:
        if table.encode() in connection.tables():
            connection.delete_table(table, disable=True)
    finally:
        connection.close()


# --- playing the kubelet ---------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def make_roles_ready(
    kube: KubeClient, namespace: str, cluster: str, controller_wait: float = 20.0
) -> str:
    """Make every role's pods ready; returns how ("pods" via the controllers, or "deployments")."""
    deployments = {
        d["metadata"]["labels"][LABEL_COMPONENT]: d
        for d in await kube.list_objects("apps/v1", "Deployment", namespace, f"{LABEL_INSTANCE}={cluster}")
    }
    assert sorted(deployments) == sorted(r.value for r in ROLES)

    async def pods_of(role: str) -> list[dict[str, Any]]:
        selector = f"{LABEL_INSTANCE}={cluster},{LABEL_COMPONENT}={role}"
        return [
            p
            for p in await kube.list_objects("v1", "Pod", namespace, selector)
            if not p["metadata"].get("deletionTimestamp")
        ]

    async def all_pods_exist() -> bool:
        for role, deployment in deployments.items():
            if len(await pods_of(role)) < deployment["spec"]["replicas"]:
                return False
        return True

    try:
        await eventually(all_pods_exist, "ReplicaSets to create the pods", within=controller_wait)
    except AssertionError:
        # No controller-manager: nothing creates pods, so report the Deployments ready directly.
        for deployment in deployments.values():
            replicas = deployment["spec"]["replicas"]
            status = {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
            await kube.merge_patch(
                "apps/v1",
                "Deployment",
                namespace,
                deployment["metadata"]["name"],
                {"status": status},
                "status",
            )
        return "deployments"
    now = _now()
    ready_status = {
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        }
    }
    for role in deployments:
        for pod in await pods_of(role):
            await kube.merge_patch("v1", "Pod", namespace, pod["metadata"]["name"], ready_status, "status")
    return "pods"


async def cluster_status(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    obj = await kube.get(API_VERSION, KIND, namespace, name)
    return dict((obj or {}).get("status") or {})


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for item in status.get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return {}


async def wait_condition(
    kube: KubeClient,
    namespace: str,
    name: str,
    type_: str,
    status: str,
    reason: str | None = None,
    generation: int | None = None,
) -> dict[str, Any]:
    """Wait until condition `type_` has `status` (and `reason`); returns the whole status."""

    async def probe() -> dict[str, Any] | None:
        current = await cluster_status(kube, namespace, name)
        found = condition(current, type_)
        if found.get("status") != status or (reason is not None and found.get("reason") != reason):
            return None
        if generation is not None and current.get("observedGeneration") != generation:
            return None
        return current

    what = f"{type_}={status}" + (f" ({reason})" if reason else "") + f" on {namespace}/{name}"
    return await eventually(probe, what)
