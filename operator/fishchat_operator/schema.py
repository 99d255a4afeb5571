"""One description of each API type, read three ways: parse, serialise and OpenAPI schema.

The CRD's structural schema, the defaults the API server fills in, and the operator's own parsing
must agree, or the operator would render something other than what `kubectl explain` promises. So
the frozen dataclasses in `model.py` and `status.py` are the single source: their field metadata
(description, bounds, pattern, immutability) and default values produce the CRD schema (`crd.py`),
and the same metadata drives `parse`, which applies the same defaults and checks the same bounds.

Defaults are taken from a *default instance* rather than from the class, so one type can carry
different defaults in different places (the gateway and access `RoleSpec` default to different
replica counts); the schema emitted for that place carries exactly those defaults.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

T = TypeVar("T")

_NOT_SET: Any = dataclasses.MISSING


class SpecError(ValueError):
    """A value does not match its type; `path` says where (e.g. `spec.topics.p2p.partitions`)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class CelRule:
    """An `x-kubernetes-validations` entry; `field_path` points the error at the offending field."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def spec_field(
    description: str,
    default: Any = _NOT_SET,
    *,
    default_factory: Any = _NOT_SET,
    key: str | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    pattern: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    item_pattern: str | None = None,
    item_max_length: int | None = None,
    int_or_string: bool = False,
    date_time: bool = False,
    list_map_keys: tuple[str, ...] = (),
    immutable: bool = False,
    rules: tuple[CelRule, ...] = (),
) -> Any:
    """A dataclass field with the metadata the schema, the parser and the CRD generator read."""
    metadata = {
        "description": description,
        "key": key,
        "minimum": minimum,
        "maximum": maximum,
        "pattern": pattern,
        "min_length": min_length,
        "max_length": max_length,
        "min_items": min_items,
        "max_items": max_items,
        "item_pattern": item_pattern,
        "item_max_length": item_max_length,
        "int_or_string": int_or_string,
        "date_time": date_time,
        "list_map_keys": list_map_keys,
        "immutable": immutable,
        "rules": rules,
    }
    if default_factory is not _NOT_SET:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Described:
    """Mixin for API types: optional class-level CEL rules (cross-field checks)."""

    __cel__: ClassVar[tuple[CelRule, ...]] = ()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_key(field: dataclasses.Field[Any]) -> str:
    return cast(str | None, field.metadata.get("key")) or camel(field.name)


@dataclass(frozen=True)
class _Shape:
    """A resolved field type: the base type, whether None is allowed, and the item type of tuples."""

    base: Any
    optional: bool
    item: Any = None


def _shape(hint: Any) -> _Shape:
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        optional = True
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin is tuple:
        items = typing.get_args(hint)
        if len(items) != 2 or items[1] is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, not {hint!r}")
        return _Shape(tuple, optional, items[0])
    return _Shape(hint, optional)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cast(Any, cls))


def _field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _NOT_SET


# --- parse -----------------------------------------------------------------------------------------


def parse(cls: type[T], data: Any, path: str, default: T | None = None) -> T:
    """Build `cls` from a JSON-like mapping, applying defaults (from `default` when given) and checks."""
    if not isinstance(data, Mapping):
        raise SpecError(path, f"must be an object, not {_kind(data)}")
    known = {json_key(f): f for f in _fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SpecError(path, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for key, field in known.items():
        where = f"{path}.{key}"
        fallback = getattr(default, field.name) if default is not None else _field_default(field)
        if key not in data or data[key] is None:
            if fallback is _NOT_SET:
                raise SpecError(where, "is required")
            values[field.name] = fallback
            continue
        values[field.name] = _convert(
            _shape(hints[field.name]),
            data[key],
            where,
            field.metadata,
            None if fallback is _NOT_SET else fallback,
        )
    return cls(**values)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), type(value).__name__
    )


def _convert(shape: _Shape, value: Any, path: str, meta: Mapping[str, Any], fallback: Any) -> Any:
    base = shape.base
    if base is tuple:
        if not isinstance(value, list | tuple):
            raise SpecError(path, f"must be a list, not {_kind(value)}")
        _check_count(value, path, meta)
        item_shape = _Shape(shape.item, False)
        item_meta = _item_meta(meta)
        return tuple(_convert(item_shape, v, f"{path}[{i}]", item_meta, None) for i, v in enumerate(value))
    if dataclasses.is_dataclass(base):
        return parse(cast(type, base), value, path, fallback if dataclasses.is_dataclass(fallback) else None)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        allowed = [m.value for m in base]
        if value not in allowed:
            raise SpecError(path, f"must be one of {', '.join(map(str, allowed))}, not {value!r}")
        return base(value)
    if base is bool:
        if not isinstance(value, bool):
            raise SpecError(path, f"must be a boolean, not {_kind(value)}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"must be an integer, not {_kind(value)}")
        _check_range(value, path, meta)
        return value
    if base is str:
        if meta.get("int_or_string") and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise SpecError(path, f"must be a string, not {_kind(value)}")
        _check_string(value, path, meta)
        return value
    if base is Any:
        return value
    raise TypeError(f"unsupported field type {base!r} at {path}")


def _item_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"pattern": meta.get("item_pattern"), "max_length": meta.get("item_max_length")}


def _check_range(value: int, path: str, meta: Mapping[str, Any]) -> None:
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None and value < low:
        raise SpecError(path, f"must be at least {low}, not {value}")
    if high is not None and value > high:
        raise SpecError(path, f"must be at most {high}, not {value}")


def _check_string(value: str, path: str, meta: Mapping[str, Any]) -> None:
    low, high, pattern = meta.get("min_length"), meta.get("max_length"), meta.get("pattern")
    if low is not None and len(value) < low:
        raise SpecError(path, f"must be at least {low} characters long")
    if high is not None and len(value) > high:
        raise SpecError(path, f"must be at most {high} characters long")
    if pattern is not None and not re.search(pattern, value):
        raise SpecError(path, f"{value!r} does not match {pattern}")


def _check_count(value: list[Any] | tuple[Any, ...], path: str, meta: Mapping[str, Any]) -> None:
    low, high = meta.get("min_items"), meta.get("max_items")
    if low is not None and len(value) < low:
        raise SpecError(path, f"must have at least {low} item(s)")
    if high is not None and len(value) > high:
        raise SpecError(path, f"must have at most {high} items")


# --- serialise -------------------------------------------------------------------------------------


def to_mapping(obj: Any) -> Any:
    """JSON-like form of an API value: camelCase keys, enums as values, tuples as lists, no Nones."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for field in _fields(type(obj)):
            value = getattr(obj, field.name)
            if value is not None:
                out[json_key(field)] = to_mapping(value)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


