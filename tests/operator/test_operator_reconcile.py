"""The operator against a real kube-apiserver, Kafka and HBase (design §7, tier 4).

Each test applies FishChatCluster objects in its own namespace and watches what the operator does:
children with owner, labels and configuration; topics and table; conditions (Progressing while no
pod runs, Ready once the pods are ready); spec changes followed; invalid objects refused by the API
server's schema and CEL rules; Kafka unreachable and back; deletion with Retain and with Delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fishchat_operator.constants import (
    API_VERSION,
    FIELD_MANAGER,
    FINALIZER,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_VERSION,
    ROLES,
)
from fishchat_operator.kube import KubeClient, KubeError, resource_type
from fishchat_operator.render import EXPOSED_ROLES
from tests.operator.harness import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    RESYNC_SECONDS,
    RunningOperator,
    Scenario,
    condition,
    describe_topics,
    eventually,
    free_port,
    make_roles_ready,
    rbac_manifests,
    table_families_sync,
    wait_condition,
)

SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
CHILD_KINDS = (
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
)


async def children(kube: KubeClient, namespace: str, name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, for every child kind, labelled with the cluster as instance."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for api_version, kind in (*CHILD_KINDS, ("v1", "ServiceAccount")):
        for item in await kube.list_objects(api_version, kind, namespace, f"{LABEL_INSTANCE}={name}"):
            found[(kind, item["metadata"]["name"])] = item
    return found


async def events_of(kube: KubeClient, namespace: str, name: str) -> dict[str, list[str]]:
    """reason -> messages of the Events about the cluster object."""
    reasons: dict[str, list[str]] = {}
    for event in await kube.list_objects("v1", "Event", namespace):
        involved = event.get("involvedObject", {})
        if involved.get("kind") == KIND and involved.get("name") == name:
            reasons.setdefault(event.get("reason", ""), []).append(event.get("message", ""))
    return reasons


async def create_cluster(kube: KubeClient, body: dict[str, Any]) -> dict[str, Any]:
    return await kube.create(body)


async def patch_spec(kube: KubeClient, scenario: Scenario, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return await kube.merge_patch(API_VERSION, KIND, scenario.namespace, name, {"spec": spec})


# --- apply: children, backends, conditions ---------------------------------------------------------


async def test_cluster_gets_children_topics_table_and_honest_conditions(
    kube: KubeClient, scenario: Scenario, operator: RunningOperator
) -> None:
    created = await create_cluster(kube, scenario.cluster())
    uid = created["metadata"]["uid"]
    ns = scenario.namespace

    # No pod can run here: the operator must say Progressing, not Ready.
    status = await wait_condition(kube, ns, "demo", "Progressing", "True", "RollingOut")
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Ready")["reason"] == "RolesNotReady"
    assert condition(status, "Degraded")["status"] == "False", status
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert status["accessReady"] == "0/2"

    found = await children(kube, ns, "demo")
    expected = {(kind, f"demo-{role.value}") for _, kind in CHILD_KINDS for role in ROLES}
    expected.add(("ServiceAccount", "demo-fishchat"))
    expected |= {("Service", f"demo-{role.value}-public") for role in EXPOSED_ROLES}
    assert set(found) == expected
    for (kind, name), obj in found.items():
        meta = obj["metadata"]
        owner = meta["ownerReferences"]
        assert owner == [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": "demo",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], (kind, name)
        labels = meta["labels"]
        assert labels[LABEL_NAME] == "fishchat" and labels[LABEL_INSTANCE] == "demo", (kind, name)
        assert labels[LABEL_PART_OF] == "fishchat" and labels[LABEL_MANAGED_BY] == "fishchat-operator"
        assert labels[LABEL_VERSION] == "0.1.0"
        assert any(
            m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply" for m in meta["managedFields"]
        )

    # Configuration: every role finds etcd and its keys under the cluster's prefix; msg-job Kafka and HBase.
    for role in ROLES:
        config = tomllib.loads(found[("ConfigMap", f"demo-{role.value}")]["data"][f"{role.value}.toml"])
        assert config["etcd"]["endpoints"] == "127.0.0.1:2379"
        assert config["registry"]["prefix"] == f"/fishchat/{ns}/demo/services/"
    msg_job = tomllib.loads(found[("ConfigMap", "demo-msg-job")]["data"]["msg-job.toml"])
    assert msg_job["kafka"]["bootstrap"] == scenario.backends.kafka_bootstrap
    assert msg_job["kafka"]["p2p_topic"] == scenario.p2p_topic
    assert msg_job["hbase"]["table"] == scenario.table

    access = found[("Deployment", "demo-access")]["spec"]
    pod = access["template"]["spec"]
    container = pod["containers"][0]
    assert access["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] == 60
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert container["readinessProbe"]["grpc"]["port"] == 20000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"] == "ghcr.io/fishchat/fishchat:0.1.0"

    # Backends: topics with the asked partitions, table with its two families.
    topics = await describe_topics(
        scenario.backends.kafka_bootstrap, [scenario.p2p_topic, scenario.group_topic]
    )
    assert topics == {scenario.p2p_topic: (2, 1), scenario.group_topic: (2, 1)}
    families = await asyncio.to_thread(table_families_sync, scenario.backends, scenario.table)
    assert families == ["msg", "user"]
    assert status["topics"]["p2p"] == {"name": scenario.p2p_topic, "partitions": 2, "replicationFactor": 1}
    assert status["table"] == {"name": scenario.table, "families": ["msg", "user"]}

    # The kubelet's part: pods become ready, and the cluster becomes Ready.
    how = await make_roles_ready(kube, ns, "demo")
    status = await wait_condition(kube, ns, "demo", "Ready", "True", "AllRolesReady")
    assert condition(status, "Progressing")["status"] == "False"
    assert status["accessReady"] == "2/2"
    assert all(status["roles"][r.spec_key]["ready"] == 2 for r in ROLES), (how, status["roles"])

    # Notable steps were posted as Events on the cluster object.
    events = await eventually(
        lambda: _events_with(kube, ns, {"ChildrenCreated", "TopicCreated", "TableCreated", "ClusterReady"}),
        "the operator's Events",
    )
    assert any(scenario.p2p_topic in m for m in events["TopicCreated"])

    # The scale subresource is the access Deployment's size.
    _, scale = await kube.request("GET", f"/apis/{API_VERSION}/namespaces/{ns}/fishchatclusters/demo/scale")
    assert scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2
    assert f"{LABEL_COMPONENT}=access" in scale["status"]["selector"]

    # The finalizer is the operator's own, and kopf's bookkeeping uses our prefix.
    live = await kube.get(API_VERSION, KIND, ns, "demo")
    assert live is not None and live["metadata"]["finalizers"] == [FINALIZER]
    assert not [a for a in live["metadata"].get("annotations", {}) if "kopf.zalando.org" in a]

    # Metrics and liveness endpoints answer.
    async with aiohttp.ClientSession() as http:
        async with http.get(operator.metrics_url) as response:
            text = await response.text()
        assert response.status == 200 and "fishchat_operator_reconciles_total" in text
        assert "fishchat_operator_reconcile_duration_seconds_bucket" in text
        # Per cluster: Ready, and the per-role pod counts the chart's alerts and dashboard use.
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        cluster = (("name", "demo"), ("namespace", ns))
        assert samples[("fishchat_operator_cluster_ready", cluster)] == 1.0
        for state in ("desired", "ready"):
            labels = tuple(sorted((*cluster, ("role", "access"), ("state", state))))
            assert samples[("fishchat_operator_role_replicas", labels)] == 2.0, state
        async with http.get(operator.liveness_url) as response:
            assert response.status == 200


async def _events_with(kube: KubeClient, namespace: str, wanted: set[str]) -> dict[str, list[str]]:
    """The Events by reason once all `wanted` reasons are there (else empty, i.e. keep waiting)."""
    events = await events_of(kube, namespace, "demo")
    return events if wanted <= set(events) else {}


# --- changes follow --------------------------------------------------------------------------------


async def test_children_and_topics_follow_spec_changes(kube: KubeClient, scenario: Scenario) -> None:
    ns = scenario.namespace
    await create_cluster(kube, scenario.cluster())
    await wait_condition(kube, ns, "demo", "Progressing", "True", "RollingOut")

    updated = await patch_spec(
        kube,
        scenario,
        "demo",
        {
            "version": "0.2.0",
            "roles": {"access": {"replicas": 3}, "logic": {"replicas": 1}},
            "topics": {"p2p": {"partitions": 4}},
            "backends": {"etcd": {"endpoints": ["http://10.0.0.9:2379"]}},
        },
    )
    generation = updated["metadata"]["generation"]

    async def deployments_follow() -> bool:
        access = await kube.get("apps/v1", "Deployment", ns, "demo-access")
        logic = await kube.get("apps/v1", "Deployment", ns, "demo-logic")
        config = await kube.get("v1", "ConfigMap", ns, "demo-gateway")
        return bool(
            access
            and logic
            and config
            and access["spec"]["replicas"] == 3
            and logic["spec"]["replicas"] == 1
            and access["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.2.0")
            and access["metadata"]["labels"][LABEL_VERSION] == "0.2.0"
            and "10.0.0.9" in config["data"]["gateway.toml"]
        )

    await eventually(deployments_follow, "the Deployments and ConfigMaps to follow the new spec")
    status = await wait_condition(kube, ns, "demo", "Progressing", "True", generation=generation)
    assert status["version"] == "0.2.0"

    async def grown() -> bool:
        topics = await describe_topics(scenario.backends.kafka_bootstrap, [scenario.p2p_topic])
        return topics.get(scenario.p2p_topic) == (4, 1)

    await eventually(grown, f"topic {scenario.p2p_topic} to grow to 4 partitions")
    await eventually(lambda: _has_event(kube, ns, "PartitionsIncreased"), "a PartitionsIncreased event")

    # The scale subresource moves the access replicas (what autoscaling will use).
    await kube.request(
        "PATCH",
        f"/apis/{API_VERSION}/namespaces/{ns}/fishchatclusters/demo/scale",
        body={"spec": {"replicas": 5}},
        content_type="application/merge-patch+json",
    )

    async def scaled() -> bool:
        access = await kube.get("apps/v1", "Deployment", ns, "demo-access")
        return bool(access and access["spec"]["replicas"] == 5)

    await eventually(scaled, "the access Deployment to follow the scale subresource")

    # A partition shrink is refused: reported as Degraded, the topic keeps its partitions.
    await patch_spec(kube, scenario, "demo", {"topics": {"p2p": {"partitions": 1}}})
    status = await wait_condition(kube, ns, "demo", "Degraded", "True", "PartitionShrinkRefused")
    assert "cannot remove partitions" in condition(status, "Degraded")["message"]
    topics = await describe_topics(scenario.backends.kafka_bootstrap, [scenario.p2p_topic])
    assert topics[scenario.p2p_topic] == (4, 1)
    # Restoring the count clears it.
    await patch_spec(kube, scenario, "demo", {"topics": {"p2p": {"partitions": 4}}})
    await wait_condition(kube, ns, "demo", "Degraded", "False", "AsExpected")


async def _has_event(kube: KubeClient, namespace: str, reason: str) -> bool:
    return reason in await events_of(kube, namespace, "demo")


# --- invalid objects are refused by the API server -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
            "minReplicas must not exceed",
        ),
        ({"topics": {"group": {"name": "same"}, "p2p": {"name": "same"}}}, "must have different names"),
        ({"roles": {"access": {"replicas": -1}}}, "spec.roles.access.replicas"),
        ({"roles": {"access": {"terminationGracePeriodSeconds": 5, "preStopSleepSeconds": 10}}}, "drain"),
        ({"topics": {"p2p": {"partitions": 0}}}, "spec.topics.p2p.partitions"),
        ({"reclaimPolicy": "Forget"}, "Unsupported value"),
        ({"backends": {"kafka": {"bootstrapServers": []}}}, "bootstrapServers"),
        ({"roles": {"access": {"wsNodePort": 30101}}}, "wsNodePort needs serviceType NodePort"),
        (
            {"roles": {"access": {"serviceType": "NodePort", "nodePort": 30100, "wsNodePort": 30100}}},
            "wsNodePort must differ from nodePort",
        ),
        ({"roles": {"access": {"wsOrigins": ["chat.example.com"]}}}, "spec.roles.access.wsOrigins[0]"),
        ({"limits": {"userSend": {"perMinute": 0, "burst": 10}}}, "spec.limits.userSend.perMinute"),
        ({"limits": {"userAuth": {"burst": 10}}}, "spec.limits.userAuth.perMinute: Required value"),
    ],
)
async def test_invalid_clusters_are_refused_with_a_readable_message(
    kube: KubeClient, scenario: Scenario, change: dict[str, Any], message: str
) -> None:
    body = scenario.cluster(**change)
    with pytest.raises(KubeError) as refused:
        await create_cluster(kube, body)
    assert refused.value.status == 422
    assert message in refused.value.message, refused.value.message


async def test_missing_backends_and_bad_names_are_refused(kube: KubeClient, scenario: Scenario) -> None:
    body = scenario.cluster()
    del body["spec"]["backends"]
    with pytest.raises(KubeError) as refused:
        await create_cluster(kube, body)
    assert refused.value.status == 422 and "spec.backends: Required value" in refused.value.message

    long_name = scenario.cluster(name="a" * 60)
    with pytest.raises(KubeError) as refused:
        await create_cluster(kube, long_name)
    assert "at most 54 characters" in refused.value.message


async def test_immutable_fields_cannot_change(kube: KubeClient, scenario: Scenario) -> None:
    await create_cluster(kube, scenario.cluster())
    for spec, message in (
        ({"topics": {"p2p": {"name": "renamed"}}}, "spec.topics.p2p.name is immutable"),
        ({"table": {"name": "other"}}, "spec.table.name is immutable"),
        ({"backends": {"etcd": {"prefix": "/moved/"}}}, "cannot be added or removed"),
    ):
        with pytest.raises(KubeError) as refused:
            await patch_spec(kube, scenario, "demo", spec)
        assert refused.value.status == 422
        assert message in refused.value.message, refused.value.message


# --- Kafka unreachable, then back ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tcp_proxy(port: int, target_host: str, target_port: int) -> AsyncIterator[None]:
    """Forward 127.0.0.1:port to the target while the context is open."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_kafka_unreachable_degrades_then_recovers(kube: KubeClient, scenario: Scenario) -> None:
    ns = scenario.namespace
    port = free_port()  # nothing listens here until the proxy starts
    body = scenario.cluster(
        backends={
            **scenario.cluster()["spec"]["backends"],
            "kafka": {"bootstrapServers": [f"127.0.0.1:{port}"]},
        }
    )
    await create_cluster(kube, body)

    status = await wait_condition(kube, ns, "demo", "Degraded", "True", "KafkaUnavailable")
    degraded = condition(status, "Degraded")
    assert f"127.0.0.1:{port}" in degraded["message"] and "unavailable" in degraded["message"]
    assert condition(status, "Ready")["reason"] == "KafkaUnavailable"
    # The rest of the cluster was still reconciled: children exist, the table was created.
    assert await kube.get("apps/v1", "Deployment", ns, "demo-access") is not None
    assert await asyncio.to_thread(table_families_sync, scenario.backends, scenario.table) == ["msg", "user"]
    await eventually(lambda: _has_event(kube, ns, "KafkaUnavailable"), "a KafkaUnavailable warning event")

    # Kafka becomes reachable (through the proxy); the next resync recovers without any spec change.
    host, _, kafka_port = scenario.backends.kafka_bootstrap.rpartition(":")
    async with tcp_proxy(port, host, int(kafka_port)):
        status = await wait_condition(kube, ns, "demo", "Degraded", "False", "AsExpected")
        topics = await describe_topics(
            scenario.backends.kafka_bootstrap, [scenario.p2p_topic, scenario.group_topic]
        )
        assert topics == {scenario.p2p_topic: (2, 1), scenario.group_topic: (2, 1)}
        await eventually(lambda: _has_event(kube, ns, "Recovered"), "a Recovered event")
    assert condition(status, "Ready")["reason"] == "RolesNotReady"


