"""Is this the box the config was built for, and which of its NICs and disks do the rules mean?

Refuses (Refusal, with a reason fit for the console) rather than guessing: a wrong model or serial, a rule nothing
satisfies, and a rule that more than one set of devices could satisfy all stop first boot before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor_core.config import PortRef, UnitConfig, UplinkRule
from hypervisor_core.facts import Disk, Facts, Nic

GIB = 1 << 30


class Refusal(Exception):
    """First boot must not touch this box; `str()` says why."""


@dataclass(frozen=True)
class Matched:
    """What the rules mean on this box: the uplink NICs and datastore disks, and what could not be verified."""

    uplinks: tuple[Nic, ...]
    datastore: tuple[Disk, ...]
    warnings: tuple[str, ...] = ()


def check_identity(cfg: UnitConfig, facts: Facts) -> None:
    why = cfg.identity.mismatch(facts.dmi)
    if why:
        want = f"{cfg.identity.manufacturers[0]} {cfg.identity.product_names[0]}"
        box = f"{facts.dmi.sys_vendor or '?'} {facts.dmi.product_name or '?'}"
        raise Refusal(f"wrong hardware: this config is for {cfg.model} ({want}), this box is {box} ({why})")
    reported = (facts.dmi.product_serial or "").strip()
    if not reported:
        raise Refusal(f"wrong unit: the box reports no serial number; this config is for serial {cfg.serial}")
    if reported.casefold() != cfg.serial.casefold():
        raise Refusal(f"wrong unit: this config is for serial {cfg.serial}, the box is serial {reported}")


def _port_nics(port: PortRef, nics: tuple[Nic, ...], known: tuple[str, ...]) -> tuple[list[Nic], str | None]:
    """The NIC(s) a catalog port is on this box, or why that cannot be told."""
    if port.pci_addresses:
        return [n for n in nics if n.pci_address in port.pci_addresses], None
    # An option card's port: the position-th of the NICs with its driver that are not known embedded ports.
    pool = sorted(
        (n for n in nics if n.driver == port.driver and n.pci_address not in known),
        key=lambda n: n.pci_address or n.name,
    )
    if not pool:
        return [], None
    if port.of is None or len(pool) != port.of:
        names = ", ".join(f"{n.name} ({n.pci_address})" for n in pool)
        return [], (
            f"ambiguous: port {port.id} is one of {port.of} {port.driver} ports of the model, "
            f"but this box has {len(pool)}: {names}"
        )
    return [pool[port.position or 0]], None


def _rule_candidates(rule: UplinkRule, nics: tuple[Nic, ...], known: tuple[str, ...]) -> tuple[list[Nic], str | None]:
    chosen: list[Nic] = []
    for port in rule.ports:
        found, error = _port_nics(port, nics, known)
        if error:
            return [], error
        chosen += [n for n in found if n not in chosen]
    return chosen, None


def resolve_uplinks(cfg: UnitConfig, facts: Facts) -> tuple[tuple[Nic, ...], tuple[str, ...]]:
    """The uplinks, and a warning for each one taken without its speed known (a port with no link reports none)."""
    ups = cfg.management.uplinks
    picked: list[Nic] = []
    unverified: dict[str, str] = {}
    for i, rule in enumerate(ups.rules):
        candidates, error = _rule_candidates(rule, facts.nics, ups.model_addresses)
        if error:
            raise Refusal(f"uplink rule {i + 1} is {error}")
        for nic in candidates:
            if rule.min_speed_mbps and nic.speed_mbps is not None and nic.speed_mbps < rule.min_speed_mbps:
                continue
            if rule.link == "up" and nic.carrier is not True:
                continue
            if rule.min_speed_mbps and nic.speed_mbps is None:
                unverified.setdefault(
                    nic.name,
                    f"uplink {nic.name} ({nic.pci_address}) reports no link speed: "
                    f"rule {i + 1}'s minimum of {rule.min_speed_mbps} Mb/s is not verified",
                )
            if nic not in picked:
                picked.append(nic)
    if len(picked) < ups.count:
        wanted = "; ".join(", ".join(p.id for p in r.ports) or "(no port)" for r in ups.rules)
        found = ", ".join(f"{n.name} ({n.pci_address})" for n in picked) or "none"
        raise Refusal(f"uplinks: {ups.count} wanted ({wanted}), found {len(picked)}: {found}")
    chosen = tuple(picked[: ups.count])
    return chosen, tuple(unverified[n.name] for n in chosen if n.name in unverified)


def resolve_datastore(cfg: UnitConfig, facts: Facts) -> tuple[Disk, ...]:
    rule = cfg.storage.datastore
    fits = [
        d
        for d in facts.disks
        if not d.removable
        and not d.in_use  # never the boot media the core runs from
        and d.interface != "usb"  # nor a USB key or an SD kit on the internal USB port
        and (rule.interface is None or d.interface == rule.interface)
        and (rule.rotational is None or d.rotational is rule.rotational)
        and (rule.min_size_gib is None or d.size_bytes >= rule.min_size_gib * GIB)
    ]
    what = ", ".join(
        f"{k}={v}"
        for k, v in (
            ("interface", rule.interface),
            ("rotational", rule.rotational),
            ("min_size_gib", rule.min_size_gib),
        )
        if v is not None
    )
    if len(fits) < rule.count:
        seen = ", ".join(f"{d.name} ({d.interface}, {d.size_bytes // GIB} GiB)" for d in facts.disks) or "no disks"
        raise Refusal(
            f"datastore: {rule.count} disk(s) with {what or 'any properties'} wanted, "
            f"{len(fits)} found; the box has {seen}"
        )
    if len(fits) > rule.count:
        names = ", ".join(f"{d.name} ({d.model or '?'}, {d.size_bytes // GIB} GiB)" for d in fits)
        raise Refusal(
            f"datastore rule is ambiguous: {rule.count} disk(s) with {what or 'any properties'} wanted, "
            f"{len(fits)} candidates: {names}"
        )
    return tuple(fits)


def check_security(cfg: UnitConfig, facts: Facts) -> None:
    sec = cfg.security
    if sec.require_secure_boot:
        if facts.secure_boot is False:
            raise Refusal("Secure Boot is required but off in this box's firmware")
        if facts.secure_boot is None:
            raise Refusal("Secure Boot is required but this box was not booted through UEFI: it cannot be verified")
    if sec.require_tpm and not facts.tpm:
        raise Refusal("a TPM is required but this box shows none (/sys/class/tpm/tpm0)")


def match(cfg: UnitConfig, facts: Facts) -> Matched:
    check_identity(cfg, facts)
    check_security(cfg, facts)
    uplinks, warnings = resolve_uplinks(cfg, facts)
    return Matched(uplinks, resolve_datastore(cfg, facts), warnings)
