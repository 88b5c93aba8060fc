"""Typed, validated configuration from plain dicts (``params.yaml``).

Every section of ``params.yaml`` is a frozen dataclass. :func:`from_dict` builds one from a
mapping, refusing unknown keys and coercing/validating values by the field's type hint, and
reports every problem with the full key path (``model.heads``) so a user knows what to fix.
Cross-field rules live in each dataclass's ``validate(path)`` method.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration value; ``key`` is the dotted path in params.yaml."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as err:
                errors.append(err.reason)
        raise ConfigError(path, "; ".join(errors) or f"invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(path, f"{value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {value!r}")
        if value != value:  # NaN
            raise ConfigError(path, "NaN is not allowed")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    raise ConfigError(path, f"unsupported type {hint!r}")  # pragma: no cover - programming error


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(_join(path, unknown[0]), f"unknown key (known keys: {known})")
    kwargs = {name: _coerce(value, hints[name], _join(path, name)) for name, value in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: plain dicts/lists suitable for YAML or MLflow params."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def check(condition: bool, key: str, reason: str) -> None:
    """Raise ConfigError(key, reason) unless ``condition``."""
    if not condition:
        raise ConfigError(key, reason)


def positive(value: float | int, key: str, *, allow_zero: bool = False) -> None:
    if allow_zero:
        check(value >= 0, key, f"must be >= 0, got {value}")
    else:
        check(value > 0, key, f"must be > 0, got {value}")


def fraction(value: float, key: str) -> None:
    check(0.0 <= value <= 1.0, key, f"must be in [0, 1], got {value}")


__all__ = ["ConfigError", "from_dict", "to_dict", "flatten", "check", "positive", "fraction", "typing"]
