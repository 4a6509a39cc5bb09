"""Cross-checks of a validated profile: against itself (names, references, addresses) and against the hardware
catalog model(s) it targets. Each finding is a Problem located where the offending value was last set."""

from __future__ import annotations

import difflib
import ipaddress

from oemkit.catalog.schema import HardwareModel
from oemkit.catalog.store import Catalog
from oemkit.problems import format_path
from oemkit.profile.resolve import ResolvedProfile
from oemkit.profile.schema import ApplianceProfile, DiskRule, StaticAddress, hostname_problem
from oemkit.profile.schema.rules import MAX_SERIAL, MAX_SITE, MIN_SERIAL, MIN_SITE

HOST_THREADS_PER_CORE = 2  # every catalogued CPU family has SMT/Hyper-Threading


def lint(res: ResolvedProfile, catalog: Catalog) -> None:
    p = res.profile
    if p is None:
        return
    _start_orders(res, p)
    _references(res, p)
    _addresses(res, p)
    _hostname(res, p)
    for i, model_id in enumerate(p.models):
        model = catalog.get(model_id)
        if model is None:
            close = difflib.get_close_matches(model_id, catalog.ids, n=1, cutoff=0.6)
            res.problem(
                ("models", i),
                f"{model_id!r} is not in the hardware catalog",
                hint=f"did you mean {close[0]!r}?" if close else "see `oemkit catalog list`",
            )
            continue
        _uplinks(res, p, model, i)
        _datastore(res, p, model)
        _firmware(res, p, model)
        _capacity(res, p, model)


def _start_orders(res: ResolvedProfile, p: ApplianceProfile) -> None:
    # (Duplicate names are found per layer, before merging, in resolve.py: a merge by name would hide them here.)
    orders: dict[int, str] = {}
    for v, vm in enumerate(p.workloads.vms):
        if vm.autostart and vm.start_order in orders:
            res.problem(
                ("workloads", "vms", v, "start_order"),
                f"VMs {orders[vm.start_order]!r} and {vm.name!r} share start_order {vm.start_order}: "
                "their start order is undefined",
                "warning",
            )
        orders.setdefault(vm.start_order, vm.name)


def _references(res: ResolvedProfile, p: ApplianceProfile) -> None:
    defined = [n.name for n in p.network.guest]
    used = {net for vm in p.workloads.vms for net in vm.networks}
    for g, net in enumerate(p.network.guest):
        if net.name not in used and p.workloads.vms:
            res.problem(
                ("network", "guest", g, "name"),
                f"guest network {net.name!r} is used by no VM",
                "warning",
                hint="a typo in a site overlay's name adds a new network instead of changing one",
            )
    for v, vm in enumerate(p.workloads.vms):
        for j, ref in enumerate(vm.networks):
            if ref not in defined:
                close = difflib.get_close_matches(ref, defined, n=1)
                res.problem(
                    ("workloads", "vms", v, "networks", j),
                    f"VM {vm.name!r} is attached to undefined network {ref!r}",
                    hint=f"did you mean {close[0]!r}?"
                    if close
                    else f"define it under network.guest ({', '.join(defined) or 'none defined'})",
                )


def _addresses(res: ResolvedProfile, p: ApplianceProfile) -> None:
    mgmt = p.network.management
    vlans: dict[int, tuple[str | int, ...]] = {}
    if mgmt.vlan is not None:
        vlans[mgmt.vlan] = ("network", "management", "vlan")
    nets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[str | int, ...]]] = []
    if isinstance(mgmt.address, StaticAddress):
        nets.append((ipaddress.ip_interface(mgmt.address.address).network, ("network", "management", "address")))
    for g, net in enumerate(p.network.guest):
        if net.vlan is not None:
            here = ("network", "guest", g, "vlan")
            if net.vlan in vlans:
                # blamed on whichever of the two a later layer set: a site that reuses the base's VLAN is the cause
                first = vlans[net.vlan]
                at, used = (first, here) if res.where(first).layer > res.where(here).layer else (here, first)
                res.problem(at, f"VLAN {net.vlan} is already used by {format_path(used)}")
            vlans.setdefault(net.vlan, here)
        if net.cidr:
            cidr = ipaddress.ip_network(net.cidr)
            for other, where in nets:
                if cidr.version == other.version and cidr.overlaps(other):
                    res.problem(
                        ("network", "guest", g, "cidr"), f"{cidr} overlaps {other} ({'.'.join(str(x) for x in where)})"
                    )
            nets.append((cidr, ("network", "guest", g, "cidr")))
    if mgmt.bond and mgmt.uplinks.count == 1:
        res.problem(
            ("network", "management", "bond"),
            "a bond over one uplink adds nothing",
            "warning",
            hint="set uplinks.count to 2 or more, or remove bond",
        )


