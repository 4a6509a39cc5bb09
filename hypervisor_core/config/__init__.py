"""The unit config as the agent reads it: every schema version it knows, translated up to the newest.

A box keeps its sealed config for years while agents get updated, so a document is read by its own version's
strict reader and then translated up one version at a time (Ignition's ParseCompatibleVersion chain); the planner
only ever sees the newest version. The seal (content id, signature) is checked on the document as sealed,
before any translation. Today there is one version, oemkit.unit/v1 (config/v1.py, frozen); a v2 adds a module, a
`Version` entry and the v1 → v2 translation below, and tests/data/units/v1/ keeps proving v1 still loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypervisor_core.config import v1
from hypervisor_core.config.codec import ConfigError, build, plain
from hypervisor_core.config.signing import canonical, check_seal, content_id, key_id, read_public_key, signed_bytes
from hypervisor_core.config.v1 import (
    Address,
    Admin,
    Branding,
    DiskRule,
    DiskSource,
    Dns,
    FirstBoot,
    GuestNetwork,
    Host,
    Management,
    PhoneHome,
    PortRef,
    Security,
    Storage,
    UnitConfig,
    UplinkRule,
    Uplinks,
    VmDisk,
    Workload,
)

MAX_BYTES = 1 << 20  # a unit config is a few KiB
MAX_DEPTH = 64  # a unit config nests 5 levels deep; Python's JSON parser overflows its stack near 1,000


class UnreadableConfig(ConfigError):
    """The bytes are not a document this agent reads at all: too large, not UTF-8, not JSON, nested too deep, or
    holding text that is not Unicode. (The factory's preview calls this unreadable input, exit 2; any other
    ConfigError is a document refused for what it says.)"""


@dataclass(frozen=True)
class Version:
    schema: str
    document: type  # the frozen dataclass tree of this version
    upgrade: Callable[[Any], Any] | None = None  # a document of this version → one of the next; None: the newest


VERSIONS: tuple[Version, ...] = (Version(v1.SCHEMA, v1.UnitConfig),)  # oldest first
SCHEMA = VERSIONS[-1].schema  # what the factory seals


def read(data: Any, versions: Sequence[Version] = VERSIONS) -> Any:
    """Build the document with its own version's reader, then translate it up to the newest version."""
    if not isinstance(data, dict):
        raise ConfigError("not a unit config: expected a JSON object")
    schema = data.get("schema")
    index = next((i for i, v in enumerate(versions) if v.schema == schema), None)
    if index is None:
        known = ", ".join(v.schema for v in versions)
        raise ConfigError(f"unknown schema {schema!r}: this agent reads {known}")
    doc = build(versions[index].document, data)
    for version in versions[index:-1]:
        assert version.upgrade is not None, f"{version.schema} has no translation to the next version"
        doc = version.upgrade(doc)
    return doc


def from_dict(data: Any) -> UnitConfig:
    """Strictly build the newest UnitConfig from a document of any known version; ConfigError names the first
    offending path."""
    cfg = read(data)
    assert isinstance(cfg, UnitConfig)  # the chain ends at the newest version
    return cfg


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON allows a key twice and readers disagree on which wins: a signed document must have one meaning."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# Escapes first (a string's `\"` is not its end), then whole strings: what is left holds the brackets that nest.
# Both patterns scan each character a bounded number of times, whatever the text (a 1 MiB run of quotes too).
_ESCAPE = re.compile(r"\\.", re.S)
_STRING = re.compile(r'"[^"]*"')
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _too_deep(text: str, max_depth: int) -> bool:
    """Does `text` nest arrays and objects deeper than `max_depth`? Counted before parsing: the standard parser
    recurses once a level and a 100,000-deep array overflows it (RecursionError, or worse, the C stack)."""
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", _ESCAPE.sub("", text))):
        if bracket in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _surrogate_in(value: Any, path: str = "") -> str | None:
    """Which string (or key) of the parsed document holds a lone surrogate, or None. JSON can spell one
    (\\ud800); no UTF-8 text can hold it, so it could not be hashed, signed, printed or written later."""
    if isinstance(value, str):
        return f"the string at {path or 'the top'}" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"a key of {path or 'the top object'}"
            found = _surrogate_in(item, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_in(item, f"{path}[{i}]")
            if found:
                return found
    return None


def parse_json(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The agent's one strict JSON reader (the unit config, a facts file): UTF-8, one value per key, no NaN or
    Infinity, arrays and objects nested at most `max_depth` deep, every string Unicode text. The caller bounds
    the size before reading. ValueError with a short reason (the caller names the document)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}") from None
    if _too_deep(text, max_depth):
        raise ValueError(f"nested more than {max_depth} levels deep")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:  # cannot happen after the depth check; never a traceback if it does
        raise ValueError(f"nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise ValueError(str(exc)[:100]) from None
    where = _surrogate_in(data)
    if where:
        raise ValueError(f"a lone surrogate in {where}: not Unicode text")
    return data


def parse(raw: bytes) -> dict[str, Any]:
    """The unit config's JSON object, bounded and strict (see `parse_json`); UnreadableConfig otherwise."""
    if len(raw) > MAX_BYTES:
        raise UnreadableConfig(f"unit config is {len(raw)} bytes; the limit is {MAX_BYTES}")
    try:
        data = parse_json(raw)
    except ValueError as exc:
        raise UnreadableConfig(f"unit config is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("not a unit config: expected a JSON object")
    return data


def load(raw: bytes, public_key: bytes | None) -> UnitConfig:
    """Parse, check the seal (the signature when a key is given, and the content id), then build. Any failure is
    a ConfigError with a reason fit for the console (UnreadableConfig when the bytes are not a JSON document we
    read at all); nothing is returned that was not verified."""
    data = parse(raw)
    schema = data.get("schema")
    if not isinstance(schema, str) or schema not in {v.schema for v in VERSIONS}:
        read(data)  # the unknown-schema error, before the seal: a newer document is not "tampered"
    check_seal(data, public_key)
    return from_dict(data)


__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "SCHEMA",
    "VERSIONS",
    "Address",
    "Admin",
    "Branding",
    "ConfigError",
    "DiskRule",
    "DiskSource",
    "Dns",
    "FirstBoot",
    "GuestNetwork",
    "Host",
    "Management",
    "PhoneHome",
    "PortRef",
    "Security",
    "Storage",
    "UnitConfig",
    "UnreadableConfig",
    "UplinkRule",
    "Uplinks",
    "Version",
    "VmDisk",
    "Workload",
    "canonical",
    "content_id",
    "from_dict",
    "key_id",
    "load",
    "parse",
    "parse_json",
    "plain",
    "read",
    "read_public_key",
    "signed_bytes",
]
