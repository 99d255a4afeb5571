"""The Kubernetes clusters the e2e tier runs on: the stack's own node, or a kind cluster.

Both give the tests the same four things: a kubeconfig, a way to put FishChat's images where the
node's container runtime finds them (no registry is involved: `imagePullPolicy: IfNotPresent`), the
address where NodePorts answer from this machine, and the backends (`spec.backends` of a
FishChatCluster) as Pods reach them.

- `stack` (the default): `fishchat-stack`'s API server with its real node (`fishchat.stack.node`);
  the images are built by buildah (`fishchat.stack.images`) and imported into the node's containerd;
  the backends are the stack's own servers at the node network's machine address.
- `kind` (`FISHCHAT_E2E_CLUSTER=kind`, where a Docker engine runs): the kind cluster
  `FISHCHAT_KIND_CLUSTER` (default `fishchat`); the images are built with `docker build` from the same
  build file and loaded with `kind load docker-image`; the backends must be reachable from kind's
  nodes, so they are given as JSON in `FISHCHAT_E2E_BACKENDS` (the CR's `spec.backends`, credentials
  as `mysqlUser`/`mysqlPassword` beside it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from fishchat.stack.base import repo_root
from fishchat.stack.images import TARGETS, build_images, image_ref, project_version
from fishchat.stack.kube import KubeAPIServer
from fishchat.stack.node import NODE_NAME, RESERVED_TAINT, Node


class E2EUnavailable(RuntimeError):
    """No cluster can run the e2e tier here; the message says what is missing (the tier fails)."""


@dataclass(frozen=True)
class Backends:
    """Where Pods reach the servers, and the database credentials the cluster's Secret holds."""

    spec: Mapping[str, Any]
    mysql_user: str
    mysql_password: str
    #: Kafka and HBase as this machine reaches them (to check topics and table from the tests).
    kafka_from_tests: str
    hbase_from_tests: tuple[str, int]


class E2ECluster(Protocol):
    name: str
    kubeconfig: Path
    #: Host where this machine reaches the cluster's NodePorts.
    node_address: str
    backends: Backends
    #: A Prometheus that scrapes what this machine's tests add (`fishchat.stack.prometheus`), as Pods
    #: reach it; empty where there is none.
    prometheus_url: str

    def load_images(self, tags: Sequence[str]) -> None:
        """Build both images under the project version and `tags`, and make the node hold them."""

    def open(self) -> None:
        """Make the cluster take the tier's Pods."""

    def close(self) -> None:
        """Undo `open` (the stack's node goes back to refusing other tests' Pods)."""


@dataclass
class StackNodeCluster:
    """The stack's API server and its node (`fishchat-stack up` brings both up)."""

    env: Mapping[str, str]
    name: str = "stack"
    kube: KubeAPIServer = field(default_factory=KubeAPIServer)
    node: Node = field(default_factory=Node)

    def __post_init__(self) -> None:
        missing = [k for k in ("KUBECONFIG", "FISHCHAT_NODE_IP", "FISHCHAT_MYSQL_URL") if not self.env.get(k)]
        if missing or not self.node.running():
            raise E2EUnavailable(
                "the stack's node is not running (missing: "
                f"{', '.join(missing) or 'node processes'}); `fishchat-stack up` starts it, and its log "
                f"says why it could not ({self.node.install_log})"
            )
        self.kubeconfig = Path(self.env["KUBECONFIG"])
        self.node_address = self.env["FISHCHAT_NODE_IP"]
        self.prometheus_url = self.env.get("FISHCHAT_NODE_PROMETHEUS", "")
        mysql = urlsplit(self.env["FISHCHAT_MYSQL_URL"])
        mysql_host, mysql_port = self.env["FISHCHAT_NODE_MYSQL"].rsplit(":", 1)
        thrift_host, thrift_port = self.env["FISHCHAT_NODE_HBASE_THRIFT"].rsplit(":", 1)
        local_thrift_host, local_thrift_port = self.env["FISHCHAT_HBASE_THRIFT"].rsplit(":", 1)
        self.backends = Backends(
            spec={
                "kafka": {"bootstrapServers": [self.env["FISHCHAT_NODE_KAFKA_BOOTSTRAP"]]},
                "hbase": {"thriftHost": thrift_host, "thriftPort": int(thrift_port)},
                "redis": {"url": f"redis://{self.env['FISHCHAT_NODE_REDIS']}/0"},
                "mariadb": {
                    "host": mysql_host,
                    "port": int(mysql_port),
                    "database": mysql.path.lstrip("/"),
                    "credentialsSecret": {"name": "fishchat-mysql"},
                },
                "etcd": {"endpoints": [f"http://{self.env['FISHCHAT_NODE_ETCD']}"]},
            },
            mysql_user=mysql.username or "",
            mysql_password=mysql.password or "",
            kafka_from_tests=self.env["FISHCHAT_KAFKA_BOOTSTRAP"],
            hbase_from_tests=(local_thrift_host, int(local_thrift_port)),
        )

    def load_images(self, tags: Sequence[str]) -> None:
        built = build_images(tags)
        self.node.import_images(sorted({image.archive for image in built}))

    def _taints(self) -> list[dict[str, Any]]:
        node = self.kube.get_json(f"/api/v1/nodes/{NODE_NAME}")
        return list(node.get("spec", {}).get("taints") or [])

    def _set_taints(self, taints: list[dict[str, Any]]) -> None:
        self.kube.api("PATCH", f"/api/v1/nodes/{NODE_NAME}", {"spec": {"taints": taints or None}})

    def open(self) -> None:
        self._set_taints([t for t in self._taints() if t.get("key") != RESERVED_TAINT])

    def close(self) -> None:
        taints = [t for t in self._taints() if t.get("key") != RESERVED_TAINT]
        self._set_taints([*taints, {"key": RESERVED_TAINT, "value": "e2e", "effect": "NoSchedule"}])


