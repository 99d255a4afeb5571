"""The Helm chart (helm/fishchat) with the real helm, the stack's kube-apiserver and promtool.

- `helm lint --strict` and `helm template` with the default values and with every optional part on;
- values.schema.json refuses each kind of bad input, naming the value;
- one source: the chart's RBAC is operator/rbac's, its CRD is crds/'s, its operator Deployment is
  operator/rbac/deployment.yaml's;
- the schema check: every rendered manifest passes a server-side dry run with strict field validation
  against the stack's kube-apiserver (the exact version the stack runs), and a misspelt field fails it;
  ServiceMonitor and PrometheusRule are checked against the minimal CRDs in data/monitoring-crds.yaml;
- `helm install` for real: the in-process operator (same rules) reconciles the chart's cluster, and
  `helm uninstall` removes everything; the pre-delete hook's program deletes a cluster with only the
  rights the chart gives it, and says what holds a cluster it cannot wait out;
- the alerts: `promtool check rules` and `promtool test rules` with synthetic series, and every metric
  the alerts and the dashboard name is one the services or the operator export.

No kubelet runs here, so the chart's own operator Pod and the hook Job never start (the e2e tier runs
them); `helm uninstall --no-hooks` stands in for the hook, which the tests run as its ServiceAccount.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from fishchat.rpc.metrics import RpcMetrics
from fishchat.serve.roles.msg_job import DeliveryMetrics
from fishchat.server.metrics import ServerMetrics
from fishchat.stack.tools import HELM
from fishchat_operator import metrics as operator_metrics
from fishchat_operator import yamlio
from fishchat_operator.constants import API_VERSION, FINALIZER, KIND
from fishchat_operator.kube import KubeClient, KubeError, ResourceType, resource_type
from tests.operator.harness import (
    Scenario,
    eventually,
    rbac_manifests,
    wait_condition,
    write_token_kubeconfig,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "fishchat"
MONITORING_CRDS = Path(__file__).parent / "data" / "monitoring-crds.yaml"
DEFAULT_IMAGE = "ghcr.io/fishchat/fishchat-operator:0.1.0"
# Kinds the chart renders beyond those the operator's client knows.
EXTRA_TYPES = {
    ("rbac.authorization.k8s.io/v1", "Role"): ResourceType("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ResourceType(
        "rbac.authorization.k8s.io/v1", "rolebindings"
    ),
    ("batch/v1", "Job"): ResourceType("batch/v1", "jobs"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ResourceType(
        "monitoring.coreos.com/v1", "servicemonitors"
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ResourceType(
        "monitoring.coreos.com/v1", "prometheusrules"
    ),
}


def type_of(manifest: dict[str, Any]) -> ResourceType:
    key = (manifest["apiVersion"], manifest["kind"])
    return EXTRA_TYPES.get(key) or resource_type(*key)


# --- helm -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary (built from the Go module proxy once per machine, `fishchat-stack tools`)."""
    return HELM.ensure()


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yamlio.dump(values))
    return path


def render(
    helm: Path, tmp_path: Path, values: dict[str, Any] | None = None, namespace: str = "fishchat-system"
) -> list[dict[str, Any]]:
    args = ["template", "fc", str(CHART), "--namespace", namespace]
    if values:
        args += ["--values", str(values_file(tmp_path, values))]
    return yamlio.load_all(run_helm(helm, *args).stdout)


def backends_spec() -> dict[str, Any]:
    return {
        "backends": {
            "kafka": {"bootstrapServers": ["kafka-0.kafka:9092"]},
            "hbase": {"thriftHost": "hbase-thrift"},
            "redis": {"url": "redis://redis:6379/0"},
            "mariadb": {"host": "mariadb", "credentialsSecret": {"name": "fishchat-db"}},
            "etcd": {"endpoints": ["http://etcd:2379"]},
        }
    }


