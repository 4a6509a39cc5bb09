"""UnitConfig, schema oemkit.unit/v1: the sealed contract between the factory and one box.

Frozen dataclasses, built strictly from JSON (unknown keys, wrong types and a wrong schema version are refused with
the path of the offending value), a content id over the canonical JSON, and an Ed25519 signature the box checks
with the factory's public key. The factory (oemkit.compile) builds and signs it; first boot only reads it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import json
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import Any, Literal

from hypervisor_core import ed25519

SCHEMA = "oemkit.unit/v1"
MAX_BYTES = 1 << 20  # a unit config is a few KiB
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")


class ConfigError(Exception):
    """The unit config is not one this agent may apply (unreadable, wrong version, tampered, badly signed)."""


@dataclass(frozen=True)
class Identity:
    manufacturers: tuple[str, ...]
    product_names: tuple[str, ...]
    machine_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dns:
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


@dataclass(frozen=True)
class Host:
    hostname: str
    timezone: str
    ntp: tuple[str, ...] = ()
    dns: Dns = Dns()


@dataclass(frozen=True)
class PortRef:
    """A catalog port as the box will see it: the PCI addresses real units report, and its driver. A port whose
    address no real unit told us (an option card) is found by driver and position: it is the `position`-th of the
    model's `of` address-less ports with that driver, counted in PCI address order."""

    id: str
    pci_addresses: tuple[str, ...]
    driver: str
    position: int | None = None
    of: int | None = None


@dataclass(frozen=True)
class UplinkRule:
    ports: tuple[PortRef, ...]  # the catalog ports this rule may take, resolved at the factory
    min_speed_mbps: int | None = None
    link: Literal["up", "any"] = "any"


@dataclass(frozen=True)
class Uplinks:
    rules: tuple[UplinkRule, ...]
    count: int = 1
    model_addresses: tuple[str, ...] = ()  # every PCI address the catalog knows for this model's ports


@dataclass(frozen=True)
class Address:
    mode: Literal["dhcp", "static"]
    address: str | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class Management:
    uplinks: Uplinks
    address: Address
    bond: Literal["active-backup", "802.3ad", "balance-alb"] | None = None
    vlan: int | None = None


@dataclass(frozen=True)
class GuestNetwork:
    name: str
    mode: Literal["bridge", "nat", "isolated"]
    vlan: int | None = None
    cidr: str | None = None


@dataclass(frozen=True)
class DiskRule:
    count: int
    interface: Literal["sata", "sas", "nvme"] | None = None
    rotational: bool | None = None
    min_size_gib: int | None = None


@dataclass(frozen=True)
class Storage:
    datastore: DiskRule
    layout: Literal["single", "mirror", "raid10", "stripe"]
    pool: str


@dataclass(frozen=True)
class Admin:
    name: str
    password_hash: str | None = None
    ssh_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Security:
    admins: tuple[Admin, ...]
    ssh: bool = True
    lockdown: Literal["normal", "strict"] = "normal"
    require_secure_boot: bool = False
    require_tpm: bool = False


@dataclass(frozen=True)
class PhoneHome:
    url: str
    interval_seconds: int = 300


@dataclass(frozen=True)
class Branding:
    oem_name: str
    product: str
    powered_by: str
    support_url: str | None = None
    banner: str | None = None


@dataclass(frozen=True)
class DiskSource:
    url: str
    sha256: str
    format: Literal["qcow2", "raw"] = "qcow2"


@dataclass(frozen=True)
class VmDisk:
    name: str
    size_gib: int
    source: DiskSource | None = None


@dataclass(frozen=True)
class Workload:
    name: str
    vcpus: int
    memory_mib: int
    disks: tuple[VmDisk, ...] = ()
    networks: tuple[str, ...] = ()
    autostart: bool = True
    start_order: int = 0


@dataclass(frozen=True)
class FirstBoot:
    on_hardware_mismatch: Literal["halt", "report"] = "halt"
    timeout_seconds: int = 900


@dataclass(frozen=True)
class UnitConfig:
    schema: str
    serial: str
    model: str
    site: str
    profile: str
    compiled_by: str
    identity: Identity
    host: Host
    management: Management
    networks: tuple[GuestNetwork, ...]
    storage: Storage
    security: Security
    branding: Branding
    workloads: tuple[Workload, ...]
    firstboot: FirstBoot
    phone_home: PhoneHome | None = None
    content_id: str = ""
    signed_by: str = ""
    signature: str = ""

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))


