"""The virtual twin of a catalog model, as data: the machine a unit boots on in the factory. Pure, so it is testable;
twin/qemu.py turns it into QEMU arguments (and the libvirt twin of a later issue will render it as a domain).

What the agent inside checks, the twin presents the way the real box does:
- SMBIOS types 0-3 from the catalog identity (manufacturer, product, SKU, family) with the unit's serial;
- every NIC port at the PCI address the catalog records (hardware/nics.py, as in the facts tree);
- the data disks a unit's datastore rule asks for (hardware/disks.py), solid-state or spinning, with serials.
A NIC is virtio-net (the core has no emulated tg3/bnxt_en): ports the rules find by PCI address match, ports found by
driver (option cards with no fixed address) cannot be rehearsed here and are reported in `notes`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

from oemkit.catalog.schema import HardwareModel
from oemkit.hardware.disks import DiskSpec
from oemkit.hardware.nics import placed_ports, unit_mac


@dataclass(frozen=True)
class TwinNic:
    port: str
    pci_address: str
    mac: str
    speed_mbps: int


@dataclass(frozen=True)
class TwinDisk:
    interface: str  # sata | sas | nvme
    ssd: bool
    size_gib: int
    serial: str
    model: str


@dataclass(frozen=True)
class BootDisk:
    """The twin's embedded boot device: its size (None: the image's own), how it is attached, and what it stands
    for (said on the console)."""

    size: int | None
    bus: str  # virtio: a fixed disk behind a controller (BOSS, M.2); usb: SD/IDSDM kits and USB keys, on USB
    mirror: bool  # two halves only the host's software RAID would assemble (Intel VROC): the core sees two disks
    what: str


@dataclass(frozen=True)
class Smbios:
    """What the twin's firmware reports in SMBIOS types 0-3: the model's identity with the unit's serial."""

    manufacturer: str
    product: str
    serial: str
    uuid: str
    sku: str | None = None
    family: str | None = None
    bios_version: str = "oemkit-twin"


@dataclass(frozen=True)
class Twin:
    model_id: str
    serial: str
    smbios: Smbios
    nics: tuple[TwinNic, ...]
    disks: tuple[TwinDisk, ...]
    notes: tuple[str, ...] = field(default=())


def smbios(model: HardwareModel, serial: str) -> Smbios:
    ident = model.identity
    return Smbios(
        manufacturer=ident.manufacturers[0],
        product=ident.product_names[0],
        serial=serial,
        uuid=str(uuid.uuid5(uuid.NAMESPACE_OID, f"oemkit/{model.id}/{serial}")),
        sku=ident.sku_example,
        family=ident.family,
    )


def nics(model: HardwareModel, serial: str) -> tuple[tuple[TwinNic, ...], tuple[str, ...]]:
    out, notes = [], []
    for port, pci, known in placed_ports(model):
        if not known:
            notes.append(f"{port.id} ({port.driver}) has no catalog PCI address: placed at {pci}, found by driver only")
        out.append(TwinNic(port.id, pci, unit_mac(serial, port.id), port.speed_mbps))
    return tuple(out), tuple(notes)


def disks(specs: list[DiskSpec], serial: str) -> tuple[TwinDisk, ...]:
    out: list[TwinDisk] = []
    for spec in specs:
        for _ in range(spec.count):
            n = len(out)
            digest = hashlib.sha256(f"{serial}/disk{n}".encode()).hexdigest()[:8].upper()
            kind = "SSD" if spec.ssd else "HDD"
            out.append(TwinDisk(spec.interface, spec.ssd, spec.size_gib, f"TW{digest}", f"{kind} {spec.size_gib}G"))
    return tuple(out)


def twin(model: HardwareModel, serial: str, specs: list[DiskSpec]) -> Twin:
    nic_list, notes = nics(model, serial)
    return Twin(model.id, serial, smbios(model, serial), nic_list, disks(specs, serial), notes)
