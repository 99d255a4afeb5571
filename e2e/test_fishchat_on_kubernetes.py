"""FishChat's own Pods on a real node: helm install, chat through NodePorts, an access Pod deleted and
a rolling upgrade under steady traffic with nothing lost, and helm uninstall with each reclaimPolicy.

The tests run in file order and share one installation (module fixture `chat`): the operator runs
as a Pod from its image (installed by the chart), and reconciles the chart's FishChatCluster, whose
backends are the stack's Kafka, HBase, Redis, MariaDB and etcd as Pods reach them. Clients reach the
gateway, access and the HTTP API through their public Services (NodePort), as users outside the
cluster would; the gateway hands out access's public address.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import happybase
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from e2e.clusters import E2ECluster
from e2e.conftest import UPGRADE_TAG
from fishchat.client import Backoff, ChatClient, Endpoint
from fishchat.client.http import ApiClient
from fishchat.stack.base import repo_root
from fishchat.stack.images import project_version
from fishchat.stack.prometheus import remove_scrape_target, write_scrape_groups
from fishchat.stack.tools import HELM
from fishchat_operator.constants import API_VERSION, KIND, LABEL_COMPONENT, LABEL_INSTANCE
from fishchat_operator.kube import KubeClient
from tests.integration.harness import Inbox, register
from tests.traffic import Ledger, SteadyTraffic

pytestmark = pytest.mark.timeout(1200)

CHART = repo_root() / "helm" / "fishchat"
CLUSTER_NAME = "chat"
GATEWAY_NODE_PORT = 30100
ACCESS_NODE_PORT = 30110
API_NODE_PORT = 30120
METRICS_PORT = 9100
READY_WITHIN_S = 420.0
#: Steady traffic while an access Pod goes or every role rolls: pairs of users, messages/s in all.
PAIRS = 8
RATE = 40.0
#: Small requests: every role and a rolling update's extra Pods fit one 2-core node.
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}


@dataclass
class Installation:
    """One `helm install` of the chart with a FishChatCluster, and where its clients connect."""

    cluster: E2ECluster
    kube: KubeClient
    namespace: str
    release: str
    run: str
    reclaim: str
    installed: bool = False
    ready_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def gateway(self) -> Endpoint:
        return Endpoint(self.cluster.node_address, GATEWAY_NODE_PORT)

    @property
    def api_url(self) -> str:
        return f"http://{self.cluster.node_address}:{API_NODE_PORT}"

    @property
    def topics(self) -> tuple[str, str]:
        return f"e2e-{self.run}-p2p", f"e2e-{self.run}-group"

    @property
    def table(self) -> str:
        return f"e2e_{self.run}_im"

    def values(self, replicas: int) -> dict[str, Any]:
        node = self.cluster.node_address
        roles: dict[str, Any] = {
            role: {"replicas": replicas, "resources": RESOURCES}
            for role in ("gateway", "logic", "notify", "register", "manager", "idgen", "msgJob")
        }
        roles["gateway"] |= {"serviceType": "NodePort", "nodePort": GATEWAY_NODE_PORT}
        roles["register"] |= {"serviceType": "NodePort", "nodePort": API_NODE_PORT}
        roles["access"] = {
            "replicas": 2 * replicas,
            "resources": RESOURCES,
            "serviceType": "NodePort",
            "nodePort": ACCESS_NODE_PORT,
            "publicAddress": f"{node}:{ACCESS_NODE_PORT}",
            "terminationGracePeriodSeconds": 30,
            "preStopSleepSeconds": 2,
        }
        p2p, group = self.topics
        spec = {
            "reclaimPolicy": self.reclaim,
            "backends": dict(self.cluster.backends.spec),
            "topics": {
                "p2p": {"name": p2p, "partitions": 2, "replicationFactor": 1},
                "group": {"name": group, "partitions": 2, "replicationFactor": 1},
            },
            "table": {"name": self.table},
            "roles": roles,
        }
        return {
            "operator": {"watchNamespaces": [self.namespace], "resyncSeconds": 10},
            "cluster": {"enabled": True, "name": CLUSTER_NAME, "spec": spec, "deleteTimeoutSeconds": 240},
        }

    async def install(self, replicas: int = 1) -> None:
        await self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        backends = self.cluster.backends
        await self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "fishchat-mysql", "namespace": self.namespace},
                "stringData": {"username": backends.mysql_user, "password": backends.mysql_password},
            }
        )
        began = time.monotonic()
        await helm(
            "install", self.release, str(CHART), "--namespace", self.namespace, "--wait", "--timeout", "5m",
            "--values", values_file(self.values(replicas)),
            # The CRD may be there already (the operator tier applies it): take it over.
            "--force-conflicts",
        )  # fmt: skip
        self.installed = True
        await wait_cluster_ready(self.kube, self.namespace, READY_WITHIN_S)
        if replicas:
            await self.wait_node_ports()
        self.ready_s = time.monotonic() - began
        self.notes.append(f"helm install -> every Pod Ready: {self.ready_s:.0f}s")

    async def wait_node_ports(self) -> None:
        """Until the gateway, access and the HTTP API accept connections at their node ports (kube-proxy
        follows the endpoints a moment after the Pods are Ready)."""

        async def accepting(port: int) -> bool:
            try:
                _, writer = await asyncio.open_connection(self.cluster.node_address, port)
            except OSError:
                return False
            writer.close()
            return True

        for port in (GATEWAY_NODE_PORT, ACCESS_NODE_PORT, API_NODE_PORT):
            await wait_for(functools.partial(accepting, port), f"node port {port} to accept", 60.0)

    async def uninstall(self) -> None:
        await helm("uninstall", self.release, "--namespace", self.namespace, "--wait", "--timeout", "5m")
        self.installed = False


def values_file(values: dict[str, Any]) -> str:
    path = Path(f"/tmp/fishchat-e2e-values-{secrets.token_hex(4)}.yaml")
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return str(path)


async def helm(*args: str, limit_s: float = 600.0) -> str:
    process = await asyncio.create_subprocess_exec(
        str(await asyncio.to_thread(HELM.ensure)),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(limit_s):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        raise AssertionError(f"helm {' '.join(args[:2])} took more than {limit_s:.0f}s") from None
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"helm {' '.join(args)} failed:\n{text}"
    return text


async def cluster_status(kube: KubeClient, namespace: str) -> dict[str, Any]:
    body = await kube.get(API_VERSION, KIND, namespace, CLUSTER_NAME)
    return dict((body or {}).get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


async def deployments(kube: KubeClient, namespace: str) -> dict[str, dict[str, Any]]:
    found = await kube.list_objects("apps/v1", "Deployment", namespace, f"{LABEL_INSTANCE}={CLUSTER_NAME}")
    return {d["metadata"]["labels"][LABEL_COMPONENT]: d for d in found}


def rolled_out(deployment: dict[str, Any], image: str | None = None) -> bool:
    """Every replica updated, ready and available, the controller caught up (on `image`, if given)."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    want = spec["replicas"]
    containers = spec["template"]["spec"]["containers"]
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == want
        and status.get("readyReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
        and (image is None or all(c["image"] == image for c in containers))
    )


