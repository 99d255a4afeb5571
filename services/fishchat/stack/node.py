"""A real Kubernetes node for the stack's API server: containerd, runc, CNI, kubelet and kube-proxy.

Pods of the `kube` component's cluster run here for real. The node lives in a network namespace of
its own (`fishchat.stack.network`): containerd (Debian's, with runc and the CNI plugins), the kubelet
and kube-proxy (built from `k8s.io/kubernetes` at the API server's pinned version) run inside it and
share the machine's mount namespace, so the volumes the kubelet mounts are the ones containers see.

What this machine needs, and why:
- no CAP_SYS_RESOURCE (root holds every other capability): containerd clamps OOM scores to its
  own (`restrict_oom_score_adj`), the kubelet keeps its own at 0.
- cgroup v1 (the v1 hierarchies are mounted, hugetlb sits alone on the unified one): the kubelet
  refuses v1 unless `failCgroupV1: false`; the cgroupfs driver (no systemd runs here); the node's
  cgroups under a root of their own (`/fishchat-<port base>`) so two nodes never meet.
- no registry can be reached: the sandbox image is our own `pause` (`fishchat.stack.images`),
  imported into containerd with the FishChat images; Pods use `imagePullPolicy: IfNotPresent`.
- the servers Pods talk to listen on loopback: a `socat` forwarder per port answers at the node
  network's machine address (Kafka has a listener there of its own: it advertises its address).
- the node is disposable like the API server's etcd: every start begins with an empty containerd
  and kubelet state, every stop kills what the Pods left and unmounts what the node mounted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from fishchat.stack.base import (
    HOST,
    Component,
    Ports,
    Process,
    StackError,
    apt_install,
    pid_alive,
    port_open,
    run,
    system_binary,
    wait_until,
)
from fishchat.stack.images import PAUSE_IMAGE, build_pause_image
from fishchat.stack.kube import (
    KUBE_PROXY,
    KUBELET,
    NODE_BINARIES,
    SCHEDULER,
    KubeAPIServer,
    ensure_kube_binaries,
)
from fishchat.stack.network import NodeNetwork, ensure_network, network_possible, node_network

NODE_NAME = "fishchat-node"
#: Taint the node registers with: no Pod lands there unless a test lifts it (the e2e tier does).
RESERVED_TAINT = "fishchat.io/reserved"
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "socat")
CNI_BIN_DIR = "/usr/lib/cni"
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
#: Ports inside the node's network namespace (its own, so the usual ones; never on the machine).
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
KUBELET_MEMORY_LIMIT = "384MiB"
KUBE_PROXY_MEMORY_LIMIT = "128MiB"
SCHEDULER_MEMORY_LIMIT = "128MiB"
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class Forward:
    """One port of a stack server that Pods reach at the node network's machine address."""

    name: str
    port: int


def forwards() -> list[Forward]:
    """Every server a Pod may need except Kafka (which listens on the node network itself)."""
    return [
        Forward("kube-apiserver", Ports.of(Ports.KUBE_APISERVER)),
        Forward("redis", Ports.of(Ports.REDIS)),
        Forward("mariadb", Ports.of(Ports.MARIADB)),
        Forward("etcd", Ports.of(Ports.ETCD_CLIENT)),
        Forward("hbase-thrift", Ports.of(Ports.HBASE_THRIFT)),
        Forward("prometheus", Ports.of(Ports.PROMETHEUS)),
    ]


