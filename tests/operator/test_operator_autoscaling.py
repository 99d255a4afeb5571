"""Access autoscaling against the stack's API server and Prometheus, with real access servers.

The chat's other roles run as their own processes (`fishchat.cluster.Cluster`, without access
servers); each access Pod of the FishChatCluster runs as a real `fishchat serve access` process with
the ConfigMap the operator rendered (`AccessPods` plays the kubelet), and the stack's Prometheus scrapes
it with the `namespace` and `pod` labels, as in a cluster. Real `ChatClient`s, through the gateway or
straight to one access server, make the connection count. The operator reads it with the cluster's
query, exactly as it does in a cluster, and writes the replicas through the scale subresource; the
kube-controller-manager's ReplicaSet controller then creates or deletes Pods (honouring the
pod-deletion-cost the operator set), and the pods' processes start or drain.

- connections rise: replicas rise within 30 s; connections fall: after the window, one step at a
  time, the emptiest pod first;
- under steady traffic, a scale-down drains a pod with clients on it: 0 lost, 0 duplicated,
  0 reordered messages, and no send fails in the application;
- Prometheus unreachable, a bad query, no series: a condition, and the replicas stay;
- autoscaling off: a manual `kubectl scale` stays; mode HPA: an HPA on the scale subresource and
  no replica writes by the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fishchat.client import ChatClient, Endpoint
from fishchat.cluster import Cluster
from fishchat_operator.constants import (
    ANNOTATION_DELETION_COST,
    API_VERSION,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
)
from fishchat_operator.kube import KubeClient
from tests.integration.cluster_fixtures import running_cluster
from tests.integration.harness import register
from tests.operator.access_pods import AccessPods, child_env
from tests.operator.harness import (
    AUTOSCALE_SECONDS,
    Scenario,
    cluster_status,
    condition,
    eventually,
    free_port,
    wait_condition,
)
from tests.traffic import Ledger, SteadyTraffic

pytestmark = pytest.mark.timeout(420)

OTHER_ROLES = ("gateway", "logic", "notify", "register", "manager", "idgen", "msgJob")
#: Scale-up must show in the replicas within this long of the connections (the issue's bound).
SCALE_UP_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def chat(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Every role but access as its own process; the access servers are the Pods' processes."""
    with running_cluster(tmp_path_factory.mktemp("chat"), access=0) as cluster:
        yield cluster


def autoscaled(
    scenario: Scenario, chat: Cluster, *, replicas: int, enabled: bool = True, **autoscaling: Any
) -> dict[str, Any]:
    """A FishChatCluster whose access pods join `chat` (its etcd and registry prefix); no other role's
    pods (those run as `chat`'s processes). The access pods ask for more CPU than any node has, so
    the stack's node never takes them, not even while the e2e tier lifts its reserving taint: their
    containers are the local processes of `AccessPods`."""
    etcd = chat.serve_config().etcd.endpoints.split(",")[0]
    body = scenario.cluster(
        roles={
            **{role: {"replicas": 0} for role in OTHER_ROLES},
            "access": {
                "replicas": replicas,
                "terminationGracePeriodSeconds": 15,
                "preStopSleepSeconds": 1,
                "resources": {"requests": {"cpu": "1000"}},
            },
        },
        autoscaling={"enabled": enabled, **autoscaling},
    )
    body["spec"]["backends"]["etcd"] = {"endpoints": [f"http://{etcd}"], "prefix": chat.namespace.etcd_root}
    return body


async def access_replicas(kube: KubeClient, namespace: str) -> tuple[int, int]:
    """(the cluster's spec.roles.access.replicas, the access Deployment's spec.replicas)."""
    body = await kube.get(API_VERSION, KIND, namespace, "demo")
    deployment = await kube.get("apps/v1", "Deployment", namespace, "demo-access")
    assert body is not None
    wanted = body["spec"]["roles"]["access"]["replicas"]
    return wanted, (deployment or {}).get("spec", {}).get("replicas", -1)


async def events(kube: KubeClient, namespace: str, reason: str) -> list[str]:
    return [
        e.get("message", "")
        for e in await kube.list_objects("v1", "Event", namespace)
        if e.get("reason") == reason and e.get("involvedObject", {}).get("kind") == KIND
    ]


