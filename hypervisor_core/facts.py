"""What the box is, read from sysfs and procfs under `root` (a real `/`, or a tree the factory made from a dump).

Only reads; never raises for an odd or missing file — a fact that cannot be read is None, and match decides
whether that matters. Every file is read through `fsutil.read_regular`: a FIFO, a device or a folder planted
where a value should be is a value that cannot be read (None), never a read that hangs or never ends.

A facts JSON (`Facts.to_dict`, what `oemkit facts probe` prints) is read as strictly as the unit config: bounded,
strict JSON, every key known and every value of its type (FactsError names the path).
"""

from __future__ import annotations

import functools
import json
import os
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from hypervisor_core import bank, layout, tpm
from hypervisor_core.config import parse_json
from hypervisor_core.fsutil import read_regular
from hypervisor_core.identity import DMI_FIELDS, SmbiosIdentity, clean

PCI_ADDRESS = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$"  # domain:bus:device.function, as sysfs names it
_PCI = re.compile(PCI_ADDRESS)
_VIRTIO = re.compile(r"^virtio\d+$")
_SKIP_BLOCK = ("loop", "ram", "dm-", "sr", "zram", "md", "nbd", "fd")
MAX_FILE_BYTES = 4 << 20  # one sysfs or procfs file; /proc/cpuinfo of a 512-thread box is under 1 MiB
MAX_FACTS_BYTES = 4 << 20  # a facts JSON is a few KiB (the factory's LIMITS["facts"] is the same)
MAX_FACTS_DEPTH = 8  # it nests 3 deep (facts → nics → a NIC)
DISK_INTERFACES = ("sata", "sas", "nvme", "virtio", "scsi", "usb")


class FactsError(ValueError):
    """A facts document that is not one: `str()` names the first offending path (`facts: nics[2].mac: ...`)."""


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
    in_use: bool = False  # it (or a partition of it) is mounted, or it carries the appliance: boot media
    holds_state: bool = False  # the core's state lives on it (first boot moved it there from SD/USB)


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
    boot_bank: str | None = None  # the appliance bank systemd-boot started (hypervisor_core/bank.py), if any
    pcr15: str | None = None  # the TPM's PCR 15 (sha256) as first boot found it: the init measured the config
    on_trial: bool = False  # the booted bank is still counted by systemd-boot (an upgrade not yet blessed)

    @property
    def virtualization(self) -> str | None:
        return "vmx" if "vmx" in self.cpu_flags else "svm" if "svm" in self.cpu_flags else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Facts:
        """Strictly, from the JSON shape `to_dict` gives: unknown keys, missing keys (but those added later, which
        have defaults) and wrong types raise FactsError with the path."""
        built = _build(cls, d, "")
        assert isinstance(built, Facts)
        return built


# ------------------------------------------------------------------------------------ a facts JSON, strictly
@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    return typing.get_type_hints(tp)


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # from_dict called with data that never was JSON
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _plain_name(value: str) -> bool:
    """A device name as sysfs spells one: printable, no white space, no slash, not . or .. (nor empty)."""
    return value.isprintable() and value not in ("", ".", "..") and not any(c.isspace() or c == "/" for c in value)


def _check(owner: type, name: str, value: Any) -> str | None:
    """What is wrong with a well-typed field value, beyond its type (None: nothing)."""
    if isinstance(value, str) and not value.isprintable():  # a line break or an escape sequence for the console
        return f"{_got(value)} holds a control character"
    if owner in (Nic, Disk) and name == "name" and not _plain_name(value):
        return f"{_got(value)} is not a device name"
    if owner is Nic and name == "pci_address" and value is not None and not _PCI.fullmatch(value):
        return f"{_got(value)} is not a PCI address (dddd:bb:dd.f)"
    if owner is Disk and name == "interface" and value not in DISK_INTERFACES:
        return f"{_got(value)} is not one of {list(DISK_INTERFACES)}"
    return None


