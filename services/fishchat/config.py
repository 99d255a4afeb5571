"""Typed configuration: frozen dataclasses filled from a TOML file, then from environment variables.

Every setting has a default, so no file is needed for `make run`. A TOML table maps to a nested
dataclass (`[access] port = 11000`); the variable `FISHCHAT_ACCESS_PORT=11001` overrides it. Values
are checked against the field's type and a wrong one is an error naming the setting and where it
came from, never a silently ignored typo (unknown keys are refused too).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "FISHCHAT_"

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message names it and its source."""


def load_config(
    cls: type[T],
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build `cls` from defaults, then the TOML file at `path`, then `env`, then `overrides`.

    `overrides` uses dotted names (`{"access.port": 0}`) and is meant for command-line flags.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with Path(path).open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    environment = dict(os.environ if env is None else env)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        # An override beats both the file and the environment: drop the variable, set the value.
        environment.pop(ENV_PREFIX + dotted.replace(".", "_").upper(), None)
        table = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            table = table.setdefault(part, {})
        table[leaf] = value
    return _build(cls, data, environment, source=str(path or "defaults"), prefix=[])


def _build(
    cls: type[T],
    data: Mapping[str, Any],
    env: Mapping[str, str],
    source: str,
    prefix: list[str],
    default: Any = None,
) -> T:
    """`cls` from `data` and `env`; a setting found in neither keeps its value in `default` (the
    enclosing dataclass's default of this section), else the field's own default."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - set(fields)
    if unknown:
        where = ".".join(prefix) or "top level"
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))} in {where} of {source}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        hint = hints[name]
        setting = [*prefix, name]
        if dataclasses.is_dataclass(hint):
            table = data.get(name, {})
            if not isinstance(table, Mapping):
                raise ConfigError(f"{'.'.join(setting)} in {source} must be a table")
            values[name] = _build(
                typing.cast(type, hint), table, env, source, setting, _default_of(field, default)
            )
            continue
        variable = ENV_PREFIX + "_".join(setting).upper()
        if variable in env:
            values[name] = _parse_env(hint, env[variable], variable)
        elif name in data:
            values[name] = _check(hint, data[name], f"{'.'.join(setting)} in {source}")
        elif default is not None:
            values[name] = getattr(default, name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"setting {'.'.join(setting)} is required (or set {variable})")
    try:
        return cls(**values)
    except ValueError as exc:  # a __post_init__ range check
        raise ConfigError(f"{'.'.join(prefix) or cls.__name__}: {exc}") from exc


def _default_of(field: dataclasses.Field[Any], enclosing: Any) -> Any:
    """The default value of a nested section: the enclosing default's, else the field's own."""
    if enclosing is not None:
        return getattr(enclosing, field.name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _parse_env(hint: Any, raw: str, variable: str) -> Any:
    base = _unoptional(hint)
    if base is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{variable}={raw!r} is not a boolean (use true or false)")
    if typing.get_origin(base) in (list, tuple):
        return _check(hint, [item.strip() for item in raw.split(",") if item.strip()], variable)
    if base in (int, float):
        try:
            return base(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not a valid {base.__name__}") from None
    return _check(hint, raw, variable)


def _unoptional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _check(hint: Any, value: Any, where: str) -> Any:
    base = _unoptional(hint)
    if value is None and base is not hint:
        return None
    origin = typing.get_origin(base)
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(base) or (str,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list")
        items = [_check(item_type, item, where) for item in value]
        return tuple(items) if origin is tuple else items
    if base is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where} must be a path string")
        return Path(value).expanduser()
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (isinstance(base, type) and not isinstance(value, base)) or (base is int and isinstance(value, bool)):
        name = getattr(base, "__name__", str(base))
        raise ConfigError(f"{where} must be of type {name}, not {type(value).__name__}")
    return value


def check_port(port: int, name: str) -> None:
    """Range check for a listening port; 0 asks the OS for a free one (tests use that)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"{name} must be a port number between 0 and 65535, not {port}")
