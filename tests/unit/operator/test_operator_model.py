"""Unit tests of the operator's types, schema, TOML writer, topic plans and layering.

The golden tests pin whole outputs; these pin the rules behind them: defaults agree between the CRD
and the parser, bad specs are refused with the path of the offending field, the TOML the pods read
parses back to the same data, partitions only ever grow, and the pure modules stay free of I/O.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import kopf
import pytest

from fishchat.domain.ratelimit import Rate, RateLimitSettings
from fishchat_operator import tomlfmt, yamlio
from fishchat_operator.config import OperatorConfig
from fishchat_operator.constants import ROLES, ReclaimPolicy, Role
from fishchat_operator.crd import crd
from fishchat_operator.kube import ResourceType, kubeconfig_login, resource_type
from fishchat_operator.model import LimitsSpec, parse_cluster, parse_spec
from fishchat_operator.observations import TopicState
from fishchat_operator.roleconfig import render_role_config, role_config
from fishchat_operator.schema import SpecError
from fishchat_operator.topics import TopicAction, min_insync_replicas, plan_topic

GOLDEN = Path(__file__).parent / "golden"
PACKAGE = Path(__file__).resolve().parents[3] / "operator" / "fishchat_operator"
PURE_MODULES = (
    "constants",
    "schema",
    "model",
    "status",
    "observations",
    "render",
    "roleconfig",
    "topics",
    "conditions",
    "autoscaling",
    "crd",
    "tomlfmt",
    "yamlio",
)
IO_MODULES = (
    "kube",
    "kafka_topics",
    "hbase_table",
    "prometheus",
    "reconcile",
    "autoscaler",
    "handlers",
    "metrics",
    "__main__",
)
IO_LIBRARIES = ("kopf", "aiohttp", "aiokafka", "happybase", "thriftpy2", "kubernetes", "prometheus_client")


def body(name: str = "minimal") -> dict[str, Any]:
    loaded: dict[str, Any] = yamlio.load((GOLDEN / "render" / f"{name}.input.yaml").read_text())
    return loaded


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# --- parsing and defaults --------------------------------------------------------------------------


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = parse_cluster(body()).spec
    assert spec.image == "ghcr.io/fishchat/fishchat" and spec.version == "0.1.0"
    assert [spec.roles.of(r).replicas for r in ROLES] == [2] * len(ROLES)
    assert spec.roles.access.termination_grace_period_seconds == 60
    assert spec.roles.access.pre_stop_sleep_seconds == 5
    assert (spec.topics.p2p.name, spec.topics.group.name) == ("logic_producer_p2p", "logic_producer_group")
    assert spec.topics.p2p.partitions == 12 and spec.topics.p2p.replication_factor == 3
    assert spec.table.name == "im"
    assert spec.reclaim_policy is ReclaimPolicy.RETAIN
    assert not spec.autoscaling.enabled
    assert spec.backends.mariadb.credentials_secret.username_key == "username"


def _apply_schema_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's structural defaulting does (defaults, then recurse into objects)."""
    if schema.get("type") != "object" or not isinstance(value, dict):
        return value
    out = dict(value)
    for key, prop in schema.get("properties", {}).items():
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        if key in out:
            out[key] = _apply_schema_defaults(prop, out[key])
    return out


@pytest.mark.parametrize("case", ["minimal", "full", "partition-shrink"])
def test_crd_defaults_agree_with_the_parser(case: str) -> None:
    raw = body(case)["spec"]
    defaulted = _apply_schema_defaults(spec_schema()["properties"]["spec"], raw)
    # The operator must see the same cluster whether or not the API server defaulted the body.
    assert parse_spec(defaulted) == parse_spec(raw)
    # And defaulting fills every field the parser knows: nothing is left to hidden code defaults.
    reparsed = parse_spec(defaulted)
    assert reparsed.roles.msg_job.resources.limits.memory is not None


@pytest.mark.parametrize(
    ("mutate", "path", "problem"),
    [
        (lambda s: s.pop("backends"), "spec.backends", "is required"),
        (
            lambda s: s["backends"]["kafka"].update(bootstrapServers=[]),
            "spec.backends.kafka.bootstrapServers",
            "at least 1",
        ),
        (
            lambda s: s["backends"]["kafka"].update(bootstrapServers=["kafka"]),
            "bootstrapServers[0]",
            "does not match",
        ),
        (
            lambda s: s.update(roles={"access": {"replicas": "two"}}),
            "spec.roles.access.replicas",
            "must be an integer",
        ),
        (
            lambda s: s.update(roles={"access": {"replicas": 1001}}),
            "spec.roles.access.replicas",
            "at most 1000",
        ),
        (lambda s: s.update(topics={"p2p": {"partitions": 0}}), "spec.topics.p2p.partitions", "at least 1"),
        (lambda s: s.update(reclaimPolicy="Keep"), "spec.reclaimPolicy", "must be one of Retain, Delete"),
        (lambda s: s.update(replica=3), "spec", "unknown field(s) replica"),
        (
            lambda s: s.update(roles={"msgJob": {"resources": {"limits": {"memory": "lots"}}}}),
            "memory",
            "does not match",
        ),
    ],
)
def test_bad_specs_name_the_field(mutate: Any, path: str, problem: str) -> None:
    raw = body()
    mutate(raw["spec"])
    with pytest.raises(SpecError) as caught:
        parse_cluster(raw)
    assert path in caught.value.path and problem in str(caught.value)


