"""UnitConfig + Facts + what match bound on this box → the plan: an ordered tuple of actions. Pure.

The order is the order of dependencies: the host's identity and files, then networks before the pool, volumes
before the domains that use them, autostart, starts by start_order, a read-back check, and the report last.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypervisor_core.actions import (
    Action,
    CreateVolume,
    DefineDomain,
    DefineNetwork,
    DefinePool,
    RecordDatastore,
    Report,
    SetAutostart,
    SetHostname,
    SetMachineId,
    SetSshHostKeys,
    StartDomain,
    Verify,
    WriteNetwork,
    WriteSettings,
    WriteUsers,
)
from hypervisor_core.backends import BridgePort, DatastoreDisk, DomainCheck, UplinkPort, UserAccount, VolumeSource
from hypervisor_core.config import UnitConfig
from hypervisor_core.facts import Facts
from hypervisor_core.layout import Layout
from hypervisor_core.match import Matched
from hypervisor_core.render import bridge_name, domain_xml, network_xml, pool_xml, volume_name, volume_xml

Plan = tuple[Action, ...]


def domain_type(facts: Facts) -> str:
    """kvm when the box has /dev/kvm and a virtualization extension; plain emulation otherwise."""
    return "kvm" if facts.kvm and facts.virtualization else "qemu"


def _host(cfg: UnitConfig, bound: Matched) -> list[Action]:
    mgmt, sec = cfg.management, cfg.security
    return [
        SetMachineId(),
        SetSshHostKeys(sec.ssh),
        SetHostname(cfg.host.hostname),
        WriteSettings(cfg.host.timezone, cfg.host.ntp, cfg.host.dns.servers, cfg.host.dns.search),
        WriteNetwork(
            uplinks=tuple(UplinkPort(n.name, n.mac, n.pci_address) for n in bound.uplinks),
            bond=mgmt.bond,
            vlan=mgmt.vlan,
            address=mgmt.address.mode,
            cidr=mgmt.address.address,
            gateway=mgmt.address.gateway,
            bridges=tuple(BridgePort(n.name, bridge_name(n.name), n.vlan) for n in cfg.networks if n.mode == "bridge"),
        ),
        WriteUsers(tuple(UserAccount(a.name, a.password_hash, a.ssh_keys) for a in sec.admins), sec.ssh, sec.lockdown),
        RecordDatastore(
            cfg.storage.layout,
            cfg.storage.pool,
            tuple(DatastoreDisk(d.name, d.serial, d.by_id, d.size_bytes) for d in bound.datastore),
        ),
    ]


def make_plan(cfg: UnitConfig, facts: Facts, bound: Matched, root: str) -> Plan:
    steps = _host(cfg, bound)
    steps += [DefineNetwork(net.name, network_xml(net, cfg.serial)) for net in cfg.networks]
    pool = cfg.storage.pool
    pool_path = str(Layout(Path(root)).pool_dir(pool))
    steps.append(DefinePool(pool, pool_path, pool_xml(pool, pool_path, cfg.serial)))
    for vm in cfg.workloads:
        for disk in vm.disks:
            vol, src = volume_name(vm.name, disk.name), disk.source
            fmt = src.format if src else "qcow2"
            image = VolumeSource(src.url, src.sha256) if src else None
            steps.append(CreateVolume(pool, vol, volume_xml(vol, disk.size_gib, fmt), image, disk.size_gib))
    kind = domain_type(facts)
    steps += [DefineDomain(vm.name, domain_xml(vm, pool, cfg.serial, cfg.content_id, kind)) for vm in cfg.workloads]
    steps += [SetAutostart(vm.name, vm.autostart) for vm in cfg.workloads]
    started = sorted((w for w in cfg.workloads if w.autostart), key=lambda w: (w.start_order, w.name))
    steps += [StartDomain(vm.name, vm.start_order) for vm in started]
    steps.append(
        Verify(
            tuple(n.name for n in cfg.networks), pool, tuple(DomainCheck(w.name, w.autostart) for w in cfg.workloads)
        )
    )
    steps.append(Report())
    return tuple(steps)


def plan_json(plan: Plan) -> str:
    return json.dumps([a.to_dict() for a in plan], indent=2, sort_keys=True) + "\n"