class Node(Component):
    """One Kubernetes node (named `fishchat-node`) joined to the `kube` component's API server."""

    name = "node"
    requires = ("kube",)

    def __init__(self) -> None:
        self.kube = KubeAPIServer()

    # --- layout ------------------------------------------------------------------------------

    @property
    def net(self) -> NodeNetwork:
        return node_network()

    @property
    def cgroup_root(self) -> str:
        return f"/fishchat-{Ports.of(0)}"

    @property
    def containerd_dir(self) -> Path:
        return self.workdir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "run" / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def containerd(self) -> Process:
        return Process(self.name, "containerd", self.workdir)

    @property
    def kubelet(self) -> Process:
        return Process(self.name, "kubelet", self.workdir)

    @property
    def kube_proxy(self) -> Process:
        return Process(self.name, "kube-proxy", self.workdir)

    @property
    def scheduler(self) -> Process:
        return Process(self.name, "kube-scheduler", self.workdir)

    @property
    def scheduler_port(self) -> int:
        return Ports.of(Ports.KUBE_SCHEDULER)

    def forwarder(self, forward: Forward) -> Process:
        return Process(self.name, f"forward-{forward.name}", self.workdir)

    def _processes(self) -> list[Process]:
        processes = [self.scheduler, self.containerd, self.kubelet, self.kube_proxy]
        return [*(self.forwarder(f) for f in forwards()), *processes]

    # --- Component -----------------------------------------------------------------------------

    def install(self) -> None:
        reason = network_possible()
        if reason is not None:
            raise StackError(self.name, reason, self.install_log)
        apt_install(self.name, list(DEBIAN_PACKAGES), self.install_log)
        ensure_kube_binaries(self.name, self.install_log, NODE_BINARIES)
        build_pause_image()

    def start(self) -> None:
        if self.running() and self._node_ready():
            return
        if not self.kube.running():
            raise StackError(
                self.name, "needs the API server: start the `kube` component first", self.install_log
            )
        self.stop()  # a half-started or crashed node: begin from nothing
        net = ensure_network(self.name, self.install_log)
        binaries = ensure_kube_binaries(self.name, self.install_log, NODE_BINARIES)
        self._make_credentials()
        self._start_forwarders(net)
        self._start_containerd(net)
        self.import_images([build_pause_image().archive])
        self._make_cgroup_root()
        # A fresh Node object too: the kubelet registers it again, with the reserving taint.
        self.kube.api("DELETE", f"/api/v1/nodes/{NODE_NAME}")
        self._start_scheduler(binaries[SCHEDULER])
        self.kubelet.start(
            net.in_netns(*self._kubelet_command(binaries[KUBELET], net)),
            env={"GOMEMLIMIT": KUBELET_MEMORY_LIMIT},
        )
        wait_until(self.name, self._node_ready, READY_TIMEOUT, self.kubelet.log, self.kubelet.alive, "Ready")
        self.kube_proxy.start(
            net.in_netns(binaries[KUBE_PROXY], f"--config={self._write_kube_proxy_config(net)}", "--v=1"),
            env={"GOMEMLIMIT": KUBE_PROXY_MEMORY_LIMIT},
        )
        wait_until(
            self.name,
            lambda: _http_ok(f"http://{net.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}/healthz"),
            60,
            self.kube_proxy.log,
            self.kube_proxy.alive,
            "kube-proxy healthy",
        )

    def stop(self) -> None:
        self.scheduler.stop()
        self.kube_proxy.stop()
        self.kubelet.stop()
        self._kill_pods()
        self.containerd.stop()
        for forward in forwards():
            self.forwarder(forward).stop()
        self._unmount_all()
        self._remove_cgroups()
        for state in (self.containerd_dir, self.kubelet_dir, self.workdir / "run", self.workdir / "cni"):
            _remove_tree(state)

    def running(self) -> bool:
        """Every process alive, for the API server that runs now (its CA signed our certificates)."""
        ca = self.kube.pki / "ca.crt"
        kubelet_cert = self.pki / "kubelet.crt"
        current = (
            ca.is_file() and kubelet_cert.is_file() and kubelet_cert.stat().st_mtime >= ca.stat().st_mtime
        )
        return current and self.kube.running() and all(process.alive() for process in self._processes())

    def env(self) -> dict[str, str]:
        """Where Pods reach the stack's servers (the CR's backends) and where the node answers."""
        net = self.net
        return {
            "FISHCHAT_NODE_NAME": NODE_NAME,
            "FISHCHAT_NODE_IP": net.node_ip,
            "FISHCHAT_NODE_HOST_IP": net.host_ip,
            "FISHCHAT_NODE_CONTAINERD": str(self.containerd_socket),
            "FISHCHAT_NODE_KAFKA_BOOTSTRAP": f"{net.host_ip}:{Ports.of(Ports.KAFKA_NODE)}",
            "FISHCHAT_NODE_REDIS": f"{net.host_ip}:{Ports.of(Ports.REDIS)}",
            "FISHCHAT_NODE_MYSQL": f"{net.host_ip}:{Ports.of(Ports.MARIADB)}",
            "FISHCHAT_NODE_ETCD": f"{net.host_ip}:{Ports.of(Ports.ETCD_CLIENT)}",
            "FISHCHAT_NODE_HBASE_THRIFT": f"{net.host_ip}:{Ports.of(Ports.HBASE_THRIFT)}",
            "FISHCHAT_NODE_PROMETHEUS": f"http://{net.host_ip}:{Ports.of(Ports.PROMETHEUS)}",
        }

    def logs(self) -> list[Path]:
        return [*super().logs(), *sorted((self.workdir / "pod-logs").glob("*/*/*.log"))]

    # --- images --------------------------------------------------------------------------------

    def ctr(self, *args: str | Path, timeout: float = 300) -> None:
        run(
            self.name,
            ["ctr", "--address", self.containerd_socket, "--namespace", "k8s.io", *args],
            self.install_log,
            timeout=timeout,
        )

    def import_images(self, archives: list[Path]) -> None:
        """Load OCI archives into containerd's Kubernetes namespace (what the kubelet runs from)."""
        for archive in archives:
            self.ctr("images", "import", "--no-unpack=false", archive, timeout=600)

    # --- credentials and configuration ---------------------------------------------------------

    def _make_credentials(self) -> None:
        """Client certificates of the kubelet (Node authorizer: system:node:<name> in system:nodes)
        and of kube-proxy (bound to system:node-proxier by the default RBAC policy)."""
        kube_pki = self.kube.pki
        for name, subject in [
            ("kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}"),
            ("kube-proxy", "/CN=system:kube-proxy"),
            ("kube-scheduler", "/CN=system:kube-scheduler"),
        ]:
            crt = self.pki / f"{name}.crt"
            if not crt.is_file() or crt.stat().st_mtime < (kube_pki / "ca.crt").stat().st_mtime:
                self.kube.sign(name, subject, "client", out_dir=self.pki)
            self._write_kubeconfig(name)

    def _write_kubeconfig(self, name: str) -> Path:
        net = self.net
        path = self.pki / f"{name}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fishchat-stack",
                    "cluster": {
                        "server": f"https://{net.host_ip}:{Ports.of(Ports.KUBE_APISERVER)}",
                        "certificate-authority": str(self.kube.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": name,
                    "user": {
                        "client-certificate": str(self.pki / f"{name}.crt"),
                        "client-key": str(self.pki / f"{name}.key"),
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": "fishchat-stack", "user": name}}],
            "current-context": name,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def _containerd_config(self, net: NodeNetwork) -> Path:
        root = self.containerd_dir
        cni_conf = self.workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-fishchat.conflist").write_text(json.dumps(self._cni_config(net), indent=2) + "\n")
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        text = f"""\
# Generated by fishchat.stack.node; rewritten on every start.
version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{self.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Pod network namespaces under our state, not /run/netns, which other nodes share.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  # No CAP_SYS_RESOURCE here: an oom_score_adj below containerd's own (the sandbox's -998, a
  # Guaranteed Pod's -997) is refused by the kernel, so clamp it instead of failing every Pod.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  stream_server_address = "127.0.0.1"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
"""
        path = root / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _cni_config(self, net: NodeNetwork) -> dict[str, object]:
        return {
            "cniVersion": "1.0.0",
            "name": "fishchat",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "fcbr0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.pod_cidr, "gateway": net.pod_gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _kubelet_command(self, binary: Path, net: NodeNetwork) -> list[str | Path]:
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        socket = f"unix://{self.containerd_socket}"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine mounts cgroup v1; the kubelet refuses it since 1.35 unless told otherwise.
            "failCgroupV1": False,
            # Without CAP_SYS_RESOURCE the kubelet cannot lower its own OOM score; do not try.
            "oomScoreAdj": 0,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": socket,
            "imageServiceEndpoint": socket,
            "address": net.node_ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": net.node_ip,
            "healthzPort": KUBELET_HEALTHZ_PORT,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.kube.pki / "ca.crt")},
            },
            # Only holders of a certificate from the stack's CA get past authentication.
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.workdir / "pod-logs"),
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "hairpinMode": "hairpin-veth",
            "failSwapOn": False,
            "protectKernelDefaults": False,
            "serializeImagePulls": False,
            "rotateCertificates": False,
            # A test node on a shared disk: evict only when truly out of room, never collect our
            # imported images (nothing could pull them back).
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # Reserved for the e2e tier: other tests play the kubelet for their Pods (pods/status),
            # which a real kubelet would overwrite. The e2e session lifts the taint while it runs.
            "registerWithTaints": [{"key": RESERVED_TAINT, "value": "e2e", "effect": "NoSchedule"}],
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        path = self.kubelet_dir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return [
            binary,
            f"--config={path}",
            f"--kubeconfig={self.pki / 'kubelet.kubeconfig'}",
            f"--root-dir={self.kubelet_dir / 'root'}",
            f"--cert-dir={self.kubelet_dir / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={net.node_ip}",
            "--v=1",
        ]

    def _write_kube_proxy_config(self, net: NodeNetwork) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.pki / "kube-proxy.kubeconfig")},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": net.pod_cidr,
            "healthzBindAddress": f"{net.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}",
            "metricsBindAddress": f"{net.node_ip}:{KUBE_PROXY_METRICS_PORT}",
            # Leave the kernel's conntrack table settings alone: they are the machine's, not ours.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # --- processes -------------------------------------------------------------------------------

    def _start_forwarders(self, net: NodeNetwork) -> None:
        socat = system_binary(self.name, "socat", self.install_log)
        for forward in forwards():
            process = self.forwarder(forward)
            if process.alive():
                continue
            if port_open(forward.port, host=net.host_ip):
                raise StackError(self.name, f"{net.host_ip}:{forward.port} is taken by another process")
            process.start(
                [
                    socat,
                    f"TCP-LISTEN:{forward.port},bind={net.host_ip},fork,reuseaddr,backlog=256",
                    f"TCP:{HOST}:{forward.port}",
                ]
            )
        wait_until(
            self.name,
            lambda: all(port_open(f.port, host=net.host_ip) for f in forwards()),
            20,
            self.install_log,
            what="forwarding",
        )

    def _start_scheduler(self, binary: Path) -> None:
        """The scheduler runs on the machine beside the API server (it only talks to it)."""
        kubeconfig = self.pki / "kube-scheduler.kubeconfig"
        self.scheduler.start(
            [
                binary,
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--authentication-skip-lookup=true",
                f"--client-ca-file={self.kube.pki / 'ca.crt'}",
                f"--bind-address={HOST}",
                f"--secure-port={self.scheduler_port}",
                f"--cert-dir={self.workdir / 'scheduler-pki'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
            env={"GOMEMLIMIT": SCHEDULER_MEMORY_LIMIT},
        )
        wait_until(
            self.name,
            lambda: _https_ok(f"https://{HOST}:{self.scheduler_port}/healthz"),
            60,
            self.scheduler.log,
            self.scheduler.alive,
            "kube-scheduler healthy",
        )

    def _start_containerd(self, net: NodeNetwork) -> None:
        config = self._containerd_config(net)
        self.containerd_socket.parent.mkdir(parents=True, exist_ok=True)
        self.containerd.start(
            net.in_netns(system_binary(self.name, "containerd", self.install_log), "--config", config)
        )
        wait_until(
            self.name,
            lambda: (
                subprocess.run(
                    ["ctr", "--address", str(self.containerd_socket), "version"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                ).returncode
                == 0
            ),
            60,
            self.containerd.log,
            self.containerd.alive,
            "containerd answering",
        )

    def _make_cgroup_root(self) -> None:
        """The node's cgroup parent in every v1 hierarchy (cpuset needs its cpus and mems copied)."""
        for hierarchy in _v1_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / knob).read_text().strip():
                        (path / knob).write_text((hierarchy / knob).read_text())

    def _node_ready(self) -> bool:
        node = self.kube.get_json(f"/api/v1/nodes/{NODE_NAME}")
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # --- clean-up ----------------------------------------------------------------------------------

    def _kill_pods(self) -> None:
        """SIGKILL every process in the node's cgroups (the containers), then containerd's shims."""
        for _ in range(3):
            pids = _cgroup_pids(self.cgroup_root)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        marker = str(self.containerd_socket)
        for pid in _pids_with_argument(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _unmount_all(self) -> None:
        """Detach whatever containerd and the kubelet mounted under the node's folder."""
        prefix = str(self.workdir) + "/"
        for _ in range(5):
            mounted = [m for m in _mount_points() if m.startswith(prefix)]
            if not mounted:
                return
            for mount_point in sorted(mounted, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        still = [m for m in _mount_points() if m.startswith(prefix)]
        if still:
            raise StackError(self.name, f"cannot unmount {still[0]} (and {len(still) - 1} more)")

    def _remove_cgroups(self) -> None:
        for hierarchy in _v1_hierarchies():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if not top.is_dir():
                continue
            for path in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _v1_hierarchies() -> list[Path]:
    """Every mounted cgroup v1 hierarchy (the kubelet wants its root in each, systemd's name= one too)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "cgroup":
            found.append(Path(fields[1]))
    return found


def _cgroup_pids(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _v1_hierarchies():
        top = hierarchy / cgroup_root.lstrip("/")
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(line) for line in procs.read_text().split())
    return {pid for pid in pids if pid_alive(pid)}


def _pids_with_argument(argument: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if argument in proc.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0"):
                    found.append(int(proc.name))
    return found


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(fields[4].replace("\\040", " "))
    return points


def _remove_tree(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True, check=False)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return 200 <= int(response.status) < 300


def _https_ok(url: str) -> bool:
    """A health endpoint served with a self-signed certificate (nothing secret is read)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=2.0, context=context) as response:
        return 200 <= int(response.status) < 300