# --- OpenAPI (structural schema) -------------------------------------------------------------------


def openapi(cls: type, default: Any = None, path: str = "") -> dict[str, Any]:
    """The structural schema of `cls`; property defaults come from `default` (or the class defaults)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    hints = _hints(cls)
    for field in _fields(cls):
        key = json_key(field)
        where = f"{path}.{key}" if path else key
        description = field.metadata.get("description")
        if not description:
            raise TypeError(f"{cls.__name__}.{field.name} has no description")
        fallback = getattr(default, field.name) if default is not None else _field_default(field)
        shape = _shape(hints[field.name])
        prop = _property(shape, field.metadata, fallback, where)
        prop = {"description": description, **prop}
        properties[key] = prop
        if fallback is _NOT_SET:
            required.append(key)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    rules = [r.to_openapi() for r in getattr(cls, "__cel__", ())]
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def _property(shape: _Shape, meta: Mapping[str, Any], fallback: Any, path: str) -> dict[str, Any]:
    base = shape.base
    prop: dict[str, Any]
    if base is tuple:
        item = shape.item
        if dataclasses.is_dataclass(item):
            items = openapi(cast(type, item), None, f"{path}[]")
        else:
            items = _scalar(item, _item_meta(meta))
        prop = {"type": "array", "items": items}
        if meta.get("list_map_keys"):
            prop["x-kubernetes-list-type"] = "map"
            prop["x-kubernetes-list-map-keys"] = list(meta["list_map_keys"])
        if meta.get("min_items") is not None:
            prop["minItems"] = meta["min_items"]
        if meta.get("max_items") is not None:
            prop["maxItems"] = meta["max_items"]
        if fallback is not _NOT_SET and fallback is not None:
            prop["default"] = to_mapping(fallback)
    elif dataclasses.is_dataclass(base):
        prop = openapi(cast(type, base), fallback if dataclasses.is_dataclass(fallback) else None, path)
        # The whole default object, not `{}`: the API server checks a default against the CEL rules
        # as written, before nested defaults apply. Only possible when nothing inside is required.
        if dataclasses.is_dataclass(fallback) and "required" not in prop:
            prop["default"] = to_mapping(fallback)
    else:
        prop = _scalar(base, meta)
        if fallback is not _NOT_SET and fallback is not None:
            prop["default"] = to_mapping(fallback)
    rules = [r.to_openapi() for r in meta.get("rules", ())]
    if meta.get("immutable"):
        rules.insert(0, {"rule": "self == oldSelf", "message": f"{path} is immutable once set"})
    if rules:
        prop["x-kubernetes-validations"] = rules
    return prop


def _scalar(base: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    prop: dict[str, Any]
    if isinstance(base, type) and issubclass(base, enum.Enum):
        prop = {"type": "string", "enum": [m.value for m in base]}
    elif base is bool:
        prop = {"type": "boolean"}
    elif base is int:
        prop = {"type": "integer"}
        if meta.get("minimum") is not None:
            prop["minimum"] = meta["minimum"]
        if meta.get("maximum") is not None:
            prop["maximum"] = meta["maximum"]
    elif base is str and meta.get("int_or_string"):
        prop = {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
        }
        if meta.get("pattern") is not None:
            prop["pattern"] = meta["pattern"]
    elif base is str:
        prop = {"type": "string"}
        if meta.get("min_length") is not None:
            prop["minLength"] = meta["min_length"]
        if meta.get("max_length") is not None:
            prop["maxLength"] = meta["max_length"]
        if meta.get("pattern") is not None:
            prop["pattern"] = meta["pattern"]
        if meta.get("date_time"):
            prop["format"] = "date-time"
    else:
        raise TypeError(f"unsupported scalar type {base!r}")
    return prop
