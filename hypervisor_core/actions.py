"""The actions first boot's plan is made of: small frozen values, each with a stable id, a description for people
and the one backend call that makes it true.

Each action says what must hold afterwards, not how to get there; the backends make it hold idempotently (look up,
then define), which is what lets a rerun after a crash converge. A new kind of action is one class here: its
fields (the parameters `firstboot preview --plan` prints and the plan golden files pin), `id`, `describe()` and
`run()` against the backend interfaces the type checker knows (hypervisor_core/backends/__init__.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from hypervisor_core.backends import (
    Backends,
    BridgePort,
    DatastoreDisk,
    DomainCheck,
    UplinkPort,
    UserAccount,
    VolumeSource,
)
from hypervisor_core.config.codec import plain


@dataclass(frozen=True)
class Action(ABC):
    kind: ClassVar[str]  # the family of the action, stable: journal, report and goldens name it

    @property
    def id(self) -> str:
        return self.kind

    def params(self) -> dict[str, Any]:
        data: dict[str, Any] = plain(self)
        return data

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "args": self.params()}

    @abstractmethod
    def describe(self) -> str:
        """One line for people: what must hold afterwards."""

    @abstractmethod
    def run(self, b: Backends) -> str:
        """Make it hold through the backends, idempotently; the detail for the console and the journal."""


# ------------------------------------------------------------------------------------------------- the host
@dataclass(frozen=True)
class SetMachineId(Action):
    kind: ClassVar[str] = "host.machine-id"

    def describe(self) -> str:
        return "generate this box's own machine-id (an image's copy is replaced, an earlier run's kept)"

    def run(self, b: Backends) -> str:
        return b.host.machine_id()


@dataclass(frozen=True)
class SetSshHostKeys(Action):
    kind: ClassVar[str] = "host.ssh-host-keys"
    enabled: bool

    def describe(self) -> str:
        use = "for an SSH server, which the core does not ship yet" if self.enabled else "SSH off"
        return f"generate the box's own Ed25519 SSH host key ({use})"

    def run(self, b: Backends) -> str:
        return b.host.ssh_host_keys(self.enabled)


@dataclass(frozen=True)
class SetHostname(Action):
    kind: ClassVar[str] = "host.hostname"
    hostname: str

    def describe(self) -> str:
        return f"host name {self.hostname} (etc/hostname, etc/hosts)"

    def run(self, b: Backends) -> str:
        return b.host.hostname(self.hostname)


@dataclass(frozen=True)
class WriteSettings(Action):
    kind: ClassVar[str] = "host.settings"
    timezone: str
    ntp: tuple[str, ...]
    dns_servers: tuple[str, ...]
    dns_search: tuple[str, ...]

    def describe(self) -> str:
        return f"time zone {self.timezone}, {len(self.ntp)} NTP and {len(self.dns_servers)} DNS servers"

    def run(self, b: Backends) -> str:
        return b.host.settings(self.timezone, self.ntp, self.dns_servers, self.dns_search)


@dataclass(frozen=True)
class WriteNetwork(Action):
    kind: ClassVar[str] = "host.network"
    uplinks: tuple[UplinkPort, ...]
    bond: str | None
    vlan: int | None
    address: str  # dhcp | static
    cidr: str | None
    gateway: str | None
    bridges: tuple[BridgePort, ...]

    @property
    def id(self) -> str:
        return "host.management-network"

    def describe(self) -> str:
        over = ", ".join(u.name for u in self.uplinks)
        how = f"bond {self.bond} over {over}" if self.bond else over
        vlan = f", VLAN {self.vlan}" if self.vlan else ""
        addr = self.cidr if self.address == "static" else "DHCP"
        return f"management network on {how}{vlan}, {addr}; {len(self.bridges)} guest bridge(s)"

    def run(self, b: Backends) -> str:
        return b.host.network(self.uplinks, self.bond, self.vlan, self.address, self.cidr, self.gateway, self.bridges)


@dataclass(frozen=True)
class WriteUsers(Action):
    kind: ClassVar[str] = "host.users"
    admins: tuple[UserAccount, ...]
    ssh: bool
    lockdown: str

    def describe(self) -> str:
        return f"admin accounts {', '.join(a.name for a in self.admins)} (hashes and public keys only)"

    def run(self, b: Backends) -> str:
        return b.host.users(self.admins, self.ssh, self.lockdown)


@dataclass(frozen=True)
class RecordDatastore(Action):
    kind: ClassVar[str] = "host.datastore"
    layout: str
    pool: str
    disks: tuple[DatastoreDisk, ...]

    def describe(self) -> str:
        return f"record the datastore disks ({self.layout}): {', '.join(d.name for d in self.disks)}"

    def run(self, b: Backends) -> str:
        return b.host.datastore(self.layout, self.pool, self.disks)


# ------------------------------------------------------------------------------------------------- libvirt
@dataclass(frozen=True)
class LibvirtObject(Action, ABC):
    """An action on one named libvirt object: its id is the kind and the name (libvirt.domain.nvr)."""

    name: str

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class DefineNetwork(LibvirtObject):
    kind: ClassVar[str] = "libvirt.network"
    xml: str

    def describe(self) -> str:
        return f"define libvirt network {self.name}, start it, autostart on"

    def run(self, b: Backends) -> str:
        return b.libvirt.network(self.name, self.xml)


@dataclass(frozen=True)
class DefinePool(LibvirtObject):
    kind: ClassVar[str] = "libvirt.pool"
    path: str
    xml: str

    def describe(self) -> str:
        return f"define storage pool {self.name} at {self.path}, start it, autostart on"

    def run(self, b: Backends) -> str:
        return b.libvirt.pool(self.name, self.path, self.xml)


@dataclass(frozen=True)
class CreateVolume(Action):
    kind: ClassVar[str] = "libvirt.volume"
    pool: str
    name: str
    xml: str
    source: VolumeSource | None
    size_gib: int

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.pool}.{self.name}"

    def describe(self) -> str:
        what = f"filled from image {self.source.sha256[:12]}" if self.source else "blank"
        return f"volume {self.name} in {self.pool}, {self.size_gib} GiB, {what}"

    def run(self, b: Backends) -> str:
        return b.libvirt.volume(self.pool, self.name, self.xml, self.source, self.size_gib)


@dataclass(frozen=True)
class DefineDomain(LibvirtObject):
    kind: ClassVar[str] = "libvirt.domain"
    xml: str

    def describe(self) -> str:
        return f"define workload {self.name} (validated by libvirt)"

    def run(self, b: Backends) -> str:
        return b.libvirt.domain(self.name, self.xml)


@dataclass(frozen=True)
class SetAutostart(LibvirtObject):
    kind: ClassVar[str] = "libvirt.autostart"
    enabled: bool

    def describe(self) -> str:
        return f"autostart of {self.name} {'on' if self.enabled else 'off'}"

    def run(self, b: Backends) -> str:
        return b.libvirt.autostart(self.name, self.enabled)


@dataclass(frozen=True)
class StartDomain(LibvirtObject):
    kind: ClassVar[str] = "libvirt.start"
    order: int

    def describe(self) -> str:
        return f"start {self.name} (start order {self.order}); a paused one is resumed"

    def run(self, b: Backends) -> str:
        return b.libvirt.start(self.name)


@dataclass(frozen=True)
class Verify(Action):
    kind: ClassVar[str] = "verify"
    networks: tuple[str, ...]
    pool: str
    domains: tuple[DomainCheck, ...]

    def describe(self) -> str:
        return f"read back from libvirt: {len(self.networks)} networks, pool {self.pool}, {len(self.domains)} domains"

    def run(self, b: Backends) -> str:
        return b.libvirt.verify(self.networks, self.pool, self.domains)


# ------------------------------------------------------------------------------------------------- the end
@dataclass(frozen=True)
class Report(Action):
    kind: ClassVar[str] = "report"

    def describe(self) -> str:
        return "write the report and the status, then mark first boot done (last, so a failure stays re-runnable)"

    def run(self, b: Backends) -> str:
        return b.report.record_success()
