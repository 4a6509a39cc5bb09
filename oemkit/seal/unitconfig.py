"""A checked profile, its site and one catalog model → the agent's own typed UnitConfig, for one serial.

Everything the factory can resolve is resolved here (host name, site values, branding, workloads, the expected
SMBIOS identity); what only the box can answer stays a rule (which NIC is the uplink, which disks form the
datastore), with the catalog's knowledge of each candidate port attached. The objects are the agent's
(hypervisor_core.config), so what is built here is exactly what the box reads: no dict in between.

An order seals thousands of units from a handful of (profile, site, model) triples, so everything but the serial
and the host name is built once, as a Blueprint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypervisor_core import config as unit
from oemkit import __version__
from oemkit.catalog.schema import HardwareModel, NicPort
from oemkit.profile.schema import ApplianceProfile, Host, SiteOverlay


def port_ref(port: NicPort, model: HardwareModel) -> unit.PortRef:
    addresses = tuple(a for a in (port.pci_address, *port.alt_pci_addresses) if a)
    if addresses:
        return unit.PortRef(port.id, addresses, port.driver)
    siblings = [n for n in model.nics if not n.pci_address and not n.alt_pci_addresses and n.driver == port.driver]
    return unit.PortRef(port.id, (), port.driver, siblings.index(port), len(siblings))


def _uplinks(p: ApplianceProfile, model: HardwareModel) -> unit.Uplinks:
    select = p.network.management.uplinks
    rules = tuple(
        unit.UplinkRule(
            tuple(port_ref(n, model) for n in model.nics if rule.matches(n)), rule.min_speed_mbps, rule.link
        )
        for rule in select.select
    )
    known = tuple(sorted(a for n in model.nics for a in (n.pci_address, *n.alt_pci_addresses) if a))
    return unit.Uplinks(rules, select.count, known)


def _management(p: ApplianceProfile, model: HardwareModel) -> unit.Management:
    mgmt = p.network.management
    if mgmt.address is None:
        raise ValueError("management.address is a site value the checked profile must have")
    address = (
        unit.Address("dhcp")
        if mgmt.address == "dhcp"
        else unit.Address("static", mgmt.address.address, mgmt.address.gateway)
    )
    return unit.Management(_uplinks(p, model), address, mgmt.bond, mgmt.vlan)


def _host(host: Host, hostname: str) -> unit.Host:
    if host.timezone is None:
        raise ValueError("host.timezone is a site value the checked profile must have")
    dns = unit.Dns(tuple(host.dns.servers), tuple(host.dns.search))
    return unit.Host(hostname, host.timezone, tuple(host.ntp), dns)


def _workloads(p: ApplianceProfile) -> tuple[unit.Workload, ...]:
    return tuple(
        unit.Workload(
            vm.name,
            vm.vcpus,
            vm.memory_mib,
            tuple(
                unit.VmDisk(
                    d.name,
                    d.size_gib,
                    unit.DiskSource(d.source.url, d.source.sha256, d.source.format) if d.source else None,
                )
                for d in vm.disks
            ),
            tuple(vm.networks),
            vm.autostart,
            vm.start_order,
        )
        for vm in p.workloads.vms
    )


@dataclass(frozen=True)
class Blueprint:
    """A unit config without its serial: one per (profile + site, model) of an order."""

    template: unit.UnitConfig  # a placeholder serial and host name, never signed nor written
    host: Host

    def hostname(self, serial: str) -> str:
        return self.host.render(site=self.template.site, serial=serial, model=self.template.model)

    def unit(self, serial: str) -> unit.UnitConfig:
        """The (unsigned) config of one unit: the serial and the host name it renders for that serial."""
        host = replace(self.template.host, hostname=self.hostname(serial))
        return replace(self.template, serial=serial, host=host)


def blueprint(p: ApplianceProfile, site: SiteOverlay, model: HardwareModel) -> Blueprint:
    """Raises ValueError (a schema rule) or ConfigError (an agent invariant) for what cannot be a unit config."""
    sec = p.security
    phone = p.management.phone_home
    template = unit.UnitConfig(
        schema=unit.SCHEMA,
        serial="blueprint",
        model=model.id,
        site=site.site.code,
        profile=p.metadata.name,
        compiled_by=f"oemkit {__version__}",
        identity=model.identity.spec(),
        host=_host(p.host, "blueprint"),
        management=_management(p, model),
        networks=tuple(unit.GuestNetwork(n.name, n.mode, n.vlan, n.cidr) for n in p.network.guest),
        storage=unit.Storage(
            unit.DiskRule(
                p.storage.datastore.count,
                p.storage.datastore.interface,
                p.storage.datastore.rotational,
                p.storage.datastore.min_size_gib,
            ),
            p.storage.layout,
            p.storage.pool,
        ),
        security=unit.Security(
            tuple(unit.Admin(a.name, a.password_hash, tuple(a.ssh_keys)) for a in sec.admins),
            sec.ssh,
            sec.lockdown,
            sec.require_secure_boot,
            sec.require_tpm,
        ),
        branding=unit.Branding(
            p.branding.oem_name, p.branding.product, p.branding.powered_by, p.branding.support_url, p.branding.banner
        ),
        workloads=_workloads(p),
        firstboot=unit.FirstBoot(p.firstboot.on_hardware_mismatch, p.firstboot.timeout_seconds),
        phone_home=unit.PhoneHome(phone.url, phone.interval_seconds, phone.ca_pem) if phone else None,
    )
    return Blueprint(template, p.host)


__all__ = ["Blueprint", "blueprint", "port_ref"]
