"""Dataclass configs <-> YAML, with dotted command-line overrides (``train.lr=1e-5``).

Each config field is documented by the string literal under it; :func:`describe`
turns those into ``rlxf <command> --help``. Validation lives in each section's ``check``
(`rlxf.config.checked.Checked`), which also runs when a field is set after construction.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlxf.config.suggestions import suggestion

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's fields and types."""


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Build ``cls`` from defaults, then a YAML file, then ``key.sub=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = _read_yaml(Path(path))
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields at the top level")
        values = loaded
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected key=value, e.g. train.lr=1e-5")
        _set_dotted(values, key.strip().split("."), raw)
    return _build(cls, values, where=str(path) if path else "config")


def _read_yaml(path: Path) -> Any:
    """The file's YAML; a syntax error names the file, line and column."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None


def build_config(cls: type[C], values: dict[str, Any]) -> C:
    """``cls`` from nested ``values`` (Python objects, not command-line text), checked as a file's."""
    return _build(cls, values, where="config")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (nothing deep-copied); a callable (a reward function given in
    Python) as ``module:name@hash`` of its code, so an edited function is a changed config."""
    return _plain(config)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if callable(value):
        return callable_reference(value)
    return value


def callable_reference(function: Any) -> str:
    """``module:qualname@hash``: where the callable lives and a hash of the code a call runs, so
    two different functions never look alike and the same one looks alike in every process."""
    name = getattr(function, "__qualname__", type(function).__qualname__)
    module = getattr(function, "__module__", None) or type(function).__module__
    return f"{module}:{name}@{_code_digest(function)}"


def _code_digest(function: Any) -> str:
    """A hash of what decides a callable's results: its bytecode and constants, defaults, closure
    values, bound object and a partial's arguments, never file names, line numbers or memory
    addresses (so it is the same in every process). What it calls by name is not followed."""
    return hashlib.sha256(repr(_behaviour(function)).encode()).hexdigest()[:10]


def _behaviour(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return "..."
    inner = functools.partial(_behaviour, depth=depth + 1)
    if value is None or isinstance(value, (str, bytes, bool, int, float, complex)):
        return value
    if isinstance(value, types.CodeType):
        return ("code", value.co_code, value.co_names, tuple(map(inner, value.co_consts)))
    if isinstance(value, functools.partial):
        keywords = tuple(sorted((k, inner(v)) for k, v in value.keywords.items()))
        return ("partial", inner(value.func), tuple(map(inner, value.args)), keywords)
    if isinstance(value, types.MethodType):
        return ("method", inner(value.__func__), inner(value.__self__))
    if isinstance(value, types.FunctionType):
        cells = tuple(inner(c.cell_contents) if _filled(c) else None for c in value.__closure__ or ())
        return ("function", inner(value.__code__), inner(value.__defaults__), inner(value.__kwdefaults__), cells)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(map(inner, value)))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, tuple(sorted(map(repr, map(inner, value)))))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(k), inner(v)) for k, v in value.items())))
    if isinstance(value, (type, types.ModuleType, types.BuiltinFunctionType)):
        return (
            type(value).__name__,
            getattr(value, "__module__", None),
            getattr(value, "__qualname__", value.__name__),
        )
    state = inner(vars(value)) if hasattr(value, "__dict__") else None
    call = inner(type(value).__call__) if callable(value) else None
    text = repr(value)
    return (type(value).__qualname__, state, call, None if " at 0x" in text else text)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # a cell not yet bound
        return False
    return True


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def _set_dotted(values: dict, keys: list[str], raw: str) -> None:
    for key in keys[:-1]:
        values = values.setdefault(key, {})
        if not isinstance(values, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key!r} is not a section")
    values[keys[-1]] = _RawText(raw)


class _RawText(str):
    """A command-line value, converted by the field's type rather than by YAML rules."""


def _unknown(name: str, cls: type, prefix: str) -> str:
    hint = suggestion(name, cls, prefix)
    return f"unknown field {prefix}{name}: " + (
        hint or f"{prefix or cls.__name__ + ' '}has {[f.name for f in dataclasses.fields(cls)]}"
    )


def _build(cls: type, values: dict, where: str, prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if unknown := sorted(set(values) - set(fields)):
        raise ConfigError(f"{where}: " + "; ".join(_unknown(name, cls, prefix) for name in unknown))
    kwargs = {}
    for name, value in values.items():
        default = _default_of(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _merge(dataclasses.asdict(default), value)  # a section keeps its recipe-specific defaults
        field_where = f"{where}.{name}" if where != "config" else name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value, field_where, f"{prefix}{name}.")
        else:
            kwargs[name] = _convert(hints[name], value, field_where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def _convert(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None or (isinstance(value, _RawText) and value.strip().lower() in ("none", "null", "")):
            return None
        return _convert(options[0], value, where)
    if isinstance(value, _RawText):
        value = _parse_raw(kind, value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(kind):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(kind))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, value_kind = typing.get_args(kind)
        return {str(k): _convert(value_kind, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_kind,) = typing.get_args(kind)
        return [_convert(item_kind, v, where) for v in value]
    return _scalar(kind, value, where)


def _parse_raw(kind: Any, raw: str, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (dict, list):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"{where}: cannot parse {raw!r}: {error}") from None
    return str(raw)


def _scalar(kind: Any, value: Any, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    return value


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (a subclass's own over its bases')."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_own_field_docs(base))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def describe(config: Any, prefix: str = "", only: set[str] | None = None) -> list[str]:
    """One line per field: ``dotted.name = default  doc``, for --help (``only`` those fields)."""
    lines, docs = [], field_docs(type(config))
    for f in dataclasses.fields(config):
        if only is not None and f.name not in only:
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            section_doc = docs.get(f.name, "")  # what the section means here (online: batches of prompts)
            lines += [f"  {prefix}{f.name}: {section_doc}"] if section_doc else []
            lines += describe(value, f"{prefix}{f.name}.")
        else:
            doc = docs.get(f.name, "")
            lines.append(f"  {prefix}{f.name} = {value!r}" + (f"\n      {doc}" if doc else ""))
    return lines
