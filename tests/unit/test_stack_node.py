"""The stack's node: addresses from the port base, reserved ports, and the configuration it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fishchat.stack import base
from fishchat.stack.network import node_network
from fishchat.stack.node import NODE_NAME, RESERVED_TAINT, Node


def test_node_network_follows_the_port_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FISHCHAT_STACK_PORT_BASE", "41000")
    net = node_network()
    assert (net.netns, net.host_if, net.node_if) == ("fishchat-41000", "fc41000h", "fc41000n")
    assert (net.host_ip, net.node_ip, net.pod_cidr) == ("172.30.41.1", "172.30.41.2", "10.244.41.0/24")
    assert len(net.host_if) <= 15  # IFNAMSIZ
    assert net.in_netns("ip", "addr")[:2] == ["nsenter", "--net=/run/netns/fishchat-41000"]


def test_stack_ports_are_reserved_once_beside_others(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reserved = tmp_path / "ip_local_reserved_ports"
    reserved.write_text("8080,41000-41999\n")
    monkeypatch.setattr(base, "RESERVED_PORTS", reserved)
    monkeypatch.setenv("FISHCHAT_STACK_PORT_BASE", "39000")
    assert base.reserve_stack_ports()
    assert reserved.read_text() == "8080,41000-41999,39000-39999"
    assert base.reserve_stack_ports()  # already covered: unchanged
    assert reserved.read_text() == "8080,41000-41999,39000-39999"
    monkeypatch.setattr(base, "RESERVED_PORTS", tmp_path / "missing" / "file")
    assert not base.reserve_stack_ports()


def test_kubelet_configuration_fits_this_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FISHCHAT_STACK_DIR", str(tmp_path))
    monkeypatch.setenv("FISHCHAT_STACK_PORT_BASE", "39000")
    node = Node()
    command = node._kubelet_command(Path("/bin/kubelet"), node.net)
    assert f"--hostname-override={NODE_NAME}" in command and "--node-ip=172.30.39.2" in command
    config = yaml.safe_load((node.kubelet_dir / "config.yaml").read_text())
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/fishchat-39000"
    assert config["registerWithTaints"] == [{"key": RESERVED_TAINT, "value": "e2e", "effect": "NoSchedule"}]
    assert config["authentication"]["anonymous"]["enabled"] is False
    containerd = node._containerd_config(node.net).read_text()
    assert "restrict_oom_score_adj = true" in containerd and "SystemdCgroup = false" in containerd
    cni = json.loads((tmp_path / "node" / "cni" / "net.d" / "10-fishchat.conflist").read_text())
    ranges = cni["plugins"][0]["ipam"]["ranges"]
    assert ranges == [[{"subnet": "10.244.39.0/24", "gateway": "10.244.39.1"}]]