# --- deletion --------------------------------------------------------------------------------------


async def _gone(kube: KubeClient, scenario: Scenario, name: str) -> bool:
    return await kube.get(API_VERSION, KIND, scenario.namespace, name) is None


async def test_delete_with_retain_keeps_topics_and_table(kube: KubeClient, scenario: Scenario) -> None:
    ns = scenario.namespace
    await create_cluster(kube, scenario.cluster())
    await wait_condition(kube, ns, "demo", "Progressing", "True")
    assert await kube.delete(API_VERSION, KIND, ns, "demo")
    await eventually(lambda: _gone(kube, scenario, "demo"), "the cluster to be deleted (finalizer released)")

    topics = await describe_topics(
        scenario.backends.kafka_bootstrap, [scenario.p2p_topic, scenario.group_topic]
    )
    assert set(topics) == {scenario.p2p_topic, scenario.group_topic}
    assert await asyncio.to_thread(table_families_sync, scenario.backends, scenario.table) == ["msg", "user"]
    reasons = await events_of(kube, ns, "demo")
    assert "ReclaimRetained" in reasons
    await _children_garbage_collected(kube, ns)


async def test_delete_with_delete_removes_topics_and_table(kube: KubeClient, scenario: Scenario) -> None:
    ns = scenario.namespace
    await create_cluster(kube, scenario.cluster(reclaimPolicy="Delete"))
    await wait_condition(kube, ns, "demo", "Progressing", "True")
    assert await describe_topics(scenario.backends.kafka_bootstrap, [scenario.p2p_topic])
    assert await kube.delete(API_VERSION, KIND, ns, "demo")
    await eventually(lambda: _gone(kube, scenario, "demo"), "the cluster to be deleted (finalizer released)")

    async def topics_gone() -> bool:
        topics = await describe_topics(
            scenario.backends.kafka_bootstrap, [scenario.p2p_topic, scenario.group_topic]
        )
        return not topics

    await eventually(topics_gone, "the topics to be deleted")
    assert await asyncio.to_thread(table_families_sync, scenario.backends, scenario.table) is None
    assert "ReclaimDeleted" in await events_of(kube, ns, "demo")
    await _children_garbage_collected(kube, ns)