@contextlib.asynccontextmanager
async def clients(
    chat: Cluster, count: int, access: Endpoint | None = None, **options: Any
) -> AsyncIterator[list[ChatClient]]:
    """`count` logged-in users: straight to `access` if given (else where the gateway says), moving
    through the gateway when told to reconnect."""
    users = [await register(chat.api_url) for _ in range(count)]
    opened: list[ChatClient] = []
    try:
        for uid, token in users:
            client = ChatClient(uid, token, gateway=chat.gateway, access=access, ping_interval=1.0, **options)
            await client.connect()
            opened.append(client)
        yield opened
    finally:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)


# --- connections up, connections down ----------------------------------------------------------------


async def test_replicas_follow_connections_up_and_down_emptiest_pod_first(
    kube: KubeClient, scenario: Scenario, chat: Cluster, tmp_path: Path
) -> None:
    ns = scenario.namespace
    body = autoscaled(
        scenario,
        chat,
        replicas=1,
        minReplicas=1,
        maxReplicas=3,
        targetConnectionsPerPod=4,
        scaleDownWindowSeconds=8,
    )
    await kube.create(body)
    loop = asyncio.get_running_loop()
    async with AccessPods(kube, ns, "demo", tmp_path / "pods", child_env()) as pods:
        await eventually(lambda: _async(len(pods.running()) == 1), "the first access pod to run")
        (first,) = pods.running()
        await wait_condition(kube, ns, "demo", "ScalingActive", "True", "ValidMetric")

        # Rise: 10 connections at 4 per pod need 3 pods.
        async with clients(chat, 10) as crowd:
            assert {c.access_endpoint for c in crowd} == {pods.running()[first].client}
            connected = loop.time()

            async def raised() -> bool:
                return await access_replicas(kube, ns) == (3, 3)

            await eventually(raised, "the access replicas to rise to 3", within=SCALE_UP_WITHIN_S)
            reaction = loop.time() - connected
            await eventually(lambda: _async(len(pods.running()) == 3), "three access pods to run")
            status = await cluster_status(kube, ns, "demo")
            assert status["autoscaling"]["desiredReplicas"] == 3
            assert status["autoscaling"]["lastScaleTime"]
            assert "scaling up from 1" in (await events(kube, ns, "ScaledUp"))[0]
            print(f"scale-up reaction: {reaction:.1f}s (connections up -> Deployment at 3 replicas)")

            # Fall: the first pod keeps 3, a second gets 2, the third none: 5 connections need 2 pods,
            # and the empty pod goes first.
            second, third = sorted(set(pods.running()) - {first})
            async with clients(chat, 2, access=pods.running()[second].client) as pair:
                for client in crowd[3:]:
                    await client.close()

                async def stepped_down() -> bool:
                    return pods.deleted == [third]

                await eventually(stepped_down, f"{third} (no connections) to be removed first", within=60)
                costs = {
                    p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(
                        ANNOTATION_DELETION_COST
                    )
                    for p in await kube.list_objects(
                        "v1", "Pod", ns, f"{LABEL_INSTANCE}=demo,{LABEL_COMPONENT}=access"
                    )
                }
                assert costs[first] == "3" and costs[second] == "2", costs
                assert await access_replicas(kube, ns) == (2, 2)

                # Then the first pod empties too: 2 connections need 1 pod, and the first pod goes next.
                for client in crowd[:3]:
                    await client.close()
                await eventually(
                    lambda: _async(pods.deleted == [third, first]), f"{first} to be removed next", within=60
                )
                assert await access_replicas(kube, ns) == (1, 1)
                # The pod that stayed kept its clients: nobody was moved.
                assert all(c.access_endpoint == pods.running()[second].client for c in pair)
                assert all(c.stats.reconnects == 0 for c in pair)
        assert len(await events(kube, ns, "ScaledDown")) == 2
        drained = [pods.processes[p] for p in pods.deleted]
        await eventually(
            lambda: _async(all(p.exit_code is not None for p in drained)), "the removed pods to exit"
        )
        assert [p.exit_code for p in drained] == [0, 0]
        assert not pods.errors


async def _async(value: bool) -> bool:
    return value


# --- a scale-down under steady traffic ---------------------------------------------------------------


