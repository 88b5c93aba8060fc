"""Typed, validated configuration from plain dicts (``params.yaml``).

Every section of ``params.yaml`` is a frozen dataclass. :func:`from_dict` builds one from a
mapping, refusing unknown keys and coercing/validating values by the field's type hint, and
reports every problem with the full key path (``model.heads``) so a user knows what to fix.
Cross-field rules live in each dataclass's ``validate(path)`` method.

:func:`load_yaml` reads a YAML file from someone else safely: size-capped, ``yaml.SafeLoader``
refusing duplicate keys and aliases that expand beyond :data:`MAX_ALIAS_EXPANSION` nodes; errors
are one line. Messages never expand a value (a length-capped ``repr``) and escape control
characters; numbers must be finite.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from bigfive.utils.text import one_line, printable, short_repr
from bigfive.utils.walk import first_past_bounds

T = TypeVar("T")

MAX_YAML_BYTES = 1 << 20  # params.yaml is a few KB
MAX_ALIAS_EXPANSION = 10_000  # nodes that aliases may add (a billion-laughs file adds billions)
MAX_YAML_DEPTH = 64


class ConfigError(ValueError):
    """A bad configuration value; ``key`` is the dotted path in params.yaml."""

    def __init__(self, key: str, reason: str):
        # Keys and reasons may carry text from the file: escaped and length-capped, one line.
        self.key = printable(key, 300)
        self.reason = printable(reason)
        super().__init__(f"{self.key}: {self.reason}")


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
        raise ConfigError(path, "; ".join(errors) or f"invalid value {short_repr(value)}")
    if origin is Literal:
        if not _hashable(value) or value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(path, f"{short_repr(value)} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {short_repr(value)}")
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
            raise ConfigError(path, f"expected true or false, got {short_repr(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {short_repr(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {short_repr(value)}")
        if value != value:  # NaN
            raise ConfigError(path, "NaN is not allowed")
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(path, f"must be a finite number, got {short_repr(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {short_repr(value)}")
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
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(_join(path, str(unknown[0])), f"unknown key (known keys: {known})")
    kwargs = {name: _coerce(value, hints[name], _join(path, name)) for name, value in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# YAML from others


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and aliases expanding past a budget."""

    max_alias_expansion = MAX_ALIAS_EXPANSION
    max_depth = MAX_YAML_DEPTH

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node, self.max_alias_expansion, self.max_depth)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` then an explicit key overriding one of them is fine
                key = self.construct_object(key_node, deep=True)
                if not _hashable(key):
                    continue  # SafeConstructor reports it
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {short_repr(key)} (first on line {seen[key].line + 1}); "
                        "YAML would silently keep the last one", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Any, budget: int, max_depth: int) -> None:
    """Refuse a node graph whose aliases, expanded, add more than ``budget`` nodes (or nest deeper
    than ``max_depth``): what constructing, ``repr`` or ``json.dumps`` of it would walk."""
    if root is None:
        return
    distinct: set[int] = set()
    todo = [root]
    while todo:  # the nodes themselves, each once
        node = todo.pop()
        if id(node) in distinct:
            continue
        distinct.add(id(node))
        todo.extend(_yaml_children(node) or ())
    past = first_past_bounds(root, _yaml_children, len(distinct) + budget, max_depth)
    if past is None:
        return
    bound, node = past
    reason = (f"aliases expand to more than {budget} extra nodes (alias of aliases, or a recursive alias?)"
              if bound == "nodes" else f"nested deeper than {max_depth} levels")
    raise yaml.composer.ComposerError(None, None, reason, node.start_mark)


def _yaml_children(node: Any) -> list[Any] | None:
    """A node's children; None for a scalar or an empty collection (neither nests any deeper)."""
    if isinstance(node, yaml.SequenceNode):
        return list(node.value) or None
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair] or None
    return None


def load_yaml(path: str | Path, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse a YAML file with :class:`StrictLoader`; any problem is a one-line :class:`ConfigError`
    naming the file (never a traceback, never the whole input)."""
    path = Path(path)
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    return parse_yaml(data, str(path), max_bytes)


def parse_yaml(data: bytes | str, source: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """:func:`load_yaml` for text already read (``source`` names it in errors): every params or study
    file a command reads goes through here, so the limits and messages are the same everywhere."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise ConfigError(source, f"larger than {max_bytes >> 10} KB; not a params file")
    try:
        loader = StrictLoader(data)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(source, f"not valid YAML: {_yaml_error_text(err)}") from None
    except RecursionError:
        raise ConfigError(source, "not valid YAML: nested too deeply") from None
    except ValueError as err:  # an integer of more digits than Python converts, and the like
        raise ConfigError(source, f"not valid YAML: {one_line(err, 200)}") from None


def _yaml_error_text(err: yaml.YAMLError) -> str:
    """``<context> <problem> (line L, column C)``: PyYAML's own text spans lines and quotes the input."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        text = " ".join(t for t in (err.context, err.problem) if t) or type(err).__name__
        return one_line(text + where, 500)
    if isinstance(err, yaml.reader.ReaderError):
        return one_line(f"{err.reason} (byte {err.position})", 500)
    return one_line(err, 500)


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


__all__ = ["ConfigError", "from_dict", "to_dict", "flatten", "check", "positive", "fraction", "typing", "load_yaml",
           "parse_yaml", "StrictLoader"]