async def wait_cluster_ready(
    kube: KubeClient, namespace: str, within: float, image: str | None = None
) -> None:
    """Until the cluster says Ready (AllRolesReady) and every Deployment has rolled out."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        status = await cluster_status(kube, namespace)
        ready = condition(status, "Ready")
        found = await deployments(kube, namespace)
        last = (ready, {role: d.get("status") for role, d in found.items()})
        if ready.get("status") == "True" and found and all(rolled_out(d, image) for d in found.values()):
            return
        await asyncio.sleep(2.0)
    pods = await kube.list_objects("v1", "Pod", namespace)
    summary = [(p["metadata"]["name"], (p.get("status") or {}).get("phase")) for p in pods]
    raise AssertionError(f"not ready within {within:.0f}s: {last!r}; pods {summary}")


async def wait_pod_gone(kube: KubeClient, namespace: str, name: str, within: float) -> None:
    """Until the Pod object is gone (its grace period, and with it the drain, is over)."""
    deadline = time.monotonic() + within
    while await kube.get("v1", "Pod", namespace, name) is not None:
        assert time.monotonic() < deadline, f"pod {name} still there after {within:.0f}s"
        await asyncio.sleep(1.0)


async def topics_exist(bootstrap: str, names: tuple[str, ...]) -> dict[str, bool]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return {name: name in existing for name in names}


async def delete_topics(bootstrap: str, names: tuple[str, ...]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if wanted := [n for n in names if n in existing]:
            await admin.delete_topics(wanted)
    finally:
        await admin.close()


def table_exists(host: str, port: int, table: str, drop: bool = False) -> bool:
    connection = happybase.Connection(host, port, timeout=20_000)
    try:
        exists = table.encode() in connection.tables()
        if exists and drop:
            connection.delete_table(table, disable=True)
        return exists
    finally:
        connection.close()


def traffic_client(chat: Installation, uid: int, token: str, ledger: Ledger) -> ChatClient:
    """A client reconnecting through the gateway after any loss, as an app on a phone would."""
    return ChatClient(
        uid,
        token,
        gateway=chat.gateway,
        on_message=ledger.handler_for(uid),
        ping_interval=1.0,
        request_timeout=5.0,
        send_attempts=1,
        backoff=Backoff(base=0.2, cap=2.0, max_attempts=None),
    )


@contextlib.asynccontextmanager
async def steady_traffic(chat: Installation) -> AsyncIterator[SteadyTraffic]:
    # One at a time: password hashing is deliberately slow, and register has a small CPU request.
    accounts = [await register(chat.api_url) for _ in range(2 * PAIRS)]
    ledger = Ledger()
    clients = [traffic_client(chat, uid, token, ledger) for uid, token in accounts]
    traffic = SteadyTraffic(clients, ledger, RATE)
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        traffic.start()
        yield traffic
    finally:
        await traffic.cancel()
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


# --- the installation shared by the tests --------------------------------------------------------


@pytest.fixture(scope="module")
async def chat(cluster: E2ECluster, kube: KubeClient) -> AsyncIterator[Installation]:
    run = secrets.token_hex(3)
    installation = Installation(cluster, kube, f"fishchat-e2e-{run}", f"fc-{run}", run, "Retain")
    try:
        await installation.install()
        yield installation
    finally:
        if installation.installed:
            with contextlib.suppress(AssertionError):
                await installation.uninstall()
        await kube.delete("v1", "Namespace", None, installation.namespace)
        backends = cluster.backends
        await delete_topics(backends.kafka_from_tests, installation.topics)
        await asyncio.to_thread(table_exists, *backends.hbase_from_tests, installation.table, True)
        print("\n".join(installation.notes))


async def test_every_role_runs_ready_from_the_images(chat: Installation) -> None:
    found = await deployments(chat.kube, chat.namespace)
    assert sorted(found) == sorted(
        ["gateway", "access", "logic", "notify", "register", "manager", "idgen", "msg-job"]
    )
    image = f"ghcr.io/fishchat/fishchat:{project_version()}"
    assert all(rolled_out(d, image) for d in found.values()), {r: d.get("status") for r, d in found.items()}
    pods = await chat.kube.list_objects("v1", "Pod", chat.namespace)
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    operator = [p for p in running if p["metadata"]["labels"].get(LABEL_COMPONENT) == "operator"]
    assert operator, "the operator runs as a Pod from its image"
    assert (
        operator[0]["spec"]["containers"][0]["image"]
        == f"ghcr.io/fishchat/fishchat-operator:{project_version()}"
    )
    status = await cluster_status(chat.kube, chat.namespace)
    assert condition(status, "Ready")["reason"] == "AllRolesReady"
    assert status["topics"]["p2p"]["name"] == chat.topics[0]
    print(f"e2e: helm install -> all {len(running)} Pods Ready in {chat.ready_s:.0f}s")


async def test_p2p_and_group_through_node_ports(chat: Installation) -> None:
    users = [await register(chat.api_url) for _ in range(3)]
    inboxes = [Inbox() for _ in users]
    clients = [
        ChatClient(
            uid, token, gateway=chat.gateway, on_message=inbox, ping_interval=1.0, request_timeout=10.0
        )
        for (uid, token), inbox in zip(users, inboxes, strict=True)
    ]
    owner_token = users[0][1]
    async with ApiClient(chat.api_url, token=owner_token) as api:
        gid = await api.create_group("e2e")
    for _, token in users[1:]:
        async with ApiClient(chat.api_url, token=token) as api:
            await api.join_group(gid)
    try:
        for client in clients:
            await client.connect()
            # The gateway hands out access's public address, the NodePort every access Pod is behind.
            assert client.access_endpoint == Endpoint(chat.cluster.node_address, ACCESS_NODE_PORT)
        ack = await clients[0].send_p2p(users[1][0], "hello over the node", msg_id="e2e-1")
        assert ack.version >= 1
        received = (await inboxes[1].wait_bodies("hello over the node", timeout_s=30))[0]
        assert (received.source_uid, received.msg_type) == (users[0][0], "p2p")
        for n, client in enumerate(clients):
            await client.send_group(gid, f"group {n}")
        for inbox in inboxes:
            got = await inbox.wait_bodies("group 0", "group 1", "group 2", timeout_s=30)
            assert [m.body for m in got if m.group_id == gid] == ["group 0", "group 1", "group 2"]
    finally:
        for client in clients:
            await client.close()


async def test_deleting_an_access_pod_under_traffic_loses_nothing(chat: Installation) -> None:
    selector = f"{LABEL_INSTANCE}={CLUSTER_NAME},{LABEL_COMPONENT}=access"
    async with steady_traffic(chat) as traffic:
        await asyncio.sleep(5.0)
        victim = (await chat.kube.list_objects("v1", "Pod", chat.namespace, selector))[0]["metadata"]["name"]
        deleted_at = time.monotonic()
        await chat.kube.delete("v1", "Pod", chat.namespace, victim)
        await wait_pod_gone(chat.kube, chat.namespace, victim, READY_WITHIN_S)
        await wait_cluster_ready(chat.kube, chat.namespace, READY_WITHIN_S)
        replaced_s = time.monotonic() - deleted_at
        await asyncio.sleep(5.0)
        await traffic.stop_and_settle()
        reconnected = sum(1 for c in traffic.clients if c.stats.reconnects >= 1)
    report = traffic.report(f"access pod {victim} deleted (replacement Ready after {replaced_s:.0f}s)")
    chat.notes.append(report)
    print(report)
    traffic.verify(report)
    assert reconnected >= 1, f"no client was moved off the deleted pod: {report}"


async def test_rolling_upgrade_under_traffic_loses_nothing(chat: Installation) -> None:
    image = f"ghcr.io/fishchat/fishchat:{UPGRADE_TAG}"
    async with steady_traffic(chat) as traffic:
        await asyncio.sleep(5.0)
        began = time.monotonic()
        await helm(
            "upgrade", chat.release, str(CHART), "--namespace", chat.namespace, "--reuse-values",
            "--set", f"cluster.spec.version={UPGRADE_TAG}", "--wait", "--timeout", "5m",
        )  # fmt: skip
        await wait_cluster_ready(chat.kube, chat.namespace, READY_WITHIN_S, image=image)
        rolled_s = time.monotonic() - began
        await asyncio.sleep(5.0)
        await traffic.stop_and_settle()
    report = traffic.report(f"rolling upgrade to {UPGRADE_TAG} (every role rolled in {rolled_s:.0f}s)")
    chat.notes.append(report)
    print(report)
    traffic.verify(report)


@contextlib.asynccontextmanager
async def access_pods_scraped(chat: Installation) -> AsyncIterator[None]:
    """The stack's Prometheus scrapes the cluster's running access Pods, labelled with their namespace
    and pod name, as a ServiceMonitor or pod discovery would have it scrape them in a cluster (the
    stack's Prometheus discovers targets from files; this keeps the file up to date)."""
    job = f"e2e-access-{chat.run}"
    selector = f"{LABEL_INSTANCE}={CLUSTER_NAME},{LABEL_COMPONENT}=access"

    async def follow() -> None:
        while True:
            groups = [
                {
                    "targets": [f"{pod['status']['podIP']}:{METRICS_PORT}"],
                    "labels": {"job": job, "namespace": chat.namespace, "pod": pod["metadata"]["name"]},
                }
                for pod in await chat.kube.list_objects("v1", "Pod", chat.namespace, selector)
                if (pod.get("status") or {}).get("podIP") and not pod["metadata"].get("deletionTimestamp")
            ]
            write_scrape_groups(job, groups)
            await asyncio.sleep(1.0)

    task = asyncio.create_task(follow())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        remove_scrape_target(job)


async def access_replicas(chat: Installation) -> int:
    deployment = await chat.kube.get("apps/v1", "Deployment", chat.namespace, f"{CLUSTER_NAME}-access")
    return int((deployment or {}).get("spec", {}).get("replicas", -1))


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, within: float) -> float:
    """Seconds until `check` holds; fails after `within`."""
    began = time.monotonic()
    while not await check():
        assert time.monotonic() - began < within, f"not within {within:.0f}s: {what}"
        await asyncio.sleep(1.0)
    return time.monotonic() - began


