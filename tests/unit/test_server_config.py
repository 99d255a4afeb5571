"""`fishchat up` settings: defaults, file, environment and flags in that order, and the range checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from fishchat.config import ConfigError
from fishchat.protocol.frames import MAX_MSG_ID_BYTES
from fishchat.server.config import UpConfig, field_limits, load_up_config


def test_defaults_are_the_original_ports_on_loopback() -> None:
    config = load_up_config(env={})
    assert (config.gateway.port, config.access.port, config.http.port, config.admin.port) == (
        10000,
        11000,
        6001,
        6003,
    )
    assert config.host == "127.0.0.1" and config.data_dir == Path(".data")
    assert config.access.idle_timeout_s == 30.0  # three missed 10 s pings


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "up.toml"
    path.write_text(
        "[access]\nport = 12000\nping_interval_s = 2\n[http]\nport = 7001\n[chat.scrypt]\nlog2_n = 10\n"
    )
    env = {"FISHCHAT_ACCESS_PORT": "13000", "FISHCHAT_DATA_DIR": str(tmp_path / "env-data")}
    config = load_up_config(path, env, {"access.port": 0, "http.port": None})
    assert config.access.port == 0  # the flag beats the variable
    assert config.http.port == 7001  # no flag given: the file's value
    assert config.access.idle_timeout_s == 6.0
    assert config.chat.scrypt.log2_n == 10
    assert config.data_dir == tmp_path / "env-data"
    assert load_up_config(path, env).access.port == 13000  # the variable beats the file


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"FISHCHAT_ACCESS_PORT": "70000"}, "access.port"),
        ({"FISHCHAT_ACCESS_PING_INTERVAL_S": "0"}, "ping_interval_s"),
        ({"FISHCHAT_ACCESS_MAX_FRAME_BYTES": "70000"}, "max_frame_bytes"),
        ({"FISHCHAT_LOG_LEVEL": "loud"}, "log_level"),
        ({"FISHCHAT_GATEWAY_PORT": "ten"}, "FISHCHAT_GATEWAY_PORT"),
        ({"FISHCHAT_CHAT_BODY_MAX_BYTES": "70000"}, "sync_byte_budget"),
    ],
)
def test_bad_settings_are_refused_by_name(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_up_config(env=env)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "up.toml"
    path.write_text("[access]\nping_intervall_s = 3\n")
    with pytest.raises(ConfigError, match="ping_intervall_s"):
        load_up_config(path, {})


def test_frame_limits_follow_the_domain_limits() -> None:
    config = UpConfig()
    limits = field_limits(config.access, config.chat)
    assert limits.max_msg_bytes == config.chat.body_max_bytes  # 32 KiB: below the frame's 64000
    assert limits.max_msg_id_bytes == min(config.chat.msg_id_max_bytes, MAX_MSG_ID_BYTES)
    assert limits.require_msg_id
    legacy = load_up_config(env={"FISHCHAT_ACCESS_REQUIRE_MSG_ID": "false"})
    assert not field_limits(legacy.access, legacy.chat).require_msg_id