async def test_scale_down_under_steady_traffic_loses_nothing(
    kube: KubeClient, scenario: Scenario, chat: Cluster, tmp_path: Path
) -> None:
    ns = scenario.namespace
    # Autoscaling starts off: two pods, loaded by hand; turning it on starts the scale-down.
    await kube.create(
        autoscaled(scenario, chat, replicas=2, enabled=False, minReplicas=1, targetConnectionsPerPod=10)
    )
    ledger = Ledger()
    async with AccessPods(kube, ns, "demo", tmp_path / "pods", child_env()) as pods:
        await eventually(lambda: _async(len(pods.running()) == 2), "two access pods to run")
        keep, drain = sorted(pods.running())
        # Four talking devices on each pod, each talking with one on the other pod, and one idle
        # device more on `keep`: 9 connections at 10 per pod need 1 pod, and `drain` (4) is emptier.
        placement = [keep] * 4 + [drain] * 4 + [keep]
        users = [await register(chat.api_url) for _ in placement]
        opened: list[ChatClient] = []
        try:
            for (uid, token), pod in zip(users, placement, strict=True):
                client = ChatClient(
                    uid,
                    token,
                    gateway=chat.gateway,
                    access=pods.running()[pod].client,
                    ping_interval=1.0,
                    on_message=ledger.handler_for(uid),
                )
                await client.connect()
                opened.append(client)
            traffic = SteadyTraffic(opened[:8], ledger, rate=40.0)
            traffic.start()
            await asyncio.sleep(3.0)
            await kube.merge_patch(
                API_VERSION,
                KIND,
                ns,
                "demo",
                {"spec": {"autoscaling": {"enabled": True, "scaleDownWindowSeconds": 4}}},
            )
            await eventually(
                lambda: _async(pods.deleted == [drain]), f"{drain} (4 connections) to drain", within=90
            )
            process = pods.processes[drain]
            await eventually(lambda: _async(process.exit_code is not None), f"{drain} to exit", within=30)
            moved = opened[4:8]
            await eventually(
                lambda: _async(all(c.access_endpoint == pods.running()[keep].client for c in moved)),
                "the drained pod's clients to be online on the other pod",
                within=30,
            )
            await asyncio.sleep(3.0)  # traffic after the move
            await traffic.stop_and_settle(quiet_s=45.0)
            report = traffic.report("scale-down under steady traffic") + (
                f"; {len(moved)} clients moved, the drain took {process.drain_seconds:.1f}s"
            )
            print(report)
            # Every acked message arrived exactly once and in order, on both sides...
            traffic.verify(report)
            # ...and the application never had to retry: the client library moved every send itself.
            assert [s.errors for s in traffic.senders if s.errors] == [], report
            assert process.exit_code == 0
            assert all(c.stats.reconnects >= 1 for c in moved)
            scalings = await events(kube, ns, "ScaledDown") + await events(kube, ns, "ScaledUp")
            assert await access_replicas(kube, ns) == (1, 1), scalings
        finally:
            await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
        assert not pods.errors


# --- no data, bad data, no autoscaling, an HPA --------------------------------------------------------


async def mark_access_pods_ready(kube: KubeClient, namespace: str, count: int) -> None:
    """Ready Pods without processes: Prometheus has nothing of them."""
    selector = f"{LABEL_INSTANCE}=demo,{LABEL_COMPONENT}=access"

    async def listed() -> list[dict[str, Any]] | None:
        pods = await kube.list_objects("v1", "Pod", namespace, selector)
        return pods if len(pods) >= count else None

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }
    }
    for pod in await eventually(listed, "the access pods to exist"):
        await kube.merge_patch("v1", "Pod", namespace, pod["metadata"]["name"], ready, "status")


async def steady_replicas(kube: KubeClient, namespace: str, expected: int) -> None:
    """Several autoscaling ticks pass and the access replicas stay `expected`."""
    await asyncio.sleep(4 * AUTOSCALE_SECONDS)
    assert await access_replicas(kube, namespace) == (expected, expected)
    assert await events(kube, namespace, "ScaledDown") == []


