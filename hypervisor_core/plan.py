"""UnitConfig + Facts (+ what match resolved) → an ordered plan of small frozen steps with stable ids. Pure.

Each step says what must be true afterwards, not how to get there; backends make it true idempotently (look up,
then define), which is what lets a rerun after a crash converge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypervisor_core.config import UnitConfig, plain
from hypervisor_core.facts import Facts
from hypervisor_core.match import Resolution
from hypervisor_core.render import bridge_name, domain_xml, network_xml, pool_xml, volume_name, volume_xml

STATE_DIR = "var/lib/oemkit"
POOL_DIR = "var/lib/oemkit/pools"


@dataclass(frozen=True)
class Step:
    id: str  # stable across runs: the journal and the report refer to it
    kind: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.args)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "args": plain(self.params)}


def _step(step_id: str, kind: str, **args: Any) -> Step:
    return Step(step_id, kind, tuple(args.items()))


def domain_type(facts: Facts) -> str:
    """kvm when the box has /dev/kvm and a virtualization extension; plain emulation otherwise."""
    return "kvm" if facts.kvm and facts.virtualization else "qemu"


def make_plan(cfg: UnitConfig, facts: Facts, res: Resolution, root: str) -> tuple[Step, ...]:
    mgmt = cfg.management
    steps: list[Step] = [
        _step("host.machine-id", "host.machine-id"),
        _step("host.ssh-host-keys", "host.ssh-host-keys", enabled=cfg.security.ssh),
        _step("host.hostname", "host.hostname", hostname=cfg.host.hostname),
        _step(
            "host.settings",
            "host.settings",
            timezone=cfg.host.timezone,
            ntp=list(cfg.host.ntp),
            dns_servers=list(cfg.host.dns.servers),
            dns_search=list(cfg.host.dns.search),
        ),
        _step(
            "host.management-network",
            "host.network",
            uplinks=[{"name": n.name, "mac": n.mac, "pci_address": n.pci_address} for n in res.uplinks],
            bond=mgmt.bond,
            vlan=mgmt.vlan,
            address=mgmt.address.mode,
            cidr=mgmt.address.address,
            gateway=mgmt.address.gateway,
            bridges=[
                {"network": n.name, "bridge": bridge_name(n.name), "vlan": n.vlan}
                for n in cfg.networks
                if n.mode == "bridge"
            ],
        ),
        _step(
            "host.users",
            "host.users",
            admins=[
                {"name": a.name, "password_hash": a.password_hash, "ssh_keys": list(a.ssh_keys)}
                for a in cfg.security.admins
            ],
            ssh=cfg.security.ssh,
            lockdown=cfg.security.lockdown,
        ),
        _step(
            "host.datastore",
            "host.datastore",
            layout=cfg.storage.layout,
            pool=cfg.storage.pool,
            disks=[
                {"name": d.name, "serial": d.serial, "by_id": d.by_id, "size_bytes": d.size_bytes}
                for d in res.datastore
            ],
        ),
    ]
    for net in cfg.networks:
        steps.append(
            _step(f"libvirt.network.{net.name}", "libvirt.network", name=net.name, xml=network_xml(net, cfg.serial))
        )
    pool = cfg.storage.pool
    pool_path = f"{root.rstrip('/')}/{POOL_DIR}/{pool}"
    steps.append(
        _step(
            f"libvirt.pool.{pool}", "libvirt.pool", name=pool, path=pool_path, xml=pool_xml(pool, pool_path, cfg.serial)
        )
    )
    kind = domain_type(facts)
    for vm in cfg.workloads:
        for disk in vm.disks:
            vol = volume_name(vm.name, disk.name)
            src = disk.source
            steps.append(
                _step(
                    f"libvirt.volume.{pool}.{vol}",
                    "libvirt.volume",
                    pool=pool,
                    name=vol,
                    xml=volume_xml(vol, disk.size_gib, src.format if src else "qcow2"),
                    source={"url": src.url, "sha256": src.sha256} if src else None,
                    size_gib=disk.size_gib,
                )
            )
    for vm in cfg.workloads:
        steps.append(
            _step(
                f"libvirt.domain.{vm.name}",
                "libvirt.domain",
                name=vm.name,
                xml=domain_xml(vm, pool, cfg.serial, cfg.content_id, kind),
            )
        )
    for vm in cfg.workloads:
        steps.append(_step(f"libvirt.autostart.{vm.name}", "libvirt.autostart", name=vm.name, enabled=vm.autostart))
    for vm in sorted((w for w in cfg.workloads if w.autostart), key=lambda w: (w.start_order, w.name)):
        steps.append(_step(f"libvirt.start.{vm.name}", "libvirt.start", name=vm.name, order=vm.start_order))
    steps.append(
        _step(
            "verify",
            "verify",
            networks=[n.name for n in cfg.networks],
            pool=pool,
            domains=[{"name": w.name, "autostart": w.autostart} for w in cfg.workloads],
        )
    )
    steps.append(_step("report", "report"))
    return tuple(steps)


def plan_json(plan: tuple[Step, ...]) -> str:
    return json.dumps([s.to_dict() for s in plan], indent=2, sort_keys=True) + "\n"
