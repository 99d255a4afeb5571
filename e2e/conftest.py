"""The e2e tier: FishChat's own Pods on a real Kubernetes node, installed with its Helm chart.

It runs on the stack's node (`fishchat-stack up` starts one beside the API server) or, with
`FISHCHAT_E2E_CLUSTER=kind`, on a kind cluster (see `e2e/clusters.py`). Where neither can run, every
test here fails with the reason: the tier is part of `make test`, and a missing node is a defect to
see, not a skip to overlook.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping

import kopf
import pytest

from e2e.clusters import E2ECluster, E2EUnavailable, e2e_cluster
from fishchat.stack.images import project_version
from fishchat_operator.kube import KubeClient

#: The second image tag a rolling upgrade moves to (the same build, another version label).
UPGRADE_TAG = f"{project_version()}-upgrade"


@pytest.fixture(scope="session")
def cluster(stack_env: Mapping[str, str]) -> Iterator[E2ECluster]:
    """The cluster, holding both images under the project version and UPGRADE_TAG, open for Pods."""
    try:
        chosen = e2e_cluster({**os.environ, **stack_env})
        chosen.load_images([UPGRADE_TAG])
    except E2EUnavailable as exc:
        pytest.fail(f"the e2e tier cannot run: {exc}")
    chosen.open()
    yield chosen
    chosen.close()


@pytest.fixture(scope="session")
async def kube(cluster: E2ECluster) -> AsyncIterator[KubeClient]:
    """The cluster's API as its admin (kopf's login reads KUBECONFIG; helm gets it too)."""
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    settings = kopf.OperatorSettings()
    client = KubeClient(lambda: kopf.login_with_kubeconfig(settings=settings))
    yield client
    await client.close()