async def test_without_a_count_the_replicas_stay_and_a_condition_says_why(
    kube: KubeClient, scenario: Scenario, chat: Cluster
) -> None:
    ns = scenario.namespace
    nowhere = f"http://127.0.0.1:{free_port()}"
    body = autoscaled(
        scenario, chat, replicas=3, minReplicas=1, scaleDownWindowSeconds=0, prometheus={"url": nowhere}
    )
    await kube.create(body)
    status = await wait_condition(kube, ns, "demo", "ScalingActive", "False", "PrometheusUnavailable")
    assert nowhere in condition(status, "ScalingActive")["message"]
    degraded = await wait_condition(kube, ns, "demo", "Degraded", "True", "PrometheusUnavailable")
    assert "keeps 3 replicas" in condition(degraded, "Degraded")["message"]
    await steady_replicas(kube, ns, 3)

    # A query Prometheus refuses, then a placeholder the template does not know.
    prometheus = chat_prometheus()
    await kube.merge_patch(
        API_VERSION,
        KIND,
        ns,
        "demo",
        {"spec": {"autoscaling": {"prometheus": {"url": prometheus, "query": "sum("}}}},
    )
    status = await wait_condition(kube, ns, "demo", "ScalingActive", "False", "InvalidQuery")
    assert "Prometheus refused the query 'sum('" in condition(status, "ScalingActive")["message"]
    await kube.merge_patch(
        API_VERSION, KIND, ns, "demo", {"spec": {"autoscaling": {"prometheus": {"query": 'up{pod=~"$pod"}'}}}}
    )

    async def placeholder_named() -> bool:
        found = condition(await cluster_status(kube, ns, "demo"), "ScalingActive")
        return "uses $pod" in found.get("message", "")

    await eventually(placeholder_named, "the unknown placeholder to be named")
    # A good query that finds no series for the ready pods (nothing scrapes them).
    await kube.merge_patch(
        API_VERSION, KIND, ns, "demo", {"spec": {"autoscaling": {"prometheus": {"query": None}}}}
    )
    await mark_access_pods_ready(kube, ns, 3)
    await wait_condition(kube, ns, "demo", "ScalingActive", "False", "MissingMetrics")
    await steady_replicas(kube, ns, 3)


def chat_prometheus() -> str:
    return os.environ["FISHCHAT_PROMETHEUS_URL"]


async def test_a_manual_scale_stays_while_autoscaling_is_off(
    kube: KubeClient, scenario: Scenario, chat: Cluster
) -> None:
    ns = scenario.namespace
    await kube.create(autoscaled(scenario, chat, replicas=2, enabled=False, minReplicas=1))
    await wait_condition(kube, ns, "demo", "Progressing", "True")
    # kubectl scale fcc/demo --replicas=4
    await kube.merge_patch(API_VERSION, KIND, ns, "demo", {"spec": {"replicas": 4}}, "scale")
    await eventually(lambda: _equal(access_replicas(kube, ns), (4, 4)), "the Deployment to follow the scale")
    await steady_replicas(kube, ns, 4)
    status = await cluster_status(kube, ns, "demo")
    assert "autoscaling" not in status and not condition(status, "ScalingActive")


async def _equal(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_mode_hpa_renders_an_hpa_and_writes_no_replicas(
    kube: KubeClient, scenario: Scenario, chat: Cluster
) -> None:
    ns = scenario.namespace
    body = autoscaled(
        scenario, chat, replicas=2, minReplicas=2, maxReplicas=6, targetConnectionsPerPod=500, mode="HPA"
    )
    await kube.create(body)

    async def hpa() -> dict[str, Any] | None:
        return await kube.get("autoscaling/v2", "HorizontalPodAutoscaler", ns, "demo-access")

    found = await eventually(hpa, "the HorizontalPodAutoscaler")
    assert found["spec"]["scaleTargetRef"] == {"apiVersion": API_VERSION, "kind": KIND, "name": "demo"}
    assert found["spec"]["metrics"][0]["pods"]["metric"]["name"] == "fishchat_access_connections"

    # The HPA controller reaches the cluster's scale subresource; without a custom-metrics adapter it
    # cannot read the metric, and the cluster's ScalingActive says what the HPA says.
    async def evaluated() -> dict[str, Any] | None:
        conditions = {c["type"]: c for c in ((await hpa()) or {}).get("status", {}).get("conditions") or []}
        return conditions if "ScalingActive" in conditions else None

    hpa_conditions = await eventually(evaluated, "the HPA controller to evaluate the HPA", within=120)
    assert hpa_conditions["AbleToScale"]["status"] == "True", hpa_conditions
    active = hpa_conditions["ScalingActive"]
    status = await wait_condition(kube, ns, "demo", "ScalingActive", active["status"], active["reason"])
    assert status["autoscaling"]["mode"] == "HPA"
    await steady_replicas(kube, ns, 2)

    # Back to the operator's own loop: the HPA goes.
    await kube.merge_patch(API_VERSION, KIND, ns, "demo", {"spec": {"autoscaling": {"mode": "Operator"}}})
    await eventually(lambda: _none(hpa()), "the HPA to be deleted")


async def _none(value: Any) -> bool:
    return await value is None