def _hostname(res: ResolvedProfile, p: ApplianceProfile) -> None:
    """The host name every unit will render, checked as far as it can be known: with the site and serial given,
    exactly (for every model); with either unknown, an error if even the shortest possible one is too long, a
    warning if the longest possible one would be."""
    template, where = p.host.hostname, ("host", "hostname")
    if "{site}" in template and res.site is None:
        res.problem(where, "uses {site}: the site overlay supplies it", "warning")
    site = res.site.site.code if res.site else None
    serial = res.unit.serial if res.unit else None
    for model in p.models:
        why = hostname_problem(p.host.render(site or "a" * MIN_SITE, serial or "a" * MIN_SERIAL, model))
        if why:
            unknown = " and ".join(w for w, v in (("site code", site), ("serial", serial)) if v is None)
            res.problem(where, why + (f", whatever the {unknown}" if unknown else ""))
            return
    if site is None or serial is None:
        longest = max(p.models, key=len)
        why = hostname_problem(p.host.render(site or "a" * MAX_SITE, serial or "a" * MAX_SERIAL, longest))
        if why:
            long = ", ".join(
                f"a {n}-character {w}" for w, v, n in (("site code", site, MAX_SITE), ("serial", serial, MAX_SERIAL))
                if v is None and ("{site}" if w == "site code" else "{serial}") in template
            )  # fmt: skip
            res.problem(where, f"with {long or 'the longest values'} it {why}", "warning")


def _uplinks(res: ResolvedProfile, p: ApplianceProfile, model: HardwareModel, mi: int) -> None:
    uplinks = p.network.management.uplinks
    base = ("network", "management", "uplinks")
    usable: set[str] = set()
    ports = ", ".join(n.id for n in model.nics)
    for r, rule in enumerate(uplinks.select):
        if rule.port is not None and rule.port not in {n.id for n in model.nics}:
            res.problem(
                (*base, "select", r, "port"), f"{model.id} has no port {rule.port!r}", hint=f"its ports: {ports}"
            )
            continue
        matched = [n.id for n in model.nics if rule.matches(n)]
        if not matched:
            res.problem(
                (*base, "select", r),
                f"no port of {model.id} satisfies this rule",
                hint="its ports: "
                + ", ".join(f"{n.id} ({n.kind}, {n.speed_mbps} Mb/s, {n.media})" for n in model.nics),
            )
        usable.update(matched)
    if usable and len(usable) < uplinks.count:
        res.problem(
            (*base, "count"),
            f"{uplinks.count} uplinks wanted, but the rules match only "
            f"{len(usable)} port(s) of {model.id}: {', '.join(sorted(usable))}",
        )


def _datastore(res: ResolvedProfile, p: ApplianceProfile, model: HardwareModel) -> None:
    rule: DiskRule = p.storage.datastore
    bays = [b for b in model.storage.bays if rule.interface is None or rule.interface in b.interfaces]
    where = ("storage", "datastore")
    if bays and rule.rotational:  # an HDD needs a 2.5"/3.5" SATA or SAS bay; E3.S and NVMe-only bays take none
        bays = [b for b in bays if b.size in ("2.5in", "3.5in") and {"sata", "sas"} & set(b.interfaces)]
        if not bays:
            res.problem((*where, "rotational"), f"{model.id} has no bays that take an HDD (SATA or SAS, 2.5 or 3.5 in)")
            return
    if not bays:
        offered = sorted({i for b in model.storage.bays for i in b.interfaces})
        res.problem(
            (*where, "interface"),
            f"{model.id} has no {rule.interface} drive bays",
            hint=f"its bays take {', '.join(offered)}",
        )
        return
    most = max(b.count for b in bays)
    if rule.count > most:
        res.problem(
            (*where, "count"),
            f"{rule.count} disks wanted, but {model.id} has at most {most} {rule.interface or ''} bays".replace(
                "  ", " "
            ),
        )


def _firmware(res: ResolvedProfile, p: ApplianceProfile, model: HardwareModel) -> None:
    if p.security.require_secure_boot and not model.firmware.secure_boot:
        res.problem(("security", "require_secure_boot"), f"{model.id} firmware has no UEFI Secure Boot")
    if p.security.require_tpm and model.firmware.tpm != "2.0":
        res.problem(("security", "require_tpm"), f"{model.id} has no TPM 2.0 (catalog: {model.firmware.tpm})")


def _capacity(res: ResolvedProfile, p: ApplianceProfile, model: HardwareModel) -> None:
    w = p.workloads
    if not w.vms:
        return
    threads = model.cpu.sockets * model.cpu.max_cores_per_socket * HOST_THREADS_PER_CORE
    vcpus = sum(vm.vcpus for vm in w.vms)
    allowed = int(threads * w.overcommit.cpu)
    if vcpus > allowed:
        res.problem(
            ("workloads", "vms"),
            f"{vcpus} vCPUs in total, but {model.id} has at most {threads} hardware "
            f"threads x overcommit {w.overcommit.cpu} = {allowed}",
        )
    ram_mib = (model.memory.supported_max_gib or model.memory.max_gib) * 1024
    guest = sum(vm.memory_mib for vm in w.vms)
    allowed_mib = int((ram_mib - w.host_reserved_mib) * w.overcommit.memory)
    if guest > allowed_mib:
        res.problem(
            ("workloads", "vms"),
            f"{guest} MiB of guest memory, but {model.id} takes at most {ram_mib} MiB "
            f"(minus {w.host_reserved_mib} reserved, x overcommit {w.overcommit.memory} = {allowed_mib})",
        )
