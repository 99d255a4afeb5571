"""The network between this machine and the stack's Kubernetes node.

The node (containerd, kubelet, kube-proxy and every Pod) lives in a network namespace of its own,
joined to the machine by one veth pair. Its iptables rules, its Pod bridge and its ports (kubelet,
NodePorts) stay inside, so two checkouts can each run a node on one machine (their port bases tell
their addresses apart) and nothing of the node leaks into the machine's own network.

Pods reach the machine at `host_ip`, where the servers Pods talk to answer: Kafka on a listener of
its own (it advertises its address, so it must listen there itself), the others through a
forwarder the node runs (`fishchat.stack.node`). The machine reaches the node at `node_ip`
(NodePorts, the kubelet) and its Pods through a route to `pod_cidr`.

Addresses come from the port base: base 39000 gives 172.30.39.1 (machine), 172.30.39.2 (node) and
Pods in 10.244.39.0/24.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from fishchat.stack.base import StackError, port_base, run

_lock = threading.Lock()


@dataclass(frozen=True)
class NodeNetwork:
    """Names and addresses of one stack's node network (see the module docstring)."""

    octet: int

    @property
    def netns(self) -> str:
        return f"fishchat-{port_base()}"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def host_if(self) -> str:
        return f"fc{port_base()}h"[:15]

    @property
    def node_if(self) -> str:
        return f"fc{port_base()}n"[:15]

    @property
    def host_ip(self) -> str:
        return f"172.30.{self.octet}.1"

    @property
    def node_ip(self) -> str:
        return f"172.30.{self.octet}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.octet}.0/24"

    @property
    def pod_gateway(self) -> str:
        return f"10.244.{self.octet}.1"

    def in_netns(self, *cmd: str | Path) -> list[str]:
        """`cmd` run inside the node's network namespace only (same mount namespace as the machine,
        which containerd and the kubelet need to share: `ip netns exec` would give each its own)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *map(str, cmd)]


def node_network() -> NodeNetwork:
    return NodeNetwork(octet=(port_base() // 1000) % 256)


def network_ready(net: NodeNetwork) -> bool:
    """Whether the veth pair is up with the machine's address on it (no privileges needed)."""
    try:
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "dev", net.host_if],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and f" {net.host_ip}/" in out.stdout


def network_possible() -> str | None:
    """None when this machine can make the node network; otherwise why not."""
    if os.geteuid() != 0:
        return "the node network needs root (network namespaces, veth, routes)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian packages iproute2, util-linux)"
    return None


def ensure_network(component: str, log: Path) -> NodeNetwork:
    """Make the namespace, the veth pair, the addresses and the routes; idempotent."""
    net = node_network()
    with _lock:
        if network_ready(net) and net.netns_path.exists():
            return net
        reason = network_possible()
        if reason is not None:
            raise StackError(component, reason, log)
        if not net.netns_path.exists():
            run(component, ["ip", "netns", "add", net.netns], log, timeout=30)
        if subprocess.run(["ip", "link", "show", net.host_if], capture_output=True, check=False).returncode:
            run(
                component,
                [
                    "ip",
                    "link",
                    "add",
                    net.host_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    net.node_if,
                    "netns",
                    net.netns,
                ],
                log,
                timeout=30,
            )
        steps: list[list[str]] = [
            ["ip", "addr", "replace", f"{net.host_ip}/30", "dev", net.host_if],
            ["ip", "link", "set", net.host_if, "up"],
            ["ip", "-n", net.netns, "link", "set", "lo", "up"],
            ["ip", "-n", net.netns, "addr", "replace", f"{net.node_ip}/30", "dev", net.node_if],
            ["ip", "-n", net.netns, "link", "set", net.node_if, "up"],
            ["ip", "-n", net.netns, "route", "replace", "default", "via", net.host_ip],
            # The machine reaches Pods directly (Prometheus scrapes them, tests may dial them).
            ["ip", "route", "replace", net.pod_cidr, "via", net.node_ip],
            # Inside the node: forward between the Pod bridge and the veth, and let Service traffic
            # between Pods on one bridge pass iptables (kube-proxy's rules).
            net.in_netns(
                "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"
            ),
        ]
        for step in steps:
            run(component, step, log, timeout=30)
    return net


def remove_network(component: str, log: Path) -> None:
    """Delete the namespace (and with it the veth pair and everything of the node's network)."""
    net = node_network()
    with _lock:
        if net.netns_path.exists():
            run(component, ["ip", "netns", "delete", net.netns], log, timeout=30)
        subprocess.run(["ip", "link", "delete", net.host_if], capture_output=True, check=False)