def plain(value: Any) -> Any:
    """Tuples to lists, recursively: the JSON shape of a frozen dataclass tree."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def canonical(data: dict[str, Any]) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no white space, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_id(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k not in ("content_id", "signed_by", "signature")}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def key_id(public: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public).hexdigest()[:16]


def signed_bytes(data: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in data.items() if k != "signature"})


@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    return typing.get_type_hints(tp)  # evaluating annotations is slow; every unit of an order needs the same


def _build(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _build(arg, value, path)
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
        return tuple(_build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object")
        hints = _hints(tp)
        known = {f.name for f in fields(tp)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r}")
        kwargs = {}
        for f in fields(tp):
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], f"{path}.{f.name}" if path else f.name)
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


def _check_names(cfg: UnitConfig) -> None:
    """Names become libvirt object names and file names, keys and DNS servers become lines in files: even signed,
    they must be plain (no '/', no '..', no line breaks)."""
    named = [("pool", cfg.storage.pool)] + [("network", n.name) for n in cfg.networks]
    for vm in cfg.workloads:
        named += [("workload", vm.name)] + [("disk", d.name) for d in vm.disks]
        named += [("network reference", n) for n in vm.networks]
    named += [("admin", a.name) for a in cfg.security.admins]
    for what, name in named:
        if not _NAME.match(name):
            raise ConfigError(f"{what} name {name!r} is not a plain name (a-z, 0-9, '-')")
    if not _HOSTNAME.match(cfg.host.hostname):
        raise ConfigError(f"host name {cfg.host.hostname!r} is not valid")
    lines = [*cfg.host.ntp, *cfg.host.dns.servers, *cfg.host.dns.search, cfg.host.timezone]
    lines += [k for a in cfg.security.admins for k in a.ssh_keys] + [a.password_hash or "" for a in cfg.security.admins]
    for text in lines:
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ConfigError(f"a control character or line break in {text[:30]!r}")
    for server in cfg.host.dns.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ConfigError(f"DNS server {server!r} is not an IP address") from None


def from_dict(data: Any) -> UnitConfig:
    """Strictly build a UnitConfig; ConfigError names the first offending path."""
    if not isinstance(data, dict):
        raise ConfigError("not a unit config: expected a JSON object")
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"unknown schema {data.get('schema')!r}: this agent reads {SCHEMA}")
    cfg = _build(UnitConfig, data, "")
    _check_names(cfg)
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
    """Parse, check the content id and (when a key is given) the signature, then build. Any failure is a
    ConfigError with a reason fit for the console; nothing is returned that was not verified."""
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"unit config is {len(raw)} bytes; the limit is {MAX_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"unit config is not valid JSON ({str(exc)[:100]})") from None
    if not isinstance(data, dict):
        raise ConfigError("not a unit config: expected a JSON object")
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"unknown schema {data.get('schema')!r}: this agent reads {SCHEMA}")
    if public_key is not None:
        sig = data.get("signature")
        if not isinstance(sig, str) or not sig.startswith("ed25519:"):
            raise ConfigError("unit config is not signed")
        try:
            signature = base64.b64decode(sig.removeprefix("ed25519:"), validate=True)
        except ValueError:
            raise ConfigError("unit config signature is not base64") from None
        if data.get("signed_by") != key_id(public_key):
            raise ConfigError(
                f"unit config was signed by {data.get('signed_by')}, not by this factory key ({key_id(public_key)})"
            )
        if not ed25519.verify(public_key, signed_bytes(data), signature):
            raise ConfigError("unit config signature does not verify: the file was altered after signing")
    if data.get("content_id") != content_id(data):
        raise ConfigError("unit config content id does not match its content")
    return from_dict(data)


def read_public_key(text: str) -> bytes:
    """A raw 32-byte key from the factory's signing.pub (PEM SubjectPublicKeyInfo, as `keys init` writes it)."""
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except ValueError:
        raise ConfigError("public key is not PEM") from None
    prefix = bytes.fromhex("302a300506032b6570032100")  # SubjectPublicKeyInfo header of an Ed25519 key
    if len(der) != 44 or not der.startswith(prefix):
        raise ConfigError("public key is not an Ed25519 key")
    return der[len(prefix) :]
