"""Frozen dataclasses ↔ JSON: a strict reader (unknown keys, wrong types and missing keys are refused with the
path of the offending value) and its inverse. Standard library only: the agent cannot use pydantic."""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Literal


class ConfigError(Exception):
    """The unit config is not one this agent may apply (unreadable, wrong version, tampered, badly signed)."""


@functools.cache
def _names(tp: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(tp))


def plain(value: Any) -> Any:
    """The JSON shape of a frozen dataclass tree: dataclasses to dicts, tuples to lists. Unlike `asdict` it copies
    nothing it does not have to (the values are immutable), which an order of thousands of units feels."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {name: plain(getattr(value, name)) for name in _names(type(value))}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    return typing.get_type_hints(tp)  # evaluating annotations is slow; every unit of an order needs the same


def build(tp: Any, value: Any, path: str = "") -> Any:
    """An instance of `tp` (a dataclass, tuple, Literal, union, bool, int or str) from JSON data, or a
    ConfigError naming the first offending path."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return build(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list")
        (item,) = typing.get_args(tp)[:1]
        return tuple(build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'the document'}: expected an object")
        hints = _hints(tp)
        known = {f.name for f in fields(tp)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{path + ': ' if path else ''}unknown key {unknown[0]!r}")
        kwargs = {}
        for f in fields(tp):
            if f.name in value:
                kwargs[f.name] = build(hints[f.name], value[f.name], f"{path}.{f.name}" if path else f.name)
            elif f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{path + '.' if path else ''}{f.name}: missing")
        return tp(**kwargs)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string")
        return value
    raise ConfigError(f"{path}: unsupported type {tp!r}")