def _build(tp: Any, value: Any, path: str) -> Any:
    where = f"facts: {path}: " if path else "facts: "
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, path)  # every union here is `X | None`
    if origin is tuple:
        if not isinstance(value, list):
            raise FactsError(f"{where}expected a list, got {_got(value)}")
        item = typing.get_args(tp)[0]
        return tuple(_build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(value, dict):
            raise FactsError(f"{where}expected an object, got {_got(value)}")
        hints = _hints(tp)
        unknown = sorted(str(k) for k in value if k not in {f.name for f in fields(tp)})
        if unknown:
            raise FactsError(f"{where}unknown key {unknown[0]!r}")
        kwargs = {}
        for f in fields(tp):
            sub = f"{path}.{f.name}" if path else f.name
            if f.name not in value:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise FactsError(f"facts: {sub}: missing")
                continue
            kwargs[f.name] = built = _build(hints[f.name], value[f.name], sub)
            problem = _check(tp, f.name, built)
            if problem:
                raise FactsError(f"facts: {sub}: {problem}")
        return tp(**kwargs)
    if tp is bool:
        if not isinstance(value, bool):
            raise FactsError(f"{where}expected true or false, got {_got(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise FactsError(f"{where}expected an integer, got {_got(value)}")
        if value < 0:
            raise FactsError(f"{where}expected a non-negative integer, got {value}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise FactsError(f"{where}expected a string, got {_got(value)}")
        return value
    raise AssertionError(f"facts: {path}: no reader for {tp!r}")  # a field type this module does not know


def parse_facts(raw: bytes) -> Facts:
    """A facts JSON document (bounded, strict JSON, strictly typed), or FactsError."""
    if len(raw) > MAX_FACTS_BYTES:
        raise FactsError(f"facts: {len(raw)} bytes; the limit is {MAX_FACTS_BYTES}")
    try:
        data = parse_json(raw, max_depth=MAX_FACTS_DEPTH)
    except ValueError as exc:
        raise FactsError(f"facts: not valid JSON ({exc})") from None
    return Facts.from_dict(data)


# ------------------------------------------------------------------------------------------ a root, probed
def _read_bytes(path: Path) -> bytes | None:
    """The bytes of a regular file, or None: missing, unreadable, too large, or not a regular file at all (a FIFO
    or a device where a sysfs value should be is skipped, never waited on or read without end)."""
    try:
        return read_regular(path, MAX_FILE_BYTES)
    except OSError:
        return None


def _read(path: Path) -> str | None:
    data = _read_bytes(path)
    return None if data is None else data.decode(errors="replace").strip()


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        name = os.path.basename(os.readlink(path))
    except OSError:
        return None
    return name if name.isprintable() else None  # undecodable bytes come back as lone surrogates


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
        if not _plain_name(entry.name):
            continue  # not a name we could print or configure (undecodable bytes, control characters)
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
    if _PCI.fullmatch(parts[-1]):
        return parts[-1]
    if _VIRTIO.fullmatch(parts[-1]) and len(parts) > 1 and _PCI.fullmatch(parts[-2]):
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
    page = _read_bytes(device / "vpd_pg80")
    if page is None or len(page) < 4 or page[1] != 0x80:
        return None
    return page[4 : 4 + int.from_bytes(page[2:4], "big")].decode("ascii", "replace").strip("\0 ") or None


def _mounted_devices(root: Path) -> set[str]:
    names = set()
    for line in (_read(root / "proc/mounts") or "").splitlines():
        source = line.split(" ", 1)[0]
        if source.startswith("/dev/"):
            names.add(source.removeprefix("/dev/"))
    return names


def _partition_names(disk: Path) -> dict[str, str]:
    """{partition: its GPT name} for the disk's partitions (sysfs lists them inside the disk's folder)."""
    names = {}
    for child in disk.iterdir() if disk.is_dir() else []:
        if child.name.startswith(disk.name) and (child / "partition").is_file():
            for line in (_read(child / "uevent") or "").splitlines():
                if line.startswith("PARTNAME="):
                    names[child.name] = line.removeprefix("PARTNAME=")
    return names


def _disks(root: Path) -> tuple[Disk, ...]:
    out = []
    mounted = _mounted_devices(root)
    base = root / "sys/block"
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if entry.name.startswith(_SKIP_BLOCK) or not _plain_name(entry.name):
            continue
        sectors = _int(_read(entry / "size")) or 0
        if sectors == 0:
            continue  # empty card readers and the like
        device = entry / "device"
        rotational = _read(entry / "queue/rotational")
        parts = _partition_names(entry)
        mine = [m for m in mounted if _is_part_of(m, entry.name)]
        # the state first boot moved onto this datastore disk (statedisk.py): mounted, yet the disk is the
        # datastore's, not boot media; a disk carrying the appliance's config partition is boot media, mounted or
        # not (either half of a mirror the core cannot assemble, too)
        holds_state = any(parts.get(m) == layout.STATE_PART_NAME for m in mine)
        boot_media = layout.CONFIG_PART_NAME in parts.values()
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
                in_use=boot_media or any(parts.get(m) != layout.STATE_PART_NAME for m in mine),
                holds_state=holds_state,
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
        data = _read_bytes(var)
        if data is None:
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
        **boot_state(root),
    )


def boot_state(root: Path = Path("/")) -> dict[str, Any]:
    """The booted bank and PCR 15: cheap, and read even when first boot stops before probing the rest."""
    efivars = root / "sys/firmware/efi/efivars"
    entry = bank.booted(efivars)
    try:
        pcr15: str | None = tpm.read(sysfs=root / "sys/class/tpm/tpm0/pcr-sha256")
    except (OSError, UnicodeDecodeError):
        pcr15 = None
    if pcr15 is not None and not (len(pcr15) == 64 and all(c in "0123456789abcdef" for c in pcr15)):
        pcr15 = None
    return {
        "boot_bank": entry.bank if entry else None,
        "pcr15": pcr15,
        "on_trial": bank.counting_path(efivars) is not None,
    }


def load_facts(path: Path) -> Facts:
    """A facts JSON file (as `to_dict` writes it), or a root folder to probe. OSError when the file cannot be
    read (fsutil.ReadRefused: not a regular file, or over MAX_FACTS_BYTES); FactsError when it is no facts JSON."""
    if path.is_dir():
        return probe(path)
    return parse_facts(read_regular(path, MAX_FACTS_BYTES))
