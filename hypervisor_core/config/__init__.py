"""The unit config as the agent reads it: every schema version it knows, translated up to the newest.

A box keeps its sealed config for years while agents get updated, so a document is read by its own version's
strict reader and then translated up one version at a time (Ignition's ParseCompatibleVersion chain); the planner
only ever sees the newest version. The seal (content id, signature) is checked on the document as sealed,
before any translation. Today there is one version, oemkit.unit/v1 (config/v1.py, frozen); a v2 adds a module, a
`Version` entry and the v1 → v2 translation below, and tests/data/units/v1/ keeps proving v1 still loads.
"""

from __future__ import annotations

import json
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


def load(raw: bytes, public_key: bytes | None) -> UnitConfig:
    """Parse, check the seal (the signature when a key is given, and the content id), then build. Any failure is
    a ConfigError with a reason fit for the console; nothing is returned that was not verified."""
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"unit config is {len(raw)} bytes; the limit is {MAX_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"unit config is not valid JSON ({str(exc)[:100]})") from None
    if not isinstance(data, dict):
        raise ConfigError("not a unit config: expected a JSON object")
    schema = data.get("schema")
    if not isinstance(schema, str) or schema not in {v.schema for v in VERSIONS}:
        read(data)  # the unknown-schema error, before the seal: a newer document is not "tampered"
    check_seal(data, public_key)
    return from_dict(data)


__all__ = [
    "MAX_BYTES",
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
    "plain",
    "read",
    "read_public_key",
    "signed_bytes",
]