async def test_access_autoscales_on_connections_with_pods(chat: Installation) -> None:
    """Connections rise: the operator, reading Prometheus, adds an access Pod within 30 s; they fall:
    after the window it removes the emptiest Pod, whose clients move without a message lost."""
    prometheus = chat.cluster.prometheus_url
    assert prometheus, "the cluster names no Prometheus that Pods reach"
    assert await access_replicas(chat) == 2
    autoscaling = {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 3,
        "targetConnectionsPerPod": 6,
        "scaleDownWindowSeconds": 10,
        "prometheus": {"url": prometheus},
    }
    async with access_pods_scraped(chat), steady_traffic(chat) as traffic:
        # 16 connections at 6 per pod need 3 pods.
        await chat.kube.merge_patch(
            API_VERSION, KIND, chat.namespace, CLUSTER_NAME, {"spec": {"autoscaling": autoscaling}}
        )
        up_s = await wait_for(lambda: _equals(access_replicas(chat), 3), "access to scale up to 3", 30.0)
        await wait_cluster_ready(chat.kube, chat.namespace, READY_WITHIN_S)
        # Half the users leave: 8 connections need 2 pods; the emptiest goes after the window.
        leaving = [s.client for s in traffic.senders[: PAIRS // 2]] + [
            s.client for s in traffic.senders[PAIRS : PAIRS + PAIRS // 2]
        ]
        staying = [s for s in traffic.senders if s.client not in leaving]
        await traffic.retire([s for s in traffic.senders if s.client in leaving])
        down_s = await wait_for(lambda: _equals(access_replicas(chat), 2), "access to scale down to 2", 120.0)
        await wait_cluster_ready(chat.kube, chat.namespace, READY_WITHIN_S)
        await asyncio.sleep(5.0)
        await traffic.stop_and_settle()
    status = await cluster_status(chat.kube, chat.namespace)
    assert status["autoscaling"]["desiredReplicas"] == 2, status.get("autoscaling")
    report = traffic.report(
        f"access autoscaling with Pods (up to 3 in {up_s:.0f}s, down to 2 {down_s:.0f}s after the "
        f"connections fell)"
    )
    chat.notes.append(report)
    print(report)
    assert len(staying) == PAIRS
    traffic.verify(report)
    await chat.kube.merge_patch(
        API_VERSION, KIND, chat.namespace, CLUSTER_NAME, {"spec": {"autoscaling": {"enabled": False}}}
    )


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_uninstall_with_retain_keeps_topics_and_table(chat: Installation) -> None:
    backends = chat.cluster.backends
    await chat.uninstall()
    assert await chat.kube.get(API_VERSION, KIND, chat.namespace, CLUSTER_NAME) is None
    assert not await deployments(chat.kube, chat.namespace)
    assert await topics_exist(backends.kafka_from_tests, chat.topics) == dict.fromkeys(chat.topics, True)
    assert await asyncio.to_thread(table_exists, *backends.hbase_from_tests, chat.table)


async def test_uninstall_with_delete_removes_topics_and_table(cluster: E2ECluster, kube: KubeClient) -> None:
    run = secrets.token_hex(3)
    doomed = Installation(cluster, kube, f"fishchat-e2e-{run}", f"fc-{run}", run, "Delete")
    backends = cluster.backends
    try:
        # No role Pods needed to see the reclaim policy applied: only the operator and its backends.
        await doomed.install(replicas=0)
        assert await topics_exist(backends.kafka_from_tests, doomed.topics) == dict.fromkeys(
            doomed.topics, True
        )
        assert await asyncio.to_thread(table_exists, *backends.hbase_from_tests, doomed.table)
        await doomed.uninstall()
        assert await kube.get(API_VERSION, KIND, doomed.namespace, CLUSTER_NAME) is None
        assert await topics_exist(backends.kafka_from_tests, doomed.topics) == dict.fromkeys(
            doomed.topics, False
        )
        assert not await asyncio.to_thread(table_exists, *backends.hbase_from_tests, doomed.table)
    finally:
        if doomed.installed:
            with contextlib.suppress(AssertionError):
                await doomed.uninstall()
        await kube.delete("v1", "Namespace", None, doomed.namespace)
        await delete_topics(backends.kafka_from_tests, doomed.topics)
        await asyncio.to_thread(table_exists, *backends.hbase_from_tests, doomed.table, True)