def test_metadata_is_required() -> None:
    raw = body()
    del raw["metadata"]["uid"]
    with pytest.raises(SpecError, match=r"metadata\.uid: is required"):
        parse_cluster(raw)


# --- the CRD ---------------------------------------------------------------------------------------


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for key, prop in schema.get("properties", {}).items():
        found += _walk(prop, f"{path}.{key}")
    if "items" in schema:
        found += _walk(schema["items"], f"{path}[]")
    return found


def test_every_spec_and_status_field_has_a_description() -> None:
    root = spec_schema()
    missing = [
        path
        for top in ("spec", "status")
        for path, prop in _walk(root["properties"][top], top)
        if not path.endswith("[]") and not prop.get("description")
    ]
    assert missing == []


def test_crd_schema_is_structural() -> None:
    # Structural: every node has a type (or is int-or-string), no additionalProperties with properties.
    untyped = [
        path
        for path, prop in _walk(spec_schema(), "")
        if "type" not in prop and not prop.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []


def test_crd_carries_cel_rules_and_subresources() -> None:
    text = yamlio.dump(crd())
    for rule in (
        "self.minReplicas <= self.maxReplicas",
        "self.p2p.name != self.group.name",
        "self.terminationGracePeriodSeconds > self.preStopSleepSeconds",
        "self == oldSelf",
        "size(self.metadata.name) <= 54",
    ):
        assert rule in text
    version = crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.roles.access.replicas",
        "statusReplicasPath": ".status.roles.access.replicas",
        "labelSelectorPath": ".status.accessSelector",
    }
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Access",
        "Connections",
        "Version",
        "Age",
    ]
    spec = spec_schema()["properties"]["spec"]["properties"]
    assert "self == oldSelf" in str(spec["topics"]["properties"]["p2p"]["properties"]["name"])
    assert "self == oldSelf" in str(spec["table"]["properties"]["name"])


# --- role configuration (TOML) ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_role_config_toml_parses_back(role: Role) -> None:
    cluster = parse_cluster(body("full"))
    assert tomllib.loads(render_role_config(cluster, role)) == role_config(cluster, role)


def test_every_role_finds_etcd_and_only_its_backends() -> None:
    cluster = parse_cluster(body("full"))
    etcd_layout = {"etcd", "registry", "versions", "snowflake"}
    # The full example turns TLS on: every role gets the same [tls] (certificates of the mounted Secret).
    assert all(role_config(cluster, role)["tls"]["grpc"] for role in ROLES)
    # [chat] (the rate limits) goes to the roles that check them: access, logic and register.
    assert {role for role in ROLES if "chat" in role_config(cluster, role)} == {
        Role.ACCESS,
        Role.LOGIC,
        Role.REGISTER,
    }
    sections = {
        role: set(role_config(cluster, role)) - {"role", "cluster", "namespace", "server", "tls", "chat"}
        for role in ROLES
    }
    assert all(etcd_layout <= s for s in sections.values())
    backends = {role: s - etcd_layout for role, s in sections.items()}
    assert backends[Role.MSG_JOB] == {"kafka", "hbase", "redis"}
    assert backends[Role.MANAGER] == {"hbase"}
    assert backends[Role.REGISTER] == {"redis", "mysql"}
    assert backends[Role.LOGIC] == {"kafka", "redis"}
    assert backends[Role.NOTIFY] == {"redis"}
    assert backends[Role.GATEWAY] == backends[Role.IDGEN] == set()
    assert backends[Role.ACCESS] == {"access"}  # its drain timings, from the pod's grace period
    access = role_config(cluster, Role.ACCESS)
    assert (access["access"]["drain_timeout_s"], access["server"]["drain_timeout_seconds"]) == (100, 5)


def test_toml_writer_escapes_and_nests() -> None:
    data = {
        "plain": 'a "quoted" \\ back\nslash\ttab\x01',
        "number": 3,
        "flag": False,
        "list": ["x", "y"],
        "outer": {"inner": {"deep": 1}, "key with space": "v"},
    }
    assert tomllib.loads(tomlfmt.dumps(data, header=("comment",))) == data
    with pytest.raises(TypeError):
        tomlfmt.dumps({"bad": object()})