@dataclass
class KindCluster:
    """A kind cluster (where a Docker engine runs), its images loaded with `kind load`."""

    env: Mapping[str, str]
    name: str = "kind"

    def __post_init__(self) -> None:
        for tool in ("docker", "kind"):
            if shutil.which(tool) is None:
                raise E2EUnavailable(f"FISHCHAT_E2E_CLUSTER=kind needs `{tool}` on PATH")
        if subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode:
            raise E2EUnavailable("FISHCHAT_E2E_CLUSTER=kind needs a Docker engine; `docker info` fails")
        self.cluster = self.env.get("FISHCHAT_KIND_CLUSTER", "fishchat")
        kubeconfig = _run(["kind", "get", "kubeconfig", "--name", self.cluster])
        handle = tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False)  # noqa: SIM115
        handle.write(kubeconfig)
        handle.close()
        self.kubeconfig = Path(handle.name)
        node = f"{self.cluster}-control-plane"
        self.node_address = _run(
            ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", node]
        ).strip()
        raw = self.env.get("FISHCHAT_E2E_BACKENDS")
        if not raw:
            raise E2EUnavailable(
                "FISHCHAT_E2E_CLUSTER=kind needs FISHCHAT_E2E_BACKENDS: JSON with the CR's spec.backends "
                "as kind's nodes reach them, plus mysqlUser, mysqlPassword, kafkaFromTests, hbaseFromTests "
                "and prometheusUrl (a Prometheus that scrapes this machine's file targets)"
            )
        given = json.loads(raw)
        self.prometheus_url = str(given.get("prometheusUrl", ""))
        hbase_host, hbase_port = str(given["hbaseFromTests"]).rsplit(":", 1)
        self.backends = Backends(
            spec=given["backends"],
            mysql_user=given["mysqlUser"],
            mysql_password=given["mysqlPassword"],
            kafka_from_tests=given["kafkaFromTests"],
            hbase_from_tests=(hbase_host, int(hbase_port)),
        )

    def load_images(self, tags: Sequence[str]) -> None:
        version = project_version()
        for target in TARGETS:
            refs = [image_ref(target, tag) for tag in (version, *tags)]
            tag_args = [arg for ref in refs for arg in ("--tag", ref)]
            build_file = str(repo_root() / "images" / "Containerfile")
            _run(["docker", "build", "--file", build_file, "--target", target, *tag_args, str(repo_root())])
            _run(["kind", "load", "docker-image", "--name", self.cluster, *refs])

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


def _run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise E2EUnavailable(f"`{' '.join(cmd[:4])} ...` failed: {result.stderr.strip()[-800:]}")
    return result.stdout


def e2e_cluster(env: Mapping[str, str] | None = None) -> E2ECluster:
    """The cluster FISHCHAT_E2E_CLUSTER names (`stack` by default)."""
    env = env if env is not None else os.environ
    mode = env.get("FISHCHAT_E2E_CLUSTER", "stack")
    if mode == "stack":
        return StackNodeCluster(env)
    if mode == "kind":
        return KindCluster(env)
    raise E2EUnavailable(f"FISHCHAT_E2E_CLUSTER={mode!r}: choose stack or kind")
