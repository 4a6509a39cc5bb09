"""The management network for a report only: a box whose first boot failed before it configured its network (a
refusal: a disk missing, a port without a cable) still has to tell the central team. Run by the init before phone
home when first boot left no etc/oemkit/network.json.

The uplinks are the config's own rules resolved on this box (the same rule first boot uses, hypervisor_core/match.py),
with the config's bond, VLAN and address, and no guest bridges; the kernel is configured (hostnet.apply), nothing
is written under etc/oemkit, so the next boot starts as unconfigured as this one did. The config must verify with
the factory key first, as for the agent: an unsigned config never makes the box put itself on a network. A box
that is not the unit its config names stays off the network unless the profile asks to report a mismatch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hypervisor_core import hostnet, layout
from hypervisor_core.config import UnitConfig, files
from hypervisor_core.facts import Facts, probe
from hypervisor_core.fsutil import write_atomic
from hypervisor_core.layout import Layout
from hypervisor_core.match import Refusal, check_identity, resolve_uplinks


def network(cfg: UnitConfig, facts: Facts) -> dict[str, Any]:
    """The management network `cfg` asks for on this box, as hostnet applies it; Refusal when it cannot be had.
    Pure."""
    if cfg.firstboot.on_hardware_mismatch != "report":
        check_identity(cfg, facts)  # a wrong box keeps quiet unless told to report it
    uplinks, _ = resolve_uplinks(cfg, facts)
    mgmt = cfg.management
    return {
        "uplinks": [{"name": n.name, "mac": n.mac, "pci_address": n.pci_address} for n in uplinks],
        "bond": mgmt.bond,
        "vlan": mgmt.vlan,
        "address": mgmt.address.mode,
        "cidr": mgmt.address.address,
        "gateway": mgmt.address.gateway,
        "bridges": [],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m hypervisor_core.reportnet", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/"))
    ap.add_argument("--netns", help="apply inside this network namespace (tests)")
    args = ap.parse_args(argv)
    state = Layout(args.root.resolve())
    try:
        cfg = files.load_verified(state.unit_config, state.factory_key)
    except files.InputError as exc:
        print(f"report network: none ({exc})")
        return 1
    if (state.root / layout.NETWORK_CONFIG).exists():
        print("report network: first boot configured the management network")
        return 0
    run = hostnet.ip_runner(args.netns)
    if any(rule.link == "up" for rule in cfg.management.uplinks.rules):  # a down port shows no carrier: raise them
        try:
            hostnet.bring_up([nic.name for nic in probe(state.root).nics], run)
        except hostnet.HostNetError as exc:
            print(f"report network: warning: {exc}", file=sys.stderr)
    try:
        net = network(cfg, probe(state.root))
        hostnet.apply(net, run)
    except (Refusal, hostnet.HostNetError) as exc:
        print(f"report network: none ({exc})")
        return 1
    resolv = state.root / layout.RESOLV_CONF
    if cfg.host.dns.servers and not resolv.exists():  # a phone-home URL by name needs the site's resolvers
        write_atomic(resolv, "".join(f"nameserver {s}\n" for s in cfg.host.dns.servers), 0o644)
    ports = ", ".join(u["name"] for u in net["uplinks"])
    how = net["cidr"] if net["address"] == "static" else "DHCP"
    if net["vlan"]:
        how += f", VLAN {net['vlan']}"
    print(f"report network: {net['bond'] or 'single'} over {ports}, {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
