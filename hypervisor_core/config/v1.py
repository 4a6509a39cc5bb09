"""UnitConfig, schema oemkit.unit/v1: the sealed contract between the factory and one box, as frozen dataclasses.

Frozen: a box in the field may hold a v1 document for years, so once released this file only grows docstrings. A
later version gets its own module and a translation from this one (hypervisor_core/config/__init__.py). The
factory (oemkit/seal) constructs these objects directly; the invariants below hold for every instance, so
nothing the agent would refuse can be sealed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from hypervisor_core.config.codec import ConfigError, plain
from hypervisor_core.identity import IdentitySpec

SCHEMA = "oemkit.unit/v1"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
HOST_NAME_MAX = 64  # Linux: sethostname(2) takes no more, so neither does a unit's host name


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
    url: str  # the provisioning service's base URL: the box posts to URL/v1/units/<serial>/enrol and .../reports
    interval_seconds: int = 300
    ca_pem: str | None = None  # for https: the only CA the box trusts for this URL (pinned); None: the URL is http


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
    identity: IdentitySpec  # the one identity type: catalog identify and this box's check use the same rule
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

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = plain(self)
        return data


def check(cfg: UnitConfig) -> None:
    """Names become libvirt object names and file names, keys and DNS servers become lines in files: even signed,
    they must be plain (no '/', no '..', no line breaks)."""
    named = [("pool", cfg.storage.pool)] + [("network", n.name) for n in cfg.networks]
    for vm in cfg.workloads:
        named += [("workload", vm.name)] + [("disk", d.name) for d in vm.disks]
        named += [("network reference", n) for n in vm.networks]
    named += [("admin", a.name) for a in cfg.security.admins]
    for what, name in named:
        if not _NAME.fullmatch(name):  # fullmatch: `$` alone would let a trailing line break through
            raise ConfigError(f"{what} name {name!r} is not a plain name (a-z, 0-9, '-')")
    if not _HOSTNAME.fullmatch(cfg.host.hostname):
        raise ConfigError(f"host name {cfg.host.hostname!r} is not valid")
    if len(cfg.host.hostname) > HOST_NAME_MAX:
        raise ConfigError(f"host name {cfg.host.hostname!r} is longer than Linux takes ({HOST_NAME_MAX})")
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
