"""Fixtures for the operator tier: the real API server, Kafka and HBase of the stack, the operator.

The operator runs in-process, in a thread with its own event loop (as kopf's own KopfRunner does),
against the stack's kube-apiserver; the tests talk to the same API server through the operator's
`KubeClient` from the test loop, and to Kafka and HBase through aiokafka and happybase directly.
Each test gets its own namespace `fcc-test-<random>` (the operator watches `fcc-test-*`) and its
own topic and table names, so tests never see each other's objects, and whatever a test leaves in
Kafka or HBase is removed at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import kopf
import pytest

import fishchat_operator.handlers  # noqa: F401  (registers the handlers with kopf's default registry)
from fishchat_operator.config import OperatorConfig
from fishchat_operator.constants import API_VERSION, CRD_NAME, KIND
from fishchat_operator.crd import crd
from fishchat_operator.kube import KubeClient, KubeError
from tests.operator.harness import (
    AUTOSCALE_SECONDS,
    NAMESPACE_PATTERN,
    OPERATOR_NAMESPACE,
    OPERATOR_RBAC_FILES,
    OPERATOR_SERVICE_ACCOUNT,
    RESYNC_SECONDS,
    Backends,
    RunningOperator,
    Scenario,
    delete_table_sync,
    delete_topics,
    eventually,
    free_port,
    rbac_manifests,
    write_token_kubeconfig,
)


@pytest.fixture(scope="session")
def operator_env(stack_env: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """KUBECONFIG (and the rest) in os.environ for the session: kopf's login reads it there.

    Values come from the stack, else from the environment (for a stack limited with
    FISHCHAT_STACK_COMPONENTS plus servers started separately).
    """
    needed = ("KUBECONFIG", "FISHCHAT_KAFKA_BOOTSTRAP", "FISHCHAT_HBASE_THRIFT", "FISHCHAT_PROMETHEUS_URL")
    env = {**{k: os.environ[k] for k in needed if os.environ.get(k)}, **stack_env}
    missing = [k for k in needed if not env.get(k)]
    if missing:
        pytest.fail(
            f"the stack did not provide {', '.join(missing)}; "
            "run `fishchat-stack up kube kafka hbase prometheus`"
        )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def backends(operator_env: Mapping[str, str]) -> Backends:
    host, _, port = operator_env["FISHCHAT_HBASE_THRIFT"].rpartition(":")
    return Backends(operator_env["FISHCHAT_KAFKA_BOOTSTRAP"], host, int(port))


@pytest.fixture(scope="session")
async def kube(operator_env: Mapping[str, str]) -> AsyncIterator[KubeClient]:
    settings = kopf.OperatorSettings()
    client = KubeClient(lambda: kopf.login_with_kubeconfig(settings=settings))
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def crd_installed(kube: KubeClient) -> None:
    """Apply the CRD (as generated, i.e. crds/fishchatcluster.yaml) and wait until it is served."""
    await kube.apply(crd())

    async def established() -> bool:
        obj = await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, CRD_NAME)
        conditions = ((obj or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await eventually(established, "the FishChatCluster CRD to be established")


@pytest.fixture(scope="session")
async def operator_kubeconfig(kube: KubeClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig for the operator's own ServiceAccount, bound by operator/rbac/*.yaml.

    The operator under test runs with exactly the RBAC it ships with, so a missing permission
    fails these tests rather than a user's cluster.
    """
    for manifest in rbac_manifests(OPERATOR_RBAC_FILES):
        await kube.apply(manifest)
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200},
    }
    _, answer = await kube.request(
        "POST",
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{OPERATOR_SERVICE_ACCOUNT}/token",
        body=request,
    )
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    write_token_kubeconfig(Path(os.environ["KUBECONFIG"]), answer["status"]["token"], path)
    return path


@pytest.fixture(scope="session")
def operator(crd_installed: None, operator_kubeconfig: Path) -> Iterator[RunningOperator]:
    """The operator, in a thread of its own, as its ServiceAccount, watching `fcc-test-*`."""
    config = OperatorConfig(
        kubeconfig=str(operator_kubeconfig),
        resync_seconds=RESYNC_SECONDS,
        autoscale_seconds=AUTOSCALE_SECONDS,
        prometheus_url=os.environ["FISHCHAT_PROMETHEUS_URL"],
        backend_timeout_seconds=5.0,
        reclaim_retry_seconds=2.0,
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
    )
    running = RunningOperator(config, f"http://127.0.0.1:{free_port()}/healthz")

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    settings=kopf.OperatorSettings(),
                    memo=kopf.Memo(config=config),
                    namespaces=[NAMESPACE_PATTERN],
                    standalone=True,
                    liveness_endpoint=running.liveness_url,
                    stop_flag=running.stop_flag,
                    ready_flag=running.ready_flag,
                )
            )
        except BaseException as exc:  # kept for the fixture: a dead operator fails the tests loudly
            running.error = exc

    thread = threading.Thread(target=run, name="fishchat-operator", daemon=True)
    thread.start()
    if not running.ready_flag.wait(60):
        running.stop_flag.set()
        pytest.fail(f"the operator did not get ready within 60s (error: {running.error!r})")
    yield running
    running.stop_flag.set()
    thread.join(60)
    if thread.is_alive():
        pytest.fail("the operator did not stop within 60s")
    if running.error is not None:
        raise running.error


@pytest.fixture
async def scenario(
    kube: KubeClient, operator: RunningOperator, backends: Backends
) -> AsyncIterator[Scenario]:
    """A fresh namespace and backend names; cleaned up (CRs, namespace, topics, table) afterwards."""
    suffix = secrets.token_hex(4)
    namespace = f"fcc-test-{suffix}"
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    current = Scenario(namespace, suffix, backends)
    yield current
    # The operator is still running, so CRs with its finalizer can go; then the namespace.
    for item in await kube.list_objects(API_VERSION, KIND, namespace):
        with contextlib.suppress(KubeError):
            await kube.delete(API_VERSION, KIND, namespace, item["metadata"]["name"])

    async def clusters_gone_and_reclaim_posted() -> bool:
        # Wait for the reclaim Event too (when the operator handled a cluster here at all): an Event
        # posted into a terminating namespace is refused.
        if await kube.list_objects(API_VERSION, KIND, namespace):
            return False
        reasons = {
            e.get("reason", "")
            for e in await kube.list_objects("v1", "Event", namespace)
            if e.get("involvedObject", {}).get("kind") == KIND
        }
        return not reasons or any(r.startswith("Reclaim") for r in reasons)

    await eventually(clusters_gone_and_reclaim_posted, f"the clusters in {namespace} to be deleted")
    with contextlib.suppress(KubeError):
        await kube.delete("v1", "Namespace", None, namespace)
    await delete_topics(backends.kafka_bootstrap, [current.p2p_topic, current.group_topic])
    await asyncio.to_thread(delete_table_sync, backends, current.table)
    if running_error := operator.error:
        raise AssertionError(f"the operator died: {running_error!r}")