async def _children_garbage_collected(kube: KubeClient, namespace: str) -> None:
    """Children carry owner references, so Kubernetes' garbage collector removes them."""

    async def collected() -> bool:
        return not await children(kube, namespace, "demo")

    await eventually(
        collected, "the garbage collector to remove the children (needs kube-controller-manager)"
    )


async def test_resyncs_do_not_rewrite_a_settled_cluster(kube: KubeClient, scenario: Scenario) -> None:
    """Idempotence: once nothing changes, repeated passes write nothing (no status or spec churn)."""
    ns = scenario.namespace
    await create_cluster(kube, scenario.cluster())
    first = await wait_condition(kube, ns, "demo", "Progressing", "True", "RollingOut")

    async def settled_version() -> str | None:
        # Controllers create ReplicaSets and Pods for a moment, which legitimately updates the status.
        before = await kube.get(API_VERSION, KIND, ns, "demo")
        await asyncio.sleep(3.0)
        after = await kube.get(API_VERSION, KIND, ns, "demo")
        assert before is not None and after is not None
        same = before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
        return str(after["metadata"]["resourceVersion"]) if same else None

    version = await eventually(settled_version, "the cluster object to settle")
    await asyncio.sleep(4 * RESYNC_SECONDS)  # several full reconcile passes
    live = await kube.get(API_VERSION, KIND, ns, "demo")
    assert live is not None
    assert live["metadata"]["resourceVersion"] == version, "a resync rewrote an unchanged cluster"
    assert [c["lastTransitionTime"] for c in live["status"]["conditions"]] == [
        c["lastTransitionTime"] for c in first["conditions"]
    ]


