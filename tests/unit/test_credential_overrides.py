"""Credentials from the environment: `MySQLSettings.user`/`.password` and `RedisSettings.password`.

On Kubernetes the URLs sit in a ConfigMap without credentials and the credentials arrive as
`FISHCHAT_MYSQL_USER`, `FISHCHAT_MYSQL_PASSWORD` and `FISHCHAT_REDIS_PASSWORD` from Secrets. These
settings replace the URL's own values when set, leave URLs with credentials working as before, and
never show a password in a `repr` (which is what logs and tracebacks print).
"""

from __future__ import annotations

import pytest

from fishchat.config import ConfigError, load_config
from fishchat.production.backend import ProductionSettings
from fishchat.production.mysql import MySQLSettings, parse_mysql_url
from fishchat.production.redis import RedisSettings, connect_redis


def test_mysql_url_with_credentials_works_as_before() -> None:
    settings = MySQLSettings(url="mysql://app:p%40ss@db:3307/chat")
    target = settings.target()
    assert target == parse_mysql_url(settings.url)
    assert (target.host, target.port, target.user, target.password, target.database) == (
        "db",
        3307,
        "app",
        "p@ss",
        "chat",
    )


def test_mysql_user_and_password_replace_the_urls() -> None:
    settings = MySQLSettings(url="mysql://url_user:url_pw@db/chat", user="env_user", password="env:/@pw")
    target = settings.target()
    assert (target.user, target.password) == ("env_user", "env:/@pw")
    # Only the password: the URL's user stays; an empty password is a password too.
    assert MySQLSettings(url="mysql://url_user:url_pw@db/chat", password="").target().password == ""
    assert MySQLSettings(url="mysql://url_user:url_pw@db/chat", password="x").target().user == "url_user"


def test_mysql_url_without_credentials_needs_a_user() -> None:
    settings = MySQLSettings(url="mysql://db:3306/chat", user="app", password="pw")
    assert settings.target().describe() == "app@db:3306/chat"
    with pytest.raises(ValueError, match="no user"):
        MySQLSettings(url="mysql://db:3306/chat")
    with pytest.raises(ValueError, match="no user"):
        MySQLSettings(url="mysql://db:3306/chat", user="")
    # A bare URL still parses (no user invented); the backend names the server with its settings user.
    assert parse_mysql_url("mysql://db:3306/chat").describe() == "db:3306/chat"
    assert ProductionSettings(mysql=settings).mysql_target() == "app@db:3306/chat"


def test_mysql_credentials_come_from_the_environment() -> None:
    env = {
        "FISHCHAT_URL": "mysql://db:3306/chat",
        "FISHCHAT_USER": "from_secret",
        "FISHCHAT_PASSWORD": "hunter2",
    }
    settings = load_config(MySQLSettings, env=env)
    assert (settings.target().user, settings.target().password) == ("from_secret", "hunter2")
    with pytest.raises(ConfigError, match="no user"):
        load_config(MySQLSettings, env={"FISHCHAT_URL": "mysql://db:3306/chat"})


def test_mysql_repr_shows_no_credentials() -> None:
    settings = MySQLSettings(url="mysql://u:url-secret@db/chat", user="env-user", password="env-secret")
    text = repr(settings) + repr(settings.target())
    for secret in ("url-secret", "env-secret"):
        assert secret not in text
    assert "env-user" not in repr(settings)


def test_redis_password_replaces_the_urls() -> None:
    client = connect_redis(RedisSettings(url="redis://default:url-pw@cache:6380/3", password="env-pw"))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache", 6380, 3)
    assert (kwargs["username"], kwargs["password"]) == ("default", "env-pw")


def test_redis_url_alone_works_as_before() -> None:
    kwargs = connect_redis(
        RedisSettings(url="redis://:url-pw@cache:6380/3")
    ).connection_pool.connection_kwargs
    assert kwargs["password"] == "url-pw"
    plain = connect_redis(RedisSettings(url="redis://cache:6379/0", timeout_s=1.5, max_connections=7))
    assert plain.connection_pool.connection_kwargs.get("password") is None
    assert plain.connection_pool.connection_kwargs["socket_timeout"] == 1.5
    assert plain.connection_pool.max_connections == 7
    # rediss:// still means TLS.
    tls = connect_redis(RedisSettings(url="rediss://cache:6380/0", password="pw"))
    assert tls.connection_pool.connection_class.__name__ == "SSLConnection"


def test_redis_password_comes_from_the_environment_and_stays_out_of_repr() -> None:
    env = {"FISHCHAT_URL": "redis://cache:6379/0", "FISHCHAT_PASSWORD": "pw!"}
    settings = load_config(RedisSettings, env=env)
    assert settings.password == "pw!"
    assert "pw!" not in repr(settings)
