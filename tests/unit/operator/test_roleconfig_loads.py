"""The operator's rendered role configuration loads, unchanged, in the services' own loader.

For every golden cluster, each role's ConfigMap is written to a file and loaded with
`fishchat.serve.config.load_serve_config` (strict: an unknown key or a wrong type is an error), with
exactly the environment the role's Deployment gives its container: plain values as they are, the
downward API (pod IP, pod name) and Secret references resolved as the kubelet would from the fake
pod and Secrets below. The values that matter then arrive where the services read them: listeners
on the container ports, etcd, Kafka, HBase, MariaDB and Redis with their credentials, and key
prefixes that keep clusters sharing etcd or Redis apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fishchat.domain.ratelimit import Rate, RateLimitSettings
from fishchat.production.etcd.client import parse_endpoints
from fishchat.serve.config import ServeConfig, load_serve_config
from fishchat_operator import yamlio
from fishchat_operator.constants import ROLES, Role
from fishchat_operator.model import Cluster, parse_cluster
from fishchat_operator.render import render

GOLDEN = Path(__file__).parent / "golden" / "render"
POD_IP = "10.244.3.17"
# What the Secrets the golden clusters name hold, as the kubelet would read them.
SECRETS: dict[tuple[str, str], str] = {
    ("fishchat-db", "username"): "chat_app",
    ("fishchat-db", "password"): "s3cret:/@pw",
    ("fishchat-db", "user"): "prod_app",
    ("fishchat-db", "pass"): "prod-pa55",
    ("redis-auth", "password"): "redis-pa55",
}


@dataclass(frozen=True)
class Expected:
    """What each golden cluster's pods must end up with (written out, not derived from the operator)."""

    etcd: list[tuple[str, int]]
    etcd_root: str
    redis_url: str
    redis_prefix: str
    redis_password: str | None
    kafka: str
    p2p_topic: str
    group_topic: str
    consumer_group: str
    hbase: tuple[str, int, str]
    mysql: tuple[str, int, str, str, str]  # host, port, database, user, password
    #: The access pod's connection drain and gRPC stop: grace - preStop - 5 s in all.
    access_drain: tuple[float, float]
    #: `[chat.limits]` of access, logic and register, and the WebSocket origins of access.
    limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    ws_origins: tuple[str, ...] = ()


EXPECTED: dict[str, Expected] = {
    "minimal": Expected(
        etcd=[("etcd", 2379)],
        etcd_root="/fishchat/chat/demo/",
        redis_url="redis://redis:6379/0",
        redis_prefix="fishchat:chat:demo:",
        redis_password=None,
        kafka="kafka-0.kafka:9092",
        p2p_topic="logic_producer_p2p",
        group_topic="logic_producer_group",
        consumer_group="fishchat-chat-demo-msg-job",
        hbase=("hbase-thrift", 9090, "im"),
        mysql=("mariadb", 3306, "fishchat", "chat_app", "s3cret:/@pw"),
        access_drain=(60 - 5 - 5 - 5, 5),
    ),
    "full": Expected(
        etcd=[("etcd-0.etcd", 2379), ("etcd-1.etcd", 2379), ("etcd-2.etcd", 2379)],
        etcd_root="/fishchat/prod/",
        redis_url="rediss://redis.storage.svc:6380/2",
        redis_prefix="fishchat:im:prod:",
        redis_password="redis-pa55",
        kafka="kafka-0.kafka:9092,kafka-1.kafka:9092,kafka-2.kafka:9092",
        p2p_topic="chat_p2p",
        group_topic="chat_group",
        consumer_group="fishchat-im-prod-msg-job",
        hbase=("hbase-thrift.storage.svc", 9095, "chat:im"),
        mysql=("mariadb.storage.svc", 3307, "fishchat_prod", "prod_app", "prod-pa55"),
        access_drain=(120 - 10 - 5 - 5, 5),
        limits=RateLimitSettings(
            enabled=False,
            connection_send=Rate(10.0, 50),
            user_send=Rate(20.0, 100),
            connection_login=Rate(0.5, 3),
            user_login=Rate(1.0, 10),
            user_auth=Rate(0.1, 5),
            address_auth=Rate(5.0, 100),
        ),
        ws_origins=("https://chat.example.com", "http://localhost:8080"),
    ),
}
EXPECTED["partition-shrink"] = EXPECTED["minimal"]


