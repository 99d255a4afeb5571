"""Config loading: defaults, TOML, environment overrides, and clear errors for bad values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fishchat.config import ConfigError, check_port, load_config


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 11000

    def __post_init__(self) -> None:
        check_port(self.port, "port")


@dataclass(frozen=True)
class Sample:
    access: Listen = field(default_factory=Listen)
    data_dir: Path = Path(".data")
    ratio: float = 0.5
    legacy: bool = False
    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    name: str | None = None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.toml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    config = load_config(Sample, env={})
    assert config == Sample()


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "~/x"\nratio = 1\n[access]\nport = 11001\nhost = "0.0.0.0"\n')
    env = {"FISHCHAT_ACCESS_PORT": "11002", "FISHCHAT_LEGACY": "yes", "FISHCHAT_ENDPOINTS": "a:1, b:2"}
    config = load_config(Sample, path, env=env, overrides={"name": "n1", "access.host": None})
    assert config.access == Listen("0.0.0.0", 11002)
    flagged = load_config(Sample, path, env=env, overrides={"access.port": 11003})
    assert flagged.access.port == 11003  # a command-line flag beats the environment
    assert config.data_dir == Path("~/x").expanduser()
    assert config.ratio == 1.0
    assert config.legacy is True
    assert config.endpoints == ["a:1", "b:2"]
    assert config.name == "n1"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[access]\nprot = 1\n", {}, "unknown setting(s) prot in access"),
        ("[access]\nport = 'x'\n", {}, "access.port in"),
        ("[access]\nport = true\n", {}, "must be of type int"),
        ("[access]\nport = 70000\n", {}, "between 0 and 65535"),
        ("access = 3\n", {}, "must be a table"),
        ("", {"FISHCHAT_ACCESS_PORT": "eleven"}, "FISHCHAT_ACCESS_PORT='eleven' is not a valid int"),
        ("", {"FISHCHAT_LEGACY": "maybe"}, "is not a boolean"),
        ("not toml [", {}, "is not valid TOML"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Sample, write(tmp_path, text), env=env)
    assert message in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Sample, tmp_path / "absent.toml", env={})