# --- topics ----------------------------------------------------------------------------------------


def test_topics_are_created_grown_and_never_shrunk() -> None:
    spec = parse_cluster(body()).spec.topics.p2p  # 12 partitions, replication 3
    created = plan_topic("p2p", spec, None)
    assert created.action is TopicAction.CREATE and created.partitions == 12
    assert dict(created.configs) == {"min.insync.replicas": "2"}
    grown = plan_topic("p2p", spec, TopicState("p2p", spec.name, 6, 3))
    assert grown.action is TopicAction.GROW and grown.partitions == 12
    kept = plan_topic("p2p", spec, TopicState("p2p", spec.name, 24, 3))
    assert kept.action is TopicAction.KEEP and kept.partitions == 24
    assert [min_insync_replicas(rf) for rf in (1, 2, 3, 5)] == [1, 1, 2, 4]


# --- settings and REST paths -----------------------------------------------------------------------


def test_operator_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {"FISHCHAT_OPERATOR_RESYNC_SECONDS": "2.5", "FISHCHAT_OPERATOR_METRICS_PORT": "0"}
    )
    assert config.resync_seconds == 2.5 and config.metrics_port == 0
    assert OperatorConfig.from_env({}) == OperatorConfig()
    with pytest.raises(ValueError, match="FISHCHAT_OPERATOR_RESYNC_SECONDS"):
        OperatorConfig.from_env({"FISHCHAT_OPERATOR_RESYNC_SECONDS": "soon"})


def test_rest_paths() -> None:
    assert resource_type("apps/v1", "Deployment").path("chat", "demo-access") == (
        "/apis/apps/v1/namespaces/chat/deployments/demo-access"
    )
    assert resource_type("v1", "ConfigMap").path("chat") == "/api/v1/namespaces/chat/configmaps"
    assert resource_type("fishchat.io/v1alpha1", "FishChatCluster").path("chat", "demo", "status") == (
        "/apis/fishchat.io/v1alpha1/namespaces/chat/fishchatclusters/demo/status"
    )
    with pytest.raises(ValueError):
        ResourceType("v1", "pods").path(None)
    with pytest.raises(ValueError):
        resource_type("v1", "ReplicationController")


# --- layering --------------------------------------------------------------------------------------


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "fishchat_operator":
                names |= {f"fishchat_operator.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_do_no_io(module: str) -> None:
    imported = _imports(module)
    forbidden = {f"fishchat_operator.{m}" for m in IO_MODULES}
    bad = sorted(
        name
        for name in imported
        if name in forbidden
        or name.split(".")[0] in IO_LIBRARIES
        or name in ("socket", "asyncio", "subprocess")
    )
    assert bad == [], f"{module} is pure and must not import {bad}"


# --- documentation ---------------------------------------------------------------------------------


def test_docs_describe_every_spec_field() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "operator.md").read_text()
    role_keys = {role.spec_key for role in ROLES}
    missing = []
    for path, prop in _walk(spec_schema()["properties"]["spec"], "spec"):
        if path.endswith("[]") or prop.get("type") == "object":
            continue
        parts = path.split(".")
        if len(parts) > 2 and parts[1] == "roles" and parts[2] in role_keys:
            generic = ".".join([*parts[:2], "<role>", *parts[3:]])
            if f"`{generic}`" in docs or f"`{path}`" in docs:
                continue
        if f"`{path}`" not in docs:
            missing.append(path)
    assert missing == [], f"docs/operator.md does not describe {missing}"


def test_kubeconfig_login_resolves_relative_files(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "kubeconfig").write_text(
        yamlio.dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority": "pki/ca.crt",
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "secret-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "chat"}}],
                "current-context": "x",
            }
        )
    )
    info = kubeconfig_login(str(tmp_path / "kubeconfig"))
    assert info.server == "https://127.0.0.1:6443"
    assert info.ca_path == str(tmp_path / "pki" / "ca.crt")
    assert info.token == "secret-token" and info.default_namespace == "chat"
    (tmp_path / "broken").write_text("current-context: missing\n")
    with pytest.raises(kopf.LoginError, match="no context named 'missing'"):
        kubeconfig_login(str(tmp_path / "broken"))


def test_limit_descriptions_name_the_services_defaults() -> None:
    """A bucket left out of spec.limits keeps the services' default; its description says which."""
    defaults = RateLimitSettings()
    for spec_field in dataclasses.fields(LimitsSpec):
        if spec_field.name == "enabled":
            continue
        rate: Rate = getattr(defaults, spec_field.name)
        described = f"default {round(rate.per_s * 60)}/min, burst {rate.burst}"
        assert described in spec_field.metadata["description"], spec_field.name
