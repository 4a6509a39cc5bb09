"""A catalog model's NIC ports as a rehearsed box shows them: where each sits on PCI, its MAC, its name.

Shared by the facts tree and the QEMU twin, so a port is at the same address, with the same MAC, on both.
"""

from __future__ import annotations

import hashlib

from oemkit.catalog.schema import HardwareModel, NicPort

SPARE_BUS = 0xE0  # where ports with no known address (option cards) are put: a bus no real board uses


def unit_mac(serial: str, port: str) -> str:
    d = hashlib.sha256(f"{serial}/{port}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in d[:5])  # locally administered: never a real vendor OUI


def placed_ports(model: HardwareModel) -> list[tuple[NicPort, str, bool]]:
    """(port, PCI address, known) for every port: the catalog's address, or one on a spare bus of its own for an
    option card whose address no real unit told us (known is False: found by driver only)."""
    out = []
    for i, port in enumerate(model.nics):
        if port.pci_address is not None:
            out.append((port, port.pci_address, True))
        else:
            out.append((port, f"0000:{SPARE_BUS + i // 8:02x}:00.{i % 8}", False))
    return out


def ifname(pci: str) -> str:
    """systemd's predictable name for a PCI NIC: 0000:04:00.1 → enp4s0f1."""
    _, bus, devfn = pci.split(":")
    dev, fn = devfn.split(".")
    return f"enp{int(bus, 16)}s{int(dev, 16)}f{int(fn)}"
