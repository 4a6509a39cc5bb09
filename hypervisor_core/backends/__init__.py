"""What the plan's actions need from the world, as interfaces: the box's own files, libvirt, the report.

Actions (hypervisor_core/actions.py) call these and nothing else, so a backend can be swapped (a target folder in a
factory rehearsal or `/` on the appliance; libvirt's test driver or qemu:///system) and each action can be tested
on its own. The implementations are `host.HostFiles`, `libvirt.LibvirtConnection` and first boot's own report
(`firstboot.FirstBootRun`). Every method makes its part of the box true idempotently and returns a one-line detail
for the console and the journal. The small value types the actions carry live here too, so that backends and
actions both import this module and never each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class UplinkPort:
    """A NIC first boot chose as a management uplink; the init finds it again by MAC at every boot."""

    name: str
    mac: str | None
    pci_address: str | None


@dataclass(frozen=True)
class BridgePort:
    """The Linux bridge a libvirt `bridge` network attaches to, on the uplinks (tagged when vlan is set)."""

    network: str
    bridge: str
    vlan: int | None


@dataclass(frozen=True)
class UserAccount:
    name: str
    password_hash: str | None
    ssh_keys: tuple[str, ...]


@dataclass(frozen=True)
class DatastoreDisk:
    name: str
    serial: str | None
    by_id: str | None
    size_bytes: int


@dataclass(frozen=True)
class VolumeSource:
    """The disk image a volume is filled from, and the SHA-256 the signed config names for it."""

    url: str
    sha256: str


@dataclass(frozen=True)
class DomainCheck:
    name: str
    autostart: bool


class HostBackend(Protocol):
    def machine_id(self) -> str: ...

    def ssh_host_keys(self, enabled: bool) -> str: ...

    def hostname(self, hostname: str) -> str: ...

    def settings(self, timezone: str, ntp: tuple[str, ...], dns_servers: tuple[str, ...],
                 dns_search: tuple[str, ...]) -> str: ...  # fmt: skip

    def network(self, uplinks: tuple[UplinkPort, ...], bond: str | None, vlan: int | None, address: str,
                cidr: str | None, gateway: str | None, bridges: tuple[BridgePort, ...]) -> str: ...  # fmt: skip

    def users(self, admins: tuple[UserAccount, ...], ssh: bool, lockdown: str) -> str: ...

    def datastore(self, layout: str, pool: str, disks: tuple[DatastoreDisk, ...]) -> str: ...


class LibvirtBackend(Protocol):
    def network(self, name: str, xml: str) -> str: ...

    def pool(self, name: str, path: str, xml: str) -> str: ...

    def volume(self, pool: str, name: str, xml: str, source: VolumeSource | None, size_gib: int) -> str: ...

    def domain(self, name: str, xml: str) -> str: ...

    def autostart(self, name: str, enabled: bool) -> str: ...

    def start(self, name: str) -> str: ...

    def verify(self, networks: tuple[str, ...], pool: str, domains: tuple[DomainCheck, ...]) -> str: ...


class ReportBackend(Protocol):
    def record_success(self) -> str:
        """Write the report and the status, then, last, the done-marker."""
        ...


@dataclass(frozen=True)
class Backends:
    host: HostBackend
    libvirt: LibvirtBackend
    report: ReportBackend