def all_on(namespace: str = "chat", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Values with every optional part of the chart switched on."""
    return {
        "operator": {"watchNamespaces": [namespace]},
        "cluster": {"enabled": True, "name": "demo", "namespace": namespace, "spec": spec or backends_spec()},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        },
    }


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def kinds(manifests: list[dict[str, Any]]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


# --- lint and template -----------------------------------------------------------------------------


def test_lint_passes_strictly_with_defaults_and_with_every_part_on(helm: Path, tmp_path: Path) -> None:
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), "--values", str(values_file(tmp_path, all_on())))


def test_template_renders_the_operator_by_default(helm: Path, tmp_path: Path) -> None:
    manifests = render(helm, tmp_path)
    assert kinds(manifests) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "fishchat-0.1.0"
        assert labels["app.kubernetes.io/instance"] == "fc"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/name"] == "fishchat-operator"
        if type_of(manifest).namespaced:
            assert manifest["metadata"]["namespace"] == "fishchat-system"
    (deployment,) = of_kind(manifests, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == DEFAULT_IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert "--all-namespaces" in container["args"]


def test_template_renders_every_optional_part(helm: Path, tmp_path: Path) -> None:
    manifests = render(helm, tmp_path, all_on())
    assert {"FishChatCluster", "ServiceMonitor", "PrometheusRule", "ConfigMap", "Job", "Role"} <= set(
        kinds(manifests)
    )
    (cluster,) = of_kind(manifests, "FishChatCluster")
    assert (cluster["metadata"]["name"], cluster["metadata"]["namespace"]) == ("demo", "chat")
    assert cluster["spec"] == {**backends_spec(), "version": "0.1.0"}  # version: the appVersion
    monitors = {m["metadata"]["name"]: m for m in of_kind(manifests, "ServiceMonitor")}
    assert set(monitors) == {"fc-fishchat-operator", "fc-fishchat-clusters"}
    roles = monitors["fc-fishchat-clusters"]["spec"]
    assert roles["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "fishchat",
        "app.kubernetes.io/managed-by": "fishchat-operator",
    }
    assert roles["jobLabel"] == "app.kubernetes.io/component"
    assert all(m["metadata"]["labels"]["release"] == "prometheus" for m in monitors.values())
    (dashboard,) = of_kind(manifests, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["fishchat.json"]) == json.loads(
        (CHART / "dashboards" / "fishchat.json").read_text()
    )
    (rule,) = of_kind(manifests, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"FishChatConsumerLagHigh", "FishChatNoReadyAccessPod", "FishChatClientErrorRateHigh"} <= alerts


def test_an_explicit_version_and_image_tag_win_over_the_app_version(helm: Path, tmp_path: Path) -> None:
    values = all_on(spec={**backends_spec(), "version": "1.2.3"})
    values["operator"]["image"] = {
        "repository": "registry.example/op",
        "tag": "9.9.9",
        "pullPolicy": "Always",
    }
    manifests = render(helm, tmp_path, values)
    (cluster,) = of_kind(manifests, "FishChatCluster")
    assert cluster["spec"]["version"] == "1.2.3"
    for workload in of_kind(manifests, "Deployment") + of_kind(manifests, "Job"):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.example/op:9.9.9"
        assert container["imagePullPolicy"] == "Always"


# --- values.schema.json refuses bad input -----------------------------------------------------------

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"operatr": {"verbose": True}}, "additional properties 'operatr'"),
    ("unknown nested key", {"operator": {"replicas": 2}}, "additional properties 'replicas'"),
    ("wrong enum", {"operator": {"image": {"pullPolicy": "Sometimes"}}}, "/operator/image/pullPolicy"),
    ("wrong type", {"operator": {"resyncSeconds": "often"}}, "/operator/resyncSeconds"),
    ("out of range", {"operator": {"metricsPort": 70000}}, "/operator/metricsPort"),
    ("bad duration", {"metrics": {"prometheusRule": {"errorRateFor": "5 minutes"}}}, "errorRateFor"),
    ("ratio above 1", {"metrics": {"prometheusRule": {"errorRateThreshold": 5}}}, "errorRateThreshold"),
    ("bad cluster name", {"cluster": {"name": "Demo_1"}}, "/cluster/name"),
    ("cluster without backends", {"cluster": {"enabled": True}}, "missing property 'backends'"),
    (
        "misspelt cluster field",
        {"cluster": {"enabled": True, "spec": {**backends_spec(), "reclaimPolicyy": "Delete"}}},
        "additional properties 'reclaimPolicyy'",
    ),
    (
        "cluster field out of range",
        {"cluster": {"enabled": True, "spec": {**backends_spec(), "roles": {"access": {"replicas": -1}}}}},
        "/cluster/spec/roles/access/replicas",
    ),
    (
        "cluster enum",
        {"cluster": {"enabled": True, "spec": {**backends_spec(), "reclaimPolicy": "Shred"}}},
        "/cluster/spec/reclaimPolicy",
    ),
]


@pytest.mark.parametrize(
    ("values", "names"), [(v, n) for _, v, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_schema_refuses_bad_values_naming_them(
    helm: Path, tmp_path: Path, values: dict[str, Any], names: str
) -> None:
    result = run_helm(
        helm, "template", "fc", str(CHART), "--values", str(values_file(tmp_path, values)), check=False
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert names in result.stderr, result.stderr


def test_a_missing_service_account_name_is_a_clear_error(helm: Path, tmp_path: Path) -> None:
    values = {"serviceAccount": {"create": False}}
    result = run_helm(
        helm, "template", "fc", str(CHART), "--values", str(values_file(tmp_path, values)), check=False
    )
    assert result.returncode != 0
    assert "serviceAccount.name is required when serviceAccount.create is false" in result.stderr


# --- one source ------------------------------------------------------------------------------------


def rule_set(roles: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(rule, sort_keys=True) for role in roles for rule in role["rules"])


def test_chart_rbac_is_the_rbac_of_operator_rbac(helm: Path, tmp_path: Path) -> None:
    plain = [m for m in rbac_manifests() if m["kind"] == "ClusterRole"]
    everywhere = render(helm, tmp_path)
    manifests = render(helm, tmp_path, {"operator": {"watchNamespaces": ["chat", "team-*"]}})
    for rendered in (everywhere, manifests):
        assert rule_set(of_kind(rendered, "ClusterRole")) == rule_set(plain)
    # Watching every namespace: both ClusterRoles bound cluster-wide.
    assert {(b["kind"], b["roleRef"]["name"]) for b in everywhere if "Binding" in b["kind"]} == {
        ("ClusterRoleBinding", "fc-fishchat-operator"),
        ("ClusterRoleBinding", "fc-fishchat-operator-cluster"),
    }
    # Watching some namespaces: their rules by RoleBinding (not for a pattern), the rest cluster-wide.
    bindings = {
        (b["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"])
        for b in manifests
        if "Binding" in b["kind"]
    }
    assert bindings == {
        ("RoleBinding", "chat", "fc-fishchat-operator"),
        ("ClusterRoleBinding", None, "fc-fishchat-operator-cluster"),
    }


def test_chart_crd_is_crds_file(helm: Path) -> None:
    assert (CHART / "crds" / "fishchatcluster.yaml").read_bytes() == (
        REPO / "crds" / "fishchatcluster.yaml"
    ).read_bytes()
    # And helm ships it: `helm show crds` prints the chart's crds/.
    shown = run_helm(helm, "show", "crds", str(CHART)).stdout
    assert yamlio.load_all(shown) == yamlio.load_all((REPO / "crds" / "fishchatcluster.yaml").read_text())


def test_chart_operator_deployment_is_operator_rbac_deployment(helm: Path, tmp_path: Path) -> None:
    """Both install paths run the same operator: pod specs equal but for names and labels."""
    (chart,) = of_kind(render(helm, tmp_path), "Deployment")
    (plain,) = [m for m in rbac_manifests() if m["kind"] == "Deployment"]
    for deployment in (chart, plain):
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    chart_pod = dict(chart["spec"]["template"]["spec"])
    plain_pod = dict(plain["spec"]["template"]["spec"])
    assert chart_pod.pop("serviceAccountName") == "fc-fishchat-operator"
    assert plain_pod.pop("serviceAccountName") == "fishchat-operator"
    assert chart_pod == plain_pod


# --- the schema check: a strict server-side dry run of every rendered manifest ---------------------


@pytest.fixture(scope="session")
async def monitoring_crds(kube: KubeClient) -> None:
    for crd in yamlio.load_all(MONITORING_CRDS.read_text()):
        await kube.apply(crd)
        name = crd["metadata"]["name"]

        async def established(name: str = name) -> bool:
            obj = await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name)
            conditions = ((obj or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        await eventually(established, f"CRD {name} to be established")


async def apply(kube: KubeClient, manifest: dict[str, Any], dry_run: bool = False) -> None:
    """Server-side apply with fieldValidation=Strict; with `dry_run`, the API server's whole validation
    (schemas of the exact version, CRD schemas and CEL rules, admission) without persisting anything.
    """
    meta = manifest["metadata"]
    params = {"fieldManager": "chart-test", "force": "true", "fieldValidation": "Strict"}
    await kube.request(
        "PATCH",
        type_of(manifest).path(meta.get("namespace"), meta["name"]),
        params={**params, "dryRun": "All"} if dry_run else params,
        body=manifest,
        content_type="application/apply-patch+yaml",
    )


async def test_every_rendered_manifest_passes_a_strict_server_side_dry_run(
    helm: Path,
    tmp_path: Path,
    kube: KubeClient,
    crd_installed: None,
    monitoring_crds: None,
    scenario: Scenario,
) -> None:
    ns = scenario.namespace
    checked: list[str] = []
    for values in (None, all_on(ns)):
        for manifest in render(helm, tmp_path, values, namespace=ns):
            try:
                await apply(kube, manifest, dry_run=True)
            except KubeError as error:
                raise AssertionError(f"{manifest['kind']} {manifest['metadata']['name']}: {error}") from error
            checked.append(manifest["kind"])
    assert {"Deployment", "ClusterRole", "FishChatCluster", "ServiceMonitor", "PrometheusRule", "Job"} <= set(
        checked
    )


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("Deployment", ("spec", "template", "spec", "containers", 0)),
        ("FishChatCluster", ("spec", "backends", "kafka")),
        ("ServiceMonitor", ("spec", "endpoints", 0)),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0)),
    ],
)
async def test_the_dry_run_fails_on_a_misspelt_field(
    helm: Path,
    tmp_path: Path,
    kube: KubeClient,
    crd_installed: None,
    monitoring_crds: None,
    scenario: Scenario,
    kind: str,
    path: tuple[str | int, ...],
) -> None:
    rendered = render(helm, tmp_path, all_on(scenario.namespace), namespace=scenario.namespace)
    manifest = of_kind(rendered, kind)[-1]  # of the two ServiceMonitors, the roles' one
    node: Any = manifest
    for step in path:
        node = node[step]
    misspelt = "imagePullPolicyy" if kind == "Deployment" else "intervall"
    node[misspelt] = "x"
    with pytest.raises(KubeError) as refused:
        await apply(kube, manifest, dry_run=True)
    # Built-in kinds: "field not declared in schema"; custom resources: "unknown field" (strict).
    assert misspelt in str(refused.value), refused.value


# --- helm install and uninstall on the real API server ---------------------------------------------


def kubeconfig() -> str:
    return os.environ["KUBECONFIG"]


@pytest.fixture
async def release(helm: Path, scenario: Scenario) -> AsyncIterator[str]:
    """A release name; whatever the test installed under it is uninstalled afterwards."""
    name = f"fc-{scenario.suffix}"
    yield name
    run_helm(
        helm, "uninstall", name, "--namespace", scenario.namespace, "--no-hooks", "--ignore-not-found",
        "--kubeconfig", kubeconfig(), check=False,
    )  # fmt: skip


async def test_helm_install_runs_the_cluster_and_uninstall_removes_everything(
    helm: Path, tmp_path: Path, kube: KubeClient, crd_installed: None, scenario: Scenario, release: str
) -> None:
    ns = scenario.namespace
    values = {"cluster": {"enabled": True, "name": "demo", "spec": scenario.cluster()["spec"]}}
    run_helm(
        helm, "install", release, str(CHART), "--namespace", ns, "--kubeconfig", kubeconfig(),
        "--values", str(values_file(tmp_path, values)),
    )  # fmt: skip
    # The chart's objects exist as rendered...
    operator_name = f"{release}-fishchat-operator"
    deployment = await kube.get("apps/v1", "Deployment", ns, operator_name)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_IMAGE
    for role in (operator_name, f"{operator_name}-cluster"):
        assert await kube.get("rbac.authorization.k8s.io/v1", "ClusterRole", None, role) is not None
    # ...and the cluster it installed is accepted and reconciled (by the in-process operator: the chart's
    # own operator Pod needs a kubelet, which the e2e tier has).
    status = await wait_condition(kube, ns, "demo", "Progressing", "True", "RollingOut")
    assert status["version"] == "0.1.0"
    listed = run_helm(helm, "list", "--namespace", ns, "--kubeconfig", kubeconfig(), "-o", "json").stdout
    assert [(r["name"], r["status"], r["app_version"]) for r in json.loads(listed)] == [
        (release, "deployed", "0.1.0")
    ]

    run_helm(helm, "uninstall", release, "--namespace", ns, "--no-hooks", "--kubeconfig", kubeconfig())

    async def gone() -> bool:
        return (
            await kube.get(API_VERSION, KIND, ns, "demo") is None
            and await kube.get("apps/v1", "Deployment", ns, operator_name) is None
            and await kube.get("rbac.authorization.k8s.io/v1", "ClusterRole", None, operator_name) is None
        )

    await eventually(gone, "the release's objects (and the cluster, after its finalizer) to be gone")


async def test_uninstall_hook_deletes_the_cluster_with_only_its_own_rights(
    helm: Path, tmp_path: Path, kube: KubeClient, crd_installed: None, scenario: Scenario
) -> None:
    ns = scenario.namespace
    values = all_on(ns, scenario.cluster()["spec"])
    manifests = render(helm, tmp_path, values, namespace=ns)
    hook = [m for m in manifests if "helm.sh/hook" in m["metadata"].get("annotations", {})]
    assert kinds(hook) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    assert {m["metadata"]["annotations"]["helm.sh/hook"] for m in hook} == {"pre-delete"}
    for manifest in hook:
        if manifest["kind"] != "Job":
            await apply(kube, manifest)
    (cluster,) = of_kind(manifests, "FishChatCluster")
    await kube.create(cluster)
    await wait_condition(kube, ns, "demo", "Progressing", "True", "RollingOut")
    (job,) = of_kind(hook, "Job")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # What the Job's pod would run, as its ServiceAccount.
    token_config = await service_account_kubeconfig(kube, ns, pod["serviceAccountName"], tmp_path)
    deleted = await run_uninstall(token_config, *container["args"])
    assert deleted.returncode == 0, deleted.stderr
    assert f"{ns}/demo: deleted" in deleted.stdout
    assert await kube.get(API_VERSION, KIND, ns, "demo") is None
    again = await run_uninstall(token_config, *container["args"])
    assert again.returncode == 0 and "not found" in again.stdout
    # Nothing beyond that one cluster: not even another FishChatCluster in the same namespace.
    other = await run_uninstall(token_config, "--timeout=5", f"{ns}/other")
    assert other.returncode == 1 and "forbidden" in other.stderr.lower()


async def test_uninstall_says_what_holds_a_cluster_it_cannot_wait_out(
    kube: KubeClient, crd_installed: None, scenario: Scenario
) -> None:
    # A namespace the operator under test does not watch: nobody removes the finalizer.
    ns = f"unwatched-{scenario.suffix}"
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    body = scenario.cluster("stuck")
    body["metadata"] = {"name": "stuck", "namespace": ns, "finalizers": [FINALIZER]}
    await kube.create(body)
    try:
        held = await run_uninstall(Path(kubeconfig()), "--timeout=3", f"{ns}/stuck")
        assert held.returncode == 1
        assert f"{ns}/stuck: still present after the timeout" in held.stderr
        assert FINALIZER in held.stderr and "is fishchat-operator running" in held.stderr
    finally:
        with contextlib.suppress(KubeError):
            await kube.merge_patch(API_VERSION, KIND, ns, "stuck", {"metadata": {"finalizers": None}})
        with contextlib.suppress(KubeError):
            await kube.delete("v1", "Namespace", None, ns)


async def service_account_kubeconfig(kube: KubeClient, namespace: str, account: str, tmp_path: Path) -> Path:
    _, answer = await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    path = tmp_path / f"{account}.kubeconfig"
    write_token_kubeconfig(Path(kubeconfig()), answer["status"]["token"], path)
    return path


async def run_uninstall(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")} | {
        "KUBECONFIG": str(config)
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fishchat_operator.uninstall", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# --- alerts and dashboard --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool(stack_env: dict[str, str]) -> str:
    """promtool comes with the stack's Prometheus (Debian's prometheus package)."""
    path = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(path).is_file():
        pytest.fail("promtool not found: `fishchat-stack up prometheus` installs it")
    return path


@pytest.fixture
def rule_groups(helm: Path, tmp_path: Path) -> list[dict[str, Any]]:
    (rule,) = of_kind(render(helm, tmp_path, all_on()), "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def test_promtool_accepts_the_rules(promtool: str, rule_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yamlio.dump({"groups": rule_groups}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


ROLE = {"namespace": "chat", "fishchat_cluster": "demo"}
OPERATOR = {"namespace": "chat", "name": "demo"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def alert(name: str, severity: str, labels: dict[str, str], at: str) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": {"severity": severity, **labels}}],
    }


def quiet(name: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": []}


def test_each_alert_fires_on_its_condition_and_not_otherwise(
    promtool: str, rule_groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Annotations are templates checked by `promtool check rules`; here: expressions, `for` and labels.
    for group in rule_groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yamlio.dump({"groups": rule_groups}))
    healthy = {"namespace": "chat", "fishchat_cluster": "calm"}
    lag = "fishchat_kafka_consumer_lag"
    reps = "fishchat_operator_role_replicas"
    access = {**OPERATOR, "role": "access"}
    scaled_to_zero = {"namespace": "chat", "name": "idle", "role": "access"}
    requests = "fishchat_requests_total"
    rpcs = "fishchat_rpc_server_requests_total"
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # msg-job 20000 records behind on one partition of p2p (above the 10000 default).
                    series(lag, {**ROLE, "job": "msg-job", "topic": "p2p", "partition": "0"}, "20000x30"),
                    series(lag, {**ROLE, "job": "msg-job", "topic": "p2p", "partition": "1"}, "0x30"),
                    series(lag, {**healthy, "job": "msg-job", "topic": "p2p", "partition": "0"}, "50x30"),
                    # access: 2 ready, then none from minute 2 on; another cluster scaled to zero on purpose.
                    series(reps, {**access, "state": "desired"}, "2x30"),
                    series(reps, {**access, "state": "ready"}, "2 2 0x28"),
                    series(reps, {**scaled_to_zero, "state": "desired"}, "0x30"),
                    series(reps, {**scaled_to_zero, "state": "ready"}, "0x30"),
                    # access answers 100 requests a minute, 10 of them server errors (9%): alert.
                    series(requests, {**ROLE, "job": "access", "cmd": "sendp2p", "code": "0"}, "0+100x30"),
                    series(requests, {**ROLE, "job": "access", "cmd": "sendp2p", "code": "90001"}, "0+10x30"),
                    # logic: 1% of its RPCs fail (below 5%): no alert.
                    series(rpcs, {**ROLE, "job": "logic", "method": "SendP2P", "code": "0"}, "0+100x30"),
                    series(rpcs, {**ROLE, "job": "logic", "method": "SendP2P", "code": "90002"}, "0+1x30"),
                    # The operator: the cluster not Ready, and Kafka failing every minute.
                    series("fishchat_operator_cluster_ready", OPERATOR, "0x30"),
                    series(
                        "fishchat_operator_reconcile_errors_total",
                        {"namespace": "fishchat-system", "stage": "kafka"},
                        "0+1x30",
                    ),
                ],
                "alert_rule_test": [
                    quiet("FishChatConsumerLagHigh", "5m"),  # pending: 10m by default
                    alert("FishChatConsumerLagHigh", "warning", {**ROLE, "topic": "p2p"}, "12m"),
                    quiet("FishChatNoReadyAccessPod", "1m"),
                    alert("FishChatNoReadyAccessPod", "critical", OPERATOR, "5m"),
                    alert("FishChatClientErrorRateHigh", "warning", {**ROLE, "job": "access"}, "12m"),
                    quiet("FishChatRPCErrorRateHigh", "12m"),
                    alert("FishChatClusterNotReady", "warning", OPERATOR, "20m"),
                    alert(
                        "FishChatOperatorReconcileErrors",
                        "warning",
                        {"namespace": "fishchat-system", "stage": "kafka"},
                        "25m",
                    ),
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yamlio.dump(tests))
    tested = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def exported_names() -> set[str]:
    """Every series name the services and the operator export (counters as *_total, histograms' parts)."""
    registry = CollectorRegistry()
    ServerMetrics(registry)
    RpcMetrics(registry)

    class Consumer:
        malformed_records = 0

    DeliveryMetrics(registry, Consumer())  # type: ignore[arg-type]
    names: set[str] = set()
    for reg in (registry, operator_metrics.REGISTRY):
        for family in reg.collect():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
            else:
                names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (label matchers and grouping clauses removed first)."""
    bare = re.sub(r"\{[^}]*\}", "", expr)
    bare = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"label_values\(([^,]*),[^)]*\)", r"\1", bare)
    return set(re.findall(r"\bfishchat_[a-z0-9_]+", bare))


def test_alerts_and_dashboard_use_only_exported_metrics(rule_groups: list[dict[str, Any]]) -> None:
    exported = exported_names()
    dashboard = json.loads((CHART / "dashboards" / "fishchat.json").read_text())
    expressions = [r["expr"] for g in rule_groups for r in g["rules"]]
    expressions += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    expressions += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used: set[str] = set()
    for expr in expressions:
        used |= metric_names(expr)
    assert used, "no metric found in the expressions"
    assert used <= exported, f"not exported by any service or the operator: {sorted(used - exported)}"
    # Every panel is on the cluster the dashboard's variables choose.
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "fishchat_operator_reconcile" not in target["expr"]:
                assert "$cluster" in target["expr"], (panel["title"], target["expr"])
