"""Read what a box says about itself: `dmidecode` text dumps and `/sys/class/dmi/id`-shaped folders.

Only the content is read, never the file's name or folder: the name of a dump proves nothing about the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hypervisor_core.identity import DMI_FIELDS, SmbiosIdentity, clean
from oemkit.errors import UnreadableInput
from oemkit.inputs import LIMITS, read_input

# A dump is a few hundred KiB at most; anything far larger is not a dmidecode dump and must not eat memory.
MAX_DUMP_BYTES = LIMITS["dump"]

_HANDLE = re.compile(r"^Handle 0x([0-9A-Fa-f]+), DMI type (\d+), (\d+) bytes")
# `dmidecode -q` omits the Handle lines; the block titles still say which type a block is.
_TITLES = {
    "BIOS Information": 0,
    "System Information": 1,
    "Base Board Information": 2,
    "Chassis Information": 3,
    "Processor Information": 4,
    "Physical Memory Array": 16,
    "Memory Device": 17,
    "Onboard Device": 41,
    "System Slot Information": 9,
}
# At most 12 digits: no real size or count needs more, and a 400-digit one must not overflow float() (a dump is
# input like any other; a value that is not a plain number is unknown, as dmidecode's own "Unknown" is).
_SIZE = re.compile(r"(\d{1,12}(?:\.\d{1,6})?)\s*(bytes|kB|KB|MB|GB|TB)")
_COUNT = re.compile(r"\d{1,9}")
_UNIT_BYTES = {"bytes": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass
class Structure:
    """One SMBIOS structure as dmidecode printed it."""

    type: int
    title: str
    line: int
    handle: int | None = None
    fields: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return clean(self.fields.get(key))


@dataclass(frozen=True)
class OnboardDevice:
    designation: str
    kind: str
    pci_address: str | None
    enabled: bool


@dataclass(frozen=True)
class MemoryArray:
    max_capacity_bytes: int | None
    devices: int


@dataclass(frozen=True)
class DmiReport:
    """Everything identify and the catalog checks need from one box."""

    source: str
    identity: SmbiosIdentity
    cpu_sockets: int | None = None
    cpu_sockets_populated: int | None = None
    cpu_threads: int | None = None
    cpu_vendor: str | None = None
    virtualization: str | None = None
    memory_bytes: int | None = None
    memory_arrays: tuple[MemoryArray, ...] = ()
    onboard_devices: tuple[OnboardDevice, ...] = ()

    @property
    def memory_gib(self) -> float | None:
        if self.memory_bytes is None:
            return None
        gib = self.memory_bytes / (1 << 30)
        return int(gib) if gib.is_integer() else round(gib, 2)


def parse_size(value: str | None) -> int | None:
    """`16 GB`, `16384 MB`, `3 TB` → bytes; `No Module Installed`, `Unknown` → None."""
    if not value:
        return None
    m = _SIZE.fullmatch(value.strip())
    if not m:
        return None
    return int(float(m.group(1)) * _UNIT_BYTES[m.group(2)])


def _count(value: str | None) -> int | None:
    """A count dmidecode prints (`Thread Count: 32`), or None when the value is not a plain number."""
    text = (value or "").strip()
    return int(text) if _COUNT.fullmatch(text) else None


def parse_structures(text: str, source: str) -> list[Structure]:
    """Split dmidecode output into structures; tolerant of `-q` output and missing blank lines."""
    out: list[Structure] = []
    cur: Structure | None = None
    pending: tuple[int, int, int] | None = None  # (handle, type, line) waiting for its title line
    last_key: str | None = None
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip():
            continue
        m = _HANDLE.match(line)
        if m:
            pending = (int(m.group(1), 16), int(m.group(2)), no)
            cur = None
            continue
        if not line.startswith("\t") and not line.startswith(" "):
            if pending is not None:
                cur = Structure(type=pending[1], title=line.strip(), line=pending[2], handle=pending[0])
                pending = None
                out.append(cur)
            elif line.strip() in _TITLES:
                cur = Structure(type=_TITLES[line.strip()], title=line.strip(), line=no)
                out.append(cur)
            else:
                cur = None  # banner lines ("# dmidecode 3.3", "SMBIOS 3.3 present.") and the like
            last_key = None
            continue
        if cur is None:
            continue
        if line.startswith("\t\t") and last_key is not None:
            cur.lists.setdefault(last_key, []).append(line.strip())
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        last_key = key.strip()
        cur.fields.setdefault(last_key, value.strip())
    if not out:
        raise UnreadableInput(
            "not a dmidecode dump: no SMBIOS structure found",
            file=source,
            hint="pass the output of `dmidecode` (as root) or a /sys/class/dmi/id folder",
        )
    return out


def _virtualization(procs: list[Structure]) -> tuple[str | None, str | None]:
    """CPU vendor and its extension. dmidecode prints only CPUID EDX flags, so VMX/SVM is inferred
    from the vendor plus families that all carry it (every Xeon, EPYC and Opteron server part does)."""
    for p in procs:
        maker = (p.get("Manufacturer") or "") + " " + (p.get("Version") or "")
        family = (p.get("Family") or "") + " " + (p.get("Version") or "")
        virt_char = "Enhanced Virtualization" in p.lists.get("Characteristics", [])
        if re.search(r"intel", maker, re.I):
            ok = virt_char or re.search(r"xeon|core", family, re.I)
            return "intel", "vmx" if ok else None
        if re.search(r"\bamd\b|authenticamd", maker, re.I):
            ok = virt_char or re.search(r"epyc|opteron|ryzen|zen", family, re.I)
            return "amd", "svm" if ok else None
    return None, None


def report_from_structures(structs: list[Structure], source: str) -> DmiReport:
    by_type: dict[int, list[Structure]] = {}
    for s in structs:
        by_type.setdefault(s.type, []).append(s)
    system = (by_type.get(1) or [Structure(1, "", 0)])[0]
    board = (by_type.get(2) or [Structure(2, "", 0)])[0]
    chassis = (by_type.get(3) or [Structure(3, "", 0)])[0]
    bios = (by_type.get(0) or [Structure(0, "", 0)])[0]
    if 1 not in by_type:
        raise UnreadableInput("dmidecode dump has no System Information (type 1) structure", file=source)
    identity = SmbiosIdentity(
        sys_vendor=system.get("Manufacturer"),
        product_name=system.get("Product Name"),
        product_version=system.get("Version"),
        product_sku=system.get("SKU Number"),
        product_family=system.get("Family"),
        product_serial=system.get("Serial Number"),
        product_uuid=system.get("UUID"),
        board_vendor=board.get("Manufacturer"),
        board_name=board.get("Product Name"),
        chassis_type=chassis.get("Type"),
        bios_vendor=bios.get("Vendor"),
        bios_version=bios.get("Version"),
    )
    procs = [p for p in by_type.get(4, []) if p.get("Type") in (None, "Central Processor")]
    populated = [p for p in procs if (p.get("Status") or "").startswith("Populated")]
    cpu_vendor, virt = _virtualization(populated or procs)
    arrays = tuple(
        MemoryArray(parse_size(a.get("Maximum Capacity")), _count(a.get("Number Of Devices")) or 0)
        for a in by_type.get(16, [])
        if (a.get("Use") or "System Memory") == "System Memory"
    )
    dimms = [parse_size(d.get("Size")) for d in by_type.get(17, [])]
    memory = sum(d for d in dimms if d) if 17 in by_type else None
    onboard = tuple(
        OnboardDevice(
            designation=d.get("Reference Designation") or "",
            kind=d.get("Type") or "",
            pci_address=d.get("Bus Address"),
            enabled=(d.get("Status") or "Enabled") == "Enabled",
        )
        for d in by_type.get(41, [])
    )
    return DmiReport(
        source=source,
        identity=identity,
        cpu_sockets=len(procs) if 4 in by_type else None,
        cpu_sockets_populated=len(populated) if 4 in by_type else None,
        cpu_threads=sum(_count(p.get("Thread Count")) or 0 for p in populated) or None,
        cpu_vendor=cpu_vendor,
        virtualization=virt,
        memory_bytes=memory,
        memory_arrays=arrays,
        onboard_devices=onboard,
    )


def _read_text(path: Path) -> str:
    """A dump's text, or one value of a dmi/id folder: read once, bounded, only from a regular file (a FIFO or a
    device is refused, never waited on or read without end); UnreadableInput otherwise."""
    data = read_input(path, "dump", MAX_DUMP_BYTES)
    if b"\0" in data:
        raise UnreadableInput(
            "binary data: not a dmidecode text dump", file=str(path), line=data[: data.index(b"\0")].count(b"\n") + 1
        )
    # Vendors put Latin-1 in OEM strings; a stray byte must not make the whole dump unreadable.
    return data.decode("utf-8", errors="replace")


# chassis_type in sysfs is the SMBIOS number; dmidecode prints the name.
_CHASSIS = {
    "3": "Desktop",
    "4": "Low Profile Desktop",
    "6": "Mini Tower",
    "7": "Tower",
    "9": "Laptop",
    "10": "Notebook",
    "17": "Main Server Chassis",
    "23": "Rack Mount Chassis",
    "25": "Multi-system",
    "28": "Blade",
    "29": "Blade Enclosure",
    "35": "Mini PC",
}


def read_sysfs_dmi(folder: Path) -> DmiReport:
    """A folder shaped like /sys/class/dmi/id: one value per file. A value that cannot be read is None, as
    probe() has it on the box: a root-only file (product_serial, product_uuid on a live box), and equally a FIFO,
    a device or a folder where a value should be — skipped, never opened for reading (so never waited on)."""
    values: dict[str, str | None] = {}
    for name in DMI_FIELDS:
        f = folder / name
        if f.is_file():
            try:
                values[name] = clean(_read_text(f).strip())
            except UnreadableInput:
                values[name] = None
    if not values.get("sys_vendor") and not values.get("product_name"):
        raise UnreadableInput(
            "not a /sys/class/dmi/id folder: neither sys_vendor nor product_name is there",
            file=str(folder),
        )
    if values.get("chassis_type"):
        values["chassis_type"] = _CHASSIS.get(values["chassis_type"] or "", values["chassis_type"])
    return DmiReport(source=str(folder), identity=SmbiosIdentity(**values))


def read_report(path: Path) -> DmiReport:
    """A dmidecode text file or a dmi/id folder → DmiReport; UnreadableInput (located) otherwise."""
    if path.is_dir():
        return read_sysfs_dmi(path)
    if not path.exists():
        raise UnreadableInput("no such file or folder", file=str(path))
    text = _read_text(path)
    return report_from_structures(parse_structures(text, str(path)), str(path))