def golden_cluster(case: str) -> Cluster:
    return parse_cluster(yamlio.load((GOLDEN / f"{case}.input.yaml").read_text()))


def children(cluster: Cluster) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in render(cluster)}


def pod_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it; an unresolvable reference fails the test."""
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            field_path = source["fieldRef"]["fieldPath"]
            env[var["name"]] = {"status.podIP": POD_IP, "metadata.name": pod_name}[field_path]
        else:
            ref = source["secretKeyRef"]
            env[var["name"]] = SECRETS[(ref["name"], ref["key"])]
    return env


def load_role(cluster: Cluster, role: Role, tmp_path: Path) -> tuple[ServeConfig, dict[str, Any], str]:
    """Mount the role's ConfigMap as the pod does, load it with the pod's env; (config, container, pod)."""
    found = children(cluster)
    name = f"{cluster.name}-{role.value}"
    deployment = found[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    # The volume shows the ConfigMap's keys as files under the mount path.
    mount_dir = tmp_path / mount["mountPath"].lstrip("/")
    mount_dir.mkdir(parents=True, exist_ok=True)
    for key, text in found[("ConfigMap", volume["configMap"]["name"])]["data"].items():
        (mount_dir / key).write_text(text)
    args = container["args"]
    assert args[:2] == ["serve", role.value] and args[2] == "--config"
    config_file = tmp_path / args[3].lstrip("/")
    pod_name = f"{name}-7d9f8c6b5-x2k4q"
    env = pod_env(container, pod_name)
    assert env["FISHCHAT_CONFIG"] == args[3]
    return load_serve_config(role.value, config_file, env), container, pod_name


@pytest.mark.parametrize("case", sorted(EXPECTED))
@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_rendered_config_loads_in_the_services(case: str, role: Role, tmp_path: Path) -> None:
    cluster = golden_cluster(case)
    expected = EXPECTED[case]
    config, container, pod_name = load_role(cluster, role, tmp_path)

    assert (config.role, config.cluster, config.namespace) == (role.value, cluster.name, cluster.namespace)
    # Every container port is the port the role listens on, on every interface.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(ports) <= {"client", "ws", "grpc", "http", "metrics"}
    for kind, port in ports.items():
        assert config.listen(role.value, kind) == f"0.0.0.0:{port}", kind
    for kind in {"client", "ws", "grpc", "http"} - set(ports):
        assert getattr(config.server, f"{kind}_listen") == "", kind
    if "grpc" in ports:
        assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    # Pod facts from the downward API: what access announces and the registry's instance id.
    assert config.advertise("0.0.0.0") == POD_IP
    assert config.instance_id(role.value) == pod_name
    # The operator owns topics and table (per-topic settings); the roles must not create them.
    assert config.server.provision is False

    assert parse_endpoints(config.etcd.endpoints) == expected.etcd
    assert config.etcd.lease_ttl_s == 10
    assert config.registry.prefix == expected.etcd_root + "services/"
    assert config.versions.prefix == expected.etcd_root + "seqs/"
    assert config.snowflake.prefix == expected.etcd_root + "snowflake/"

    if role in (Role.LOGIC, Role.MSG_JOB):
        assert config.kafka.bootstrap == expected.kafka
        topics = (config.kafka.p2p_topic, config.kafka.group_topic)
        assert topics == (expected.p2p_topic, expected.group_topic)
    if role is Role.MSG_JOB:
        assert config.kafka.consumer_group == expected.consumer_group
    if role in (Role.MSG_JOB, Role.MANAGER):
        assert (config.hbase.host, config.hbase.port, config.hbase.table) == expected.hbase
    if role in (Role.LOGIC, Role.REGISTER, Role.NOTIFY, Role.MSG_JOB):
        assert config.redis.url == expected.redis_url
        assert config.redis.prefix == expected.redis_prefix
        assert config.redis.password == expected.redis_password
    if role is Role.REGISTER:
        target = config.mysql.target()
        assert (target.host, target.port, target.database, target.user, target.password) == expected.mysql
        assert expected.mysql[4] not in repr(config)
        if expected.redis_password:
            assert expected.redis_password not in repr(config)
    if role is Role.ACCESS:
        drain = (config.access.drain_timeout_s, config.server.drain_timeout_seconds)
        assert drain == expected.access_drain
        assert config.access.ws_origins == expected.ws_origins
    if role in (Role.ACCESS, Role.LOGIC, Role.REGISTER):
        assert config.chat.limits == expected.limits


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
def test_only_the_roles_that_use_a_secret_get_it(role: Role) -> None:
    """Credentials reach only the roles that talk to MariaDB or Redis."""
    found = children(golden_cluster("full"))
    (container,) = found[("Deployment", f"prod-{role.value}")]["spec"]["template"]["spec"]["containers"]
    names = {var["name"] for var in container["env"]}
    assert ("FISHCHAT_MYSQL_PASSWORD" in names) is (role is Role.REGISTER)
    assert ("FISHCHAT_MYSQL_USER" in names) is (role is Role.REGISTER)
    assert ("FISHCHAT_REDIS_PASSWORD" in names) is (
        role in (Role.LOGIC, Role.REGISTER, Role.NOTIFY, Role.MSG_JOB)
    )


def test_clusters_sharing_etcd_and_redis_never_collide(tmp_path: Path) -> None:
    """Two clusters with default prefixes (same name in two namespaces, two names in one) keep apart:
    no etcd prefix or Redis prefix of one is a prefix of the other's, nor is the consumer group shared."""
    body = yamlio.load((GOLDEN / "minimal.input.yaml").read_text())
    clusters = [
        parse_cluster({**body, "metadata": {**body["metadata"], "name": name, "namespace": namespace}})
        for name, namespace in (("demo", "chat"), ("demo", "chat2"), ("demo2", "chat"))
    ]
    prefixes: list[tuple[str, ...]] = []
    for index, cluster in enumerate(clusters):
        idgen, _, _ = load_role(cluster, Role.IDGEN, tmp_path / str(index) / "idgen")
        notify, _, _ = load_role(cluster, Role.NOTIFY, tmp_path / str(index) / "notify")
        msg_job, _, _ = load_role(cluster, Role.MSG_JOB, tmp_path / str(index) / "msg-job")
        # The registry every role reads must be the same in all of a cluster's roles.
        assert idgen.registry == notify.registry == msg_job.registry
        prefixes.append(
            (
                idgen.registry.prefix,
                idgen.versions.prefix,
                idgen.snowflake.prefix,
                notify.redis.prefix,
                msg_job.kafka.consumer_group,
            )
        )
    for i, ours in enumerate(prefixes):
        for j, theirs in enumerate(prefixes):
            if i == j:
                continue
            for mine, other in zip(ours, theirs, strict=True):
                assert not other.startswith(mine), (mine, other)
    # Within one cluster the etcd key spaces do not overlap either.
    registry, versions, snowflake = prefixes[0][:3]
    for a in (registry, versions, snowflake):
        for b in (registry, versions, snowflake):
            assert a == b or not b.startswith(a), (a, b)


def test_a_key_the_services_do_not_know_is_refused(tmp_path: Path) -> None:
    """The loader really is strict, so the tests above would catch a renamed key."""
    config_file = tmp_path / "logic.toml"
    config_file.write_text('[etcd]\nendpoints = "etcd:2379"\nlease_ttl_seconds = 10\n')
    with pytest.raises(ValueError, match="lease_ttl_seconds"):
        load_serve_config("logic", config_file, {})