# --- the operator's own manifests ------------------------------------------------------------------


async def test_operator_manifests_are_valid_and_rbac_is_least_privilege(
    kube: KubeClient, operator_kubeconfig: Path
) -> None:
    # Every shipped manifest passes the API server's validation (server-side dry run).
    for manifest in rbac_manifests():
        kind_type = resource_type(manifest["apiVersion"], manifest["kind"])
        if manifest["kind"] == "Deployment":
            assert manifest["spec"]["replicas"] == 1
            assert manifest["spec"]["strategy"] == {"type": "Recreate"}
        await kube.request(
            "PATCH",
            kind_type.path(manifest["metadata"].get("namespace"), manifest["metadata"]["name"]),
            params={"fieldManager": "fcc-test", "force": "true", "dryRun": "All"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
    # (That the operator can do its work with this RBAC is shown by every other test in this module:
    # the operator under test runs as this ServiceAccount.) Here: what it must not be able to do.
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"

    async def allowed(verb: str, resource: str, group: str = "", subresource: str = "") -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}"],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": "some-namespace",
                },
            },
        }
        _, answer = await kube.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
        )
        return bool(answer["status"].get("allowed"))

    assert await allowed("patch", "deployments", "apps")
    assert await allowed("patch", "fishchatclusters", "fishchat.io", "status")
    # Access autoscaling: the scale subresource, pod deletion costs, the HPA of mode HPA.
    assert await allowed("patch", "fishchatclusters", "fishchat.io", "scale")
    assert await allowed("patch", "pods")
    assert await allowed("delete", "horizontalpodautoscalers", "autoscaling")
    for verb, resource, group in (
        ("get", "secrets", ""),
        ("list", "secrets", ""),
        ("delete", "deployments", "apps"),
        ("create", "pods", ""),
        ("delete", "pods", ""),
        ("update", "pods", ""),
        ("delete", "fishchatclusters", "fishchat.io"),
        ("update", "deployments", "apps"),
        ("escalate", "clusterroles", "rbac.authorization.k8s.io"),
    ):
        assert not await allowed(verb, resource, group), f"the operator may {verb} {resource}"
