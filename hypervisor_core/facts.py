"""What the box is, read from sysfs and procfs under `root` (a real `/`, or a tree the factory made from a dump).

Only reads; never raises for an odd or missing file — a fact that cannot be read is None, and match decides
whether that matters.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hypervisor_core.identity import DMI_FIELDS, SmbiosIdentity, clean

PCI_ADDRESS = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$"  # domain:bus:device.function, as sysfs names it
_PCI = re.compile(PCI_ADDRESS)
_VIRTIO = re.compile(r"^virtio\d+$")
_SKIP_BLOCK = ("loop", "ram", "dm-", "sr", "zram", "md", "nbd", "fd")


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str | None
    pci_address: str | None
    driver: str | None
    speed_mbps: int | None
    carrier: bool | None


@dataclass(frozen=True)
class Disk:
    name: str
    size_bytes: int
    rotational: bool | None
    removable: bool
    interface: str  # sata, sas, nvme, virtio, scsi, usb
    model: str | None
    serial: str | None
    by_id: str | None = None  # a stable name for the disk, for the host config that assembles the datastore
    in_use: bool = False  # it (or a partition of it) is mounted: the boot media the core runs from


@dataclass(frozen=True)
class Facts:
    dmi: SmbiosIdentity
    cpus: int
    cpu_flags: tuple[str, ...]
    memory_kib: int | None
    nics: tuple[Nic, ...]
    disks: tuple[Disk, ...]
    kvm: bool  # /dev/kvm exists
    secure_boot: bool | None  # None: not booted by UEFI, or unknown
    tpm: bool

    @property
    def virtualization(self) -> str | None:
        return "vmx" if "vmx" in self.cpu_flags else "svm" if "svm" in self.cpu_flags else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Facts:
        return cls(
            dmi=SmbiosIdentity(**d["dmi"]),
            cpus=d["cpus"],
            cpu_flags=tuple(d["cpu_flags"]),
            memory_kib=d["memory_kib"],
            nics=tuple(Nic(**n) for n in d["nics"]),
            disks=tuple(Disk(**x) for x in d["disks"]),
            kvm=d["kvm"],
            secure_boot=d["secure_boot"],
            tpm=d["tpm"],
        )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _dmi(root: Path) -> SmbiosIdentity:
    base = root / "sys/class/dmi/id"
    return SmbiosIdentity(**{name: clean(_read(base / name)) for name in DMI_FIELDS})


def _cpu(root: Path) -> tuple[int, tuple[str, ...]]:
    text = _read(root / "proc/cpuinfo") or ""
    count, flags = 0, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "flags":
            flags.update(value.split())
    return count, tuple(sorted(flags & {"vmx", "svm", "lm", "hypervisor", "aes", "avx2"}))


def _memory(root: Path) -> int | None:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return _int(line.split()[1])
    return None


def _nics(root: Path) -> tuple[Nic, ...]:
    out = []
    base = root / "sys/class/net"
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        device = entry / "device"
        if not device.exists() and not device.is_symlink():
            continue  # lo, bridges, bonds, taps: not hardware
        pci = _pci_address(device)
        speed = _int(_read(entry / "speed"))
        carrier = _read(entry / "carrier")
        out.append(
            Nic(
                name=entry.name,
                mac=_read(entry / "address"),
                pci_address=pci,
                driver=_link_name(device / "driver"),
                speed_mbps=speed if speed and speed > 0 else None,
                carrier=None if carrier is None else carrier == "1",
            )
        )
    return tuple(out)


def _pci_address(device: Path) -> str | None:
    """The PCI function a NIC is: its device link, or, for a virtio NIC (device → virtioN), the PCI function above.
    Anything else (a USB NIC such as the BMC's host interface) has none: never its USB controller's address."""
    try:
        parts = os.path.realpath(device).split("/")
    except OSError:
        return None
    if _PCI.match(parts[-1]):
        return parts[-1]
    if _VIRTIO.match(parts[-1]) and len(parts) > 1 and _PCI.match(parts[-2]):
        return parts[-2]
    return None


def _interface(name: str, device: Path) -> str:
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("vd"):
        return "virtio"
    if "/usb" in os.path.realpath(device):  # a USB stick or the internal USB port: never a datastore disk
        return "usb"
    vendor = _read(device / "vendor") or ""
    if vendor.upper().startswith("ATA"):  # libata (and SAT-passthrough RAID) reports SATA drives as vendor ATA
        return "sata"
    return "sas" if vendor else "scsi"


def _vpd_serial(device: Path) -> str | None:
    """SCSI and SATA disks behind the sd driver have no `serial` file: the unit serial number VPD page (0x80) has it
    (4 header bytes, then the serial in ASCII)."""
    try:
        page = (device / "vpd_pg80").read_bytes()
    except OSError:
        return None
    if len(page) < 4 or page[1] != 0x80:
        return None
    return page[4 : 4 + int.from_bytes(page[2:4], "big")].decode("ascii", "replace").strip("\0 ") or None


def _mounted_devices(root: Path) -> set[str]:
    names = set()
    for line in (_read(root / "proc/mounts") or "").splitlines():
        source = line.split(" ", 1)[0]
        if source.startswith("/dev/"):
            names.add(source.removeprefix("/dev/"))
    return names


def _disks(root: Path) -> tuple[Disk, ...]:
    out = []
    mounted = _mounted_devices(root)
    base = root / "sys/block"
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if entry.name.startswith(_SKIP_BLOCK):
            continue
        sectors = _int(_read(entry / "size")) or 0
        if sectors == 0:
            continue  # empty card readers and the like
        device = entry / "device"
        rotational = _read(entry / "queue/rotational")
        out.append(
            Disk(
                name=entry.name,
                size_bytes=sectors * 512,
                rotational=None if rotational is None else rotational == "1",
                removable=_read(entry / "removable") == "1",
                interface=_interface(entry.name, device),
                model=clean(_read(device / "model")),
                serial=clean(_read(device / "serial") or _read(entry / "serial") or _vpd_serial(device)),
                by_id=clean(_read(device / "wwid") or _read(entry / "wwid")),
                in_use=any(_is_part_of(m, entry.name) for m in mounted),
            )
        )
    return tuple(out)


def _is_part_of(device: str, disk: str) -> bool:
    """sda1 → sda, nvme0n1p2 → nvme0n1; sdaa is not part of sda."""
    rest = device.removeprefix(disk) if device.startswith(disk) else None
    return rest is not None and (rest == "" or rest.lstrip("p").isdigit())


def _secure_boot(root: Path) -> bool | None:
    efivars = root / "sys/firmware/efi/efivars"
    if not (root / "sys/firmware/efi").is_dir():
        return None
    for var in efivars.glob("SecureBoot-*") if efivars.is_dir() else []:
        try:
            data = var.read_bytes()
        except OSError:
            return None
        return len(data) >= 5 and data[4] == 1  # 4 bytes of attributes, then the value
    return None


def probe(root: Path = Path("/")) -> Facts:
    cpus, flags = _cpu(root)
    return Facts(
        dmi=_dmi(root),
        cpus=cpus,
        cpu_flags=flags,
        memory_kib=_memory(root),
        nics=_nics(root),
        disks=_disks(root),
        kvm=(root / "dev/kvm").exists(),
        secure_boot=_secure_boot(root),
        tpm=(root / "sys/class/tpm/tpm0").exists(),
    )


def load_facts(path: Path) -> Facts:
    """A facts JSON file (as `to_dict` writes it), or a root folder to probe."""
    if path.is_dir():
        return probe(path)
    return Facts.from_dict(json.loads(path.read_text()))
