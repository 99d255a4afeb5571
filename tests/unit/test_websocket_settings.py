"""The WebSocket listener's settings and origin policy (no sockets: the e2e tests drive real ones)."""

from __future__ import annotations

import pytest

from fishchat.config import ConfigError
from fishchat.server.config import AccessConfig, load_up_config
from fishchat.server.websocket import OriginPolicy

pytestmark = pytest.mark.unit


def test_default_origin_policy_allows_pages_of_the_same_host_only() -> None:
    policy = OriginPolicy()
    assert policy.refusal(None, "chat.example.com:11001") is None  # no Origin: not a browser page
    assert policy.refusal("https://chat.example.com", "chat.example.com:11001") is None
    assert policy.refusal("http://127.0.0.1:6001", "127.0.0.1:11001") is None
    refusal = policy.refusal("https://evil.example", "chat.example.com:11001")
    assert refusal is not None and "evil.example" in refusal
    assert policy.refusal("https://chat.example.com", None) is not None
    assert policy.refusal("null", "chat.example.com") is not None  # a sandboxed or file:// page


def test_listed_origins_and_any() -> None:
    listed = OriginPolicy(("https://app.example.com", "http://localhost:3000/"))
    assert listed.refusal("https://APP.example.com", "ws.example.com") is None
    assert listed.refusal("http://localhost:3000", "ws.example.com") is None
    assert listed.refusal("https://ws.example.com", "ws.example.com") is not None  # not listed
    assert OriginPolicy(("*",)).refusal("https://anything.example", "ws.example.com") is None


def test_websocket_port_follows_the_client_port() -> None:
    assert AccessConfig(port=11000).websocket_port == 11001
    assert AccessConfig(port=0).websocket_port == 0
    assert AccessConfig(port=11000, ws_port=8080).websocket_port == 8080
    assert AccessConfig(ws_enabled=False).websocket_port is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("FISHCHAT_ACCESS_WS_PORT", "70000", "access.ws_port"),
        ("FISHCHAT_ACCESS_WS_ORIGINS", '["chat.example.com"]', "access.ws_origins"),
        ("FISHCHAT_ACCESS_WS_PUBLIC_URL", "http://chat.example.com/ws", "access.ws_public_url"),
        ("FISHCHAT_ACCESS_PORT", "65535", "access.ws_port"),
    ],
)
def test_bad_websocket_settings_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_up_config(None, {key: value})


def test_websocket_settings_load() -> None:
    config = load_up_config(
        None,
        {
            "FISHCHAT_ACCESS_WS_ORIGINS": "https://chat.example.com, *",
            "FISHCHAT_ACCESS_WS_PUBLIC_URL": "wss://chat.example.com/ws",
        },
    )
    assert config.access.ws_origins == ("https://chat.example.com", "*")
    assert config.access.ws_public_url == "wss://chat.example.com/ws"
