"""Appliance profile schema, version oemkit/v1: what a site's appliance must be. Strict: unknown keys are errors.

Fields marked `x-site-value` may be left out of a base profile (a warning says who must set them) but must be set
once the site overlay is merged. Fields marked `x-recorded-only` are sealed into the unit config but not yet acted
on by the appliance; validation warns when a profile asks for more than today's behaviour. The schema checks one
document's own syntax and consistency; checks that need the hardware catalog live in lint.py. Frozen once
released: a later apiVersion gets its own module (profile/schema/__init__.py dispatches).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from hypervisor_core import __version__ as CORE_VERSION
from oemkit.profile.schema.rules import SERIAL_PATTERN
from oemkit.profile.schema.values import (
    Hostname,
    Interface,
    IPAddress,
    Name,
    Network,
    Url,
    Vlan,
    ca_certificates,
    console_text,
    crypt_hash,
    hostname_template,
    ssh_key,
    timezone_name,
)

if TYPE_CHECKING:
    from oemkit.catalog.schema import NicPort

API_VERSION = "oemkit/v1"
SITE_VALUE: dict[str, Any] = {"x-site-value": True}


def _recorded_only(today: str, inert: Any) -> dict[str, Any]:
    """Sealed into the unit config, not yet acted on by the appliance: `today` says what the box does instead, and
    `inert` is the value that asks for nothing more than that (any other value gets a validation warning)."""
    return {"x-recorded-only": {"today": today, "inert": inert}}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeio" else "a"


def _site_value(description: str) -> Any:
    return Field(None, description=description + " May be left to the site overlay.", json_schema_extra=SITE_VALUE)


class Strict(BaseModel):
    # strict: "4" is not 4 and "yes" is not true — the CLI and the published JSON Schema agree on types
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Metadata(Strict):
    name: Name = Field(description="The profile's name; site overlays refer to it.")
    description: str | None = None


class Dns(Strict):
    servers: list[IPAddress] = Field(default_factory=list, max_length=3)
    search: list[Hostname] = Field(default_factory=list, max_length=6)


class Host(Strict):
    hostname: Annotated[str, AfterValidator(hostname_template)] = Field(
        description="Host name template; placeholders {site}, {serial}, {model}. E.g. br-{site}-{serial}.",
    )
    timezone: Annotated[str, AfterValidator(timezone_name)] | None = _site_value("IANA time zone, e.g. Europe/Berlin.")
    ntp: list[Hostname | IPAddress] = Field(default_factory=list, description="NTP servers.")
    dns: Dns = Field(default_factory=Dns)

    def render(self, site: str, serial: str, model: str) -> str:
        """The host name of one unit: the template with its placeholders filled, lowercase."""
        return self.hostname.format(site=site, serial=serial, model=model).lower()


class PortRule(Strict):
    """Selects NIC ports: every given criterion must hold. First boot resolves it against the real NICs."""

    port: str | None = Field(None, description="A catalog port id of the model, e.g. LOM1, OCP-1.")
    kind: Literal["lom", "ndc", "flexlom", "ocp", "mezz", "pcie"] | None = None
    min_speed_mbps: int | None = Field(None, ge=10)
    media: Literal["rj45", "sfp", "sfp+", "sfp28", "qsfp28"] | None = None
    link: Literal["up", "any"] = Field("any", description="up: only ports with carrier at first boot.")

    def matches(self, port: NicPort) -> bool:
        """Whether a catalog port satisfies every criterion this rule gives."""
        return (
            (self.port is None or self.port == port.id)
            and (self.kind is None or self.kind == port.kind)
            and (self.min_speed_mbps is None or port.speed_mbps >= self.min_speed_mbps)
            and (self.media is None or self.media == port.media)
        )


class Uplinks(Strict):
    select: list[PortRule] = Field(min_length=1, description="Rules, in order of preference.")
    count: int = Field(1, ge=1, le=8, description="How many ports form the uplink.")


class StaticAddress(Strict):
    address: Interface = Field(description="Host address with prefix, e.g. 10.20.1.10/24.")
    gateway: IPAddress | None = None

    @model_validator(mode="after")
    def _usable(self) -> StaticAddress:
        iface = ipaddress.ip_interface(self.address)
        net, ip = iface.network, iface.ip
        # (the network address is refused by Interface itself.) /31 and /32 have no broadcast address (RFC 3021)
        if net.version == 4 and net.num_addresses > 2 and ip == net.broadcast_address:
            raise ValueError(f"{self.address} is the broadcast address of {net}: no host may take it")
        if self.gateway:
            gateway = ipaddress.ip_address(self.gateway)
            if gateway not in net:
                raise ValueError(f"gateway {self.gateway} is not in {net}")
            if gateway == ip:
                raise ValueError(f"the gateway {self.gateway} is the host's own address")
            if net.num_addresses > 2 and gateway == net.network_address:
                raise ValueError(f"gateway {self.gateway} is the network address of {net}")
            if net.version == 4 and net.num_addresses > 2 and gateway == net.broadcast_address:
                raise ValueError(f"gateway {self.gateway} is the broadcast address of {net}")
        return self


class ManagementNetwork(Strict):
    uplinks: Uplinks
    bond: Literal["active-backup", "802.3ad", "balance-alb"] | None = Field(
        None, description="Bond mode when uplinks.count > 1."
    )
    vlan: Vlan | None = None
    address: Literal["dhcp"] | StaticAddress | None = _site_value("`dhcp`, or {address, gateway}.")

    @model_validator(mode="after")
    def _bond(self) -> ManagementNetwork:
        if self.uplinks.count > 1 and self.bond is None:
            raise ValueError(f"{self.uplinks.count} uplinks need a bond mode (active-backup, 802.3ad, balance-alb)")
        return self


class GuestNetwork(Strict):
    name: Name
    mode: Literal["bridge", "nat", "isolated"] = Field(
        "bridge", description="bridge: on the uplink (VLAN-tagged if vlan is set); nat/isolated: host-internal."
    )
    vlan: Vlan | None = None
    cidr: Network | None = Field(None, description="Subnet for nat/isolated networks (the host takes .1).")

    @model_validator(mode="after")
    def _mode(self) -> GuestNetwork:
        if self.mode == "bridge" and self.cidr:
            raise ValueError("a bridge network takes its addresses from the site LAN: remove cidr")
        if self.mode != "bridge" and self.cidr is None:
            raise ValueError(f"{_article(self.mode)} {self.mode} network needs a cidr")
        if self.mode != "bridge" and self.vlan is not None:
            raise ValueError(f"{_article(self.mode)} {self.mode} network is host-internal: remove vlan")
        return self


class Networks(Strict):
    management: ManagementNetwork
    guest: list[GuestNetwork] = Field(default_factory=list)


# The largest drives on sale (2026): a 36 TB HDD and a 122.88 TB SSD. A rule asking for more matches no disk.
LARGEST_HDD_GIB, LARGEST_SSD_GIB = 33_528, 114_441


class DiskRule(Strict):
    interface: Literal["sata", "sas", "nvme"] | None = None
    rotational: bool | None = Field(None, description="false: SSDs only; true: HDDs only.")
    min_size_gib: int | None = Field(None, ge=1, le=LARGEST_SSD_GIB)
    count: int = Field(1, ge=1, le=32)

    @model_validator(mode="after")
    def _real(self) -> DiskRule:
        if self.rotational and self.interface == "nvme":
            raise ValueError("no NVMe drive is rotational: HDDs are SATA or SAS (drop rotational, or the interface)")
        if self.rotational and (self.min_size_gib or 0) > LARGEST_HDD_GIB:
            raise ValueError(f"no HDD holds {self.min_size_gib} GiB (the largest on sale: {LARGEST_HDD_GIB} GiB)")
        return self


class Storage(Strict):
    datastore: DiskRule = Field(description="Which disks form the datastore; first boot resolves it.")
    layout: Literal["single", "mirror", "raid10", "stripe"] = Field(
        "single",
        description="How the datastore disks are combined.",
        json_schema_extra=_recorded_only(
            "the disks are matched and recorded; the pool is a folder under /var/lib/oemkit/pools", "single"
        ),
    )
    pool: Name = Field("datastore", description="libvirt storage pool name.")

    @model_validator(mode="after")
    def _layout(self) -> Storage:
        need = {"single": 1, "mirror": 2, "raid10": 4, "stripe": 2}[self.layout]
        if self.datastore.count < need:
            raise ValueError(
                f"layout {self.layout} needs at least {need} disks, datastore.count is {self.datastore.count}"
            )
        if self.layout == "single" and self.datastore.count != 1:
            raise ValueError(
                f"layout single takes one disk; {self.datastore.count} disks need mirror, raid10 or stripe"
            )
        return self


class Admin(Strict):
    name: Name
    password_hash: Annotated[str, AfterValidator(crypt_hash)] | None = Field(
        None, description="crypt(3) hash ($6$, $y$, $2b$ ...), never a password."
    )
    ssh_keys: list[Annotated[str, AfterValidator(ssh_key)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _can_log_in(self) -> Admin:
        if self.password_hash is None and not self.ssh_keys:
            raise ValueError(f"admin {self.name!r} has neither password_hash nor ssh_keys: nobody could log in")
        return self


class Security(Strict):
    admins: list[Admin] = Field(min_length=1)
    ssh: bool = Field(
        True,
        description="SSH server on the management network.",
        json_schema_extra=_recorded_only(
            "the core ships no SSH server (the host key and authorized_keys are written)", False
        ),
    )
    lockdown: Literal["normal", "strict"] = Field(
        "normal",
        description="strict: console and SSH refuse root.",
        json_schema_extra=_recorded_only("the core has no console shell or SSH server, whatever the value", "normal"),
    )
    require_secure_boot: bool = False
    require_tpm: bool = False


class PhoneHome(Strict):
    url: Url = Field(
        description="The provisioning service's base URL (`oemkit serve`): the box enrols at "
        "URL/v1/units/<serial>/enrol "
        "and reports to URL/v1/units/<serial>/reports."
    )
    ca_pem: Annotated[str, AfterValidator(ca_certificates)] = Field(
        max_length=32768,
        description="PEM CA certificate(s) the box trusts for `url`, and nothing else (pinned: the core has no CA "
        "bundle). Sealed into the signed unit config.",
    )
    interval_seconds: int = Field(
        300,
        ge=30,
        le=86400,
        description="Recorded only, not acted on yet: the box reports at the end of first boot and delivers what it "
        "spooled at every boot; there is no periodic check-in.",
    )


class Management(Strict):
    phone_home: PhoneHome | None = Field(
        None,
        description="Where the box enrols and reports its first boot, READY or FAILED (docs/zero-touch.md).",
    )


class Branding(Strict):
    oem_name: Annotated[str, AfterValidator(console_text)] = Field(min_length=1, max_length=64)
    product: Annotated[str, AfterValidator(console_text)] = Field(min_length=1, max_length=64)
    support_url: Url | None = None
    banner: Annotated[str, AfterValidator(console_text)] | None = Field(
        None, max_length=2000, description="Console banner; the 'powered by' line follows it."
    )

    @computed_field(description="Fixed: the hypervisor maker stays visible on every box. Not settable.")  # type: ignore[prop-decorator]
    @property
    def powered_by(self) -> str:
        return f"powered by oemkit core {CORE_VERSION}"


class DiskSource(Strict):
    url: str = Field(pattern=r"^(https://|file://|/)\S+$", description="https://, file:// or an absolute path.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    format: Literal["qcow2", "raw"] = "qcow2"


class VmDisk(Strict):
    name: Name
    size_gib: int = Field(ge=1, le=65536)
    source: DiskSource | None = Field(None, description="Image to copy in; none: a blank disk.")


class Vm(Strict):
    name: Name
    vcpus: int = Field(ge=1, le=256)
    memory_mib: int = Field(ge=64, le=4 * 1024 * 1024)
    disks: list[VmDisk] = Field(default_factory=list)
    networks: list[Name] = Field(default_factory=list, description="Guest network names, one NIC each.")
    autostart: bool = True
    start_order: int = Field(0, ge=0, le=999, description="Lower starts first.")


class Overcommit(Strict):
    cpu: float = Field(4.0, ge=1.0, le=16.0, description="vCPUs per hardware thread.")
    memory: float = Field(1.0, ge=1.0, le=2.0, description="Guest memory per GiB of RAM.")


class Workloads(Strict):
    overcommit: Overcommit = Field(default_factory=Overcommit)
    host_reserved_mib: int = Field(4096, ge=1024, description="RAM kept for the hypervisor itself.")
    vms: list[Vm] = Field(default_factory=list)


class FirstBoot(Strict):
    on_hardware_mismatch: Literal["halt", "report"] = Field(
        "halt",
        description="halt: refuse and stop, silently; report: refuse, phone home (FAILED, the reason), stop.",
    )
    timeout_seconds: int = Field(900, ge=60, le=86400)


class ApplianceProfile(Strict):
    """A base appliance profile (profiles/*.yaml)."""

    apiVersion: Literal["oemkit/v1"]
    kind: Literal["ApplianceProfile"]
    metadata: Metadata
    models: list[str] = Field(min_length=1, description="Catalog model ids this profile is built for.")
    host: Host
    network: Networks
    storage: Storage
    security: Security
    management: Management = Field(default_factory=Management)
    branding: Branding
    workloads: Workloads = Field(default_factory=Workloads)
    firstboot: FirstBoot = Field(default_factory=FirstBoot)


def _no_header(overrides: dict[str, Any]) -> dict[str, Any]:
    """An overlay overrides a profile's values, never what the profile is (its apiVersion or kind)."""
    for key in ("apiVersion", "kind"):
        if key in overrides:
            raise ValueError(f"overrides cannot set {key}: an overlay changes a profile's values, not what it is")
    return overrides


class Site(Strict):
    code: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,15}$", description="Short site code, used in host names.")
    name: str = Field(min_length=1, max_length=128)
    location: str | None = None


class SiteOverlay(Strict):
    """A site overlay (profiles/sites/*.yaml): which profile, the site, and overrides merged onto the profile."""

    apiVersion: Literal["oemkit/v1"]
    kind: Literal["SiteOverlay"]
    profile: Name = Field(description="metadata.name of the profile this site is for.")
    site: Site
    overrides: dict[str, Any] = Field(default_factory=dict, description="Profile values for this site (deep-merged).")

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _no_header(value)


class UnitOverlay(Strict):
    """Per-unit values: the serial and optional overrides (from an order)."""

    apiVersion: Literal["oemkit/v1"] = "oemkit/v1"
    kind: Literal["UnitOverlay"] = "UnitOverlay"
    serial: str = Field(pattern=SERIAL_PATTERN)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _no_header(value)
