"""`fishchat serve` settings: defaults per role, file and environment, and refusals that name the cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from fishchat.config import ConfigError
from fishchat.serve.config import DEFAULT_LISTEN, ROLES, load_serve_config


def test_every_role_has_defaults_and_a_metrics_port_of_its_own() -> None:
    assert set(DEFAULT_LISTEN) == set(ROLES)
    metrics = [DEFAULT_LISTEN[role]["metrics"] for role in ROLES]
    assert len(set(metrics)) == len(ROLES)
    config = load_serve_config("logic", None, {})
    assert (config.role, config.listen("logic", "grpc")) == ("logic", "127.0.0.1:21000")


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "access.toml"
    path.write_text(
        'role = "access"\n[server]\nclient_listen = "0.0.0.0:0"\ninstance = "access-7"\n'
        '[etcd]\nendpoints = "10.0.0.1:2379"\n'
    )
    env = {"FISHCHAT_SERVER_ADVERTISE_HOST": "10.1.2.3", "FISHCHAT_ACCESS_PING_INTERVAL_S": "5"}
    config = load_serve_config("access", path, env)
    assert config.listen("access", "client") == "0.0.0.0:0"
    assert config.listen("access", "grpc") == DEFAULT_LISTEN["access"]["grpc"]
    assert config.instance_id("access") == "access-7"
    assert config.advertise("0.0.0.0") == "10.1.2.3"
    assert config.etcd.endpoints == "10.0.0.1:2379"
    assert config.access.ping_interval_s == 5


def test_advertised_host_defaults_to_a_reachable_one() -> None:
    config = load_serve_config("notify", None, {})
    assert config.advertise("0.0.0.0") == "127.0.0.1"
    assert config.advertise("10.0.0.9") == "10.0.0.9"
    assert config.instance_id("notify").startswith("notify-")


@pytest.mark.parametrize(
    ("role", "text", "message"),
    [
        ("logic", 'role = "access"\n', "for role 'access', not 'logic'"),
        ("logic", '[server]\ngrpc_listen = "nowhere"\n', "server.grpc_listen"),
        ("logic", "[server]\nunknown = 1\n", "unknown"),
        ("logic", "[server]\ndrain_timeout_seconds = 0\n", "drain_timeout_seconds"),
        ("chat", "", "unknown role 'chat'"),
    ],
)
def test_bad_settings_are_refused_with_their_name(tmp_path: Path, role: str, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_serve_config(role, path, {})
