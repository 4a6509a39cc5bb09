"""Which OEMKIT-STATE filesystem is this box's state — decided by the init at every boot but the plain one.

The plain boot (one OEMKIT-STATE filesystem, on a fixed disk, and nothing else claiming to be state) the init
handles in shell. Anything else comes here: a copy on USB/SD or removable media, two fixed copies, a partition that
says it is state first boot moved onto a datastore disk. The disk the firmware booted from is known (systemd-boot's
LoaderDevicePartUUID names the ESP's partition), so:

- a moved state (GPT name `oemkit-datastore`) counts only on a fixed disk and only with the partition GUID derived
  from this box's serial (statedisk.guids): a stick or another box's disk never becomes this box's state;
- a box booted from a fixed disk uses that disk's own state partition, whatever other disks carry;
- a box booted from flash (USB, SD/eMMC, removable) or from one half of a mirror the core cannot assemble (another
  disk with the same GPT disk GUID: an Intel VROC M.2 kit) has its state moved by first boot (statedisk.py), the
  copy taken from the boot device's own state partition — never from another disk.

`python3 -m hypervisor_core.statefind` prints one line: `use DEV [note]`, `move SOURCE [note]` or `none REASON`.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from hypervisor_core import bank, layout
from hypervisor_core.growpart import GrowError, Header

ENTRY_NAME = slice(56, 128)
NAMESPACE = uuid.UUID("8a4f1c2e-5b7d-4e0a-9c3f-6d2b1e8a7c40")  # oemkit's, for the GUIDs derived from a serial


@dataclass(frozen=True)
class Part:
    name: str  # sdb3
    disk: str  # sdb
    partname: str | None  # its GPT name
    partuuid: str | None  # its GPT unique GUID, lower case
    disk_guid: str | None  # its disk's GPT disk GUID
    flash: str | None  # why state may not live there (USB, SD/eMMC, removable); None on a fixed disk
    state: bool  # it carries the OEMKIT-STATE ext4 label


def guids(serial: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The GUIDs of a moved state's disk and partition, derived from the serial (as the box reports it, case and
    surrounding blanks aside: the identity check compares serials so): the partition's is how a boot knows the
    moved state is this box's."""
    key = serial.strip().casefold()
    return uuid.uuid5(NAMESPACE, f"{key}/datastore-disk"), uuid.uuid5(NAMESPACE, f"{key}/datastore-state")


def _read(path: Path, size: int, offset: int = 0) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.pread(fd, size, offset)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def gpt(device: Path, sector: int) -> tuple[str | None, dict[int, tuple[str, str]]]:
    """The disk GUID and {partition number: (unique GUID, name)} of the GPT on `device`; (None, {}) without one."""
    try:
        head = Header.parse(_read(device, sector, sector))
    except GrowError:
        return None, {}
    array = _read(device, head.entries * head.entry_size, head.entries_lba * sector)
    parts = {}
    for i in range(head.entries):
        entry = array[i * head.entry_size : (i + 1) * head.entry_size]
        if len(entry) >= 128 and entry[16:32] != bytes(16):
            name = entry[ENTRY_NAME].decode("utf-16-le", "replace").split("\0", 1)[0]
            parts[i + 1] = (str(uuid.UUID(bytes_le=entry[16:32])), name)
    return str(uuid.UUID(bytes_le=head.disk_guid)), parts


def scan(root: Path = Path("/")) -> list[Part]:
    """Every partition of every disk, and every whole disk (a filesystem may span one, as the developer mode's state
    disk does), with what the decision needs."""
    out = []
    block = root / "sys/class/block"
    tables: dict[str, tuple[str | None, dict[int, tuple[str, str]]]] = {}
    for entry in sorted(block.iterdir()) if block.is_dir() else []:
        number = _text(entry / "partition")
        real = Path(os.path.realpath(entry))
        disk_dir = real.parent if number.isdigit() else real
        disk_guid, partuuid, partname = None, None, None
        if number.isdigit():
            if disk_dir.name not in tables:
                sector = int(_text(block / disk_dir.name / "queue/logical_block_size") or 512)
                tables[disk_dir.name] = gpt(root / "dev" / disk_dir.name, sector)
            disk_guid, table = tables[disk_dir.name]
            partuuid, partname = table.get(int(number), (None, None))
        head = _read(root / "dev" / entry.name, 2048)
        label = head[1144:1160].rstrip(b"\0") if head[1080:1082] == b"\x53\xef" else b""
        removable = _text(disk_dir / "removable") == "1"
        where = str(real)
        flash = "USB" if "/usb" in where else "SD/eMMC" if "/mmc" in where else "removable" if removable else None
        state = label == layout.STATE_LABEL.encode()
        out.append(Part(entry.name, disk_dir.name, partname, partuuid, disk_guid, flash, state))
    return out


def decide(parts: list[Part], serial: str, boot_partuuid: str | None) -> tuple[str, str, str]:
    """(verb, device or reason, note): ("use", DEV, …), ("move", SOURCE, …) or ("none", REASON, "")."""
    state = [p for p in parts if p.state]
    moved_guid = str(guids(serial)[1]) if serial else None
    named = [p for p in state if p.partname == layout.STATE_PART_NAME]
    moved = [p for p in named if p.flash is None and p.partuuid == moved_guid]
    notes = [f"ignored /dev/{p.name} (moved state of {'removable media' if p.flash else 'another box'})"
             for p in named if p not in moved]  # fmt: skip
    if len(moved) > 1:
        return "none", f"{layout.STATE_LABEL} moved onto {len(moved)} disks for this serial", ""
    if moved:
        return "use", f"/dev/{moved[0].name}", "; ".join(notes)
    boot = next((p for p in parts if boot_partuuid and p.partuuid == boot_partuuid.lower()), None)
    fixed = [p for p in state if p.flash is None and p not in named]
    refused = [f"/dev/{p.name} ({p.flash})" for p in state if p.flash]
    if boot is None:  # not started by systemd-boot from a disk (the developer mode): the label alone decides
        if len(fixed) == 1:
            return "use", f"/dev/{fixed[0].name}", "; ".join(notes + [f"refused {r}" for r in refused])
        if fixed:
            devices = ", ".join(f"/dev/{p.name}" for p in fixed)
            return "none", f"refused {devices} ({layout.STATE_LABEL} is on {len(fixed)} devices)", ""
        return "none", f"refused {', '.join(refused)}" if refused else f"no {layout.STATE_LABEL} filesystem", ""
    own = [p for p in state if p.disk == boot.disk and p not in named]
    halves = sorted({p.disk for p in parts if p.disk_guid and p.disk_guid == boot.disk_guid})
    if boot.flash or len(halves) > 1:
        why = (f"refused /dev/{own[0].name} ({boot.flash})" if boot.flash and own else
               f"refused the boot device's state ({', '.join(halves)} are halves of a mirror the core cannot "
               "assemble)")  # fmt: skip
        if not own:
            return "none", f"the boot device /dev/{boot.disk} has no {layout.STATE_LABEL} partition", ""
        return "move", f"/dev/{own[0].name}", "; ".join([why, *notes])
    if not own:
        return "none", f"the boot device /dev/{boot.disk} has no {layout.STATE_LABEL} partition", ""
    others = [f"/dev/{p.name}" for p in state if p not in own and p not in named]
    return "use", f"/dev/{own[0].name}", "; ".join(notes + ([f"ignored {', '.join(others)}"] if others else []))


def main(root: Path = Path("/")) -> int:
    serial = _text(root / "sys/class/dmi/id/product_serial")
    efivars = root / "sys/firmware/efi/efivars"
    verb, what, note = decide(scan(root), serial, bank.read_efivar("LoaderDevicePartUUID", efivars))
    print(f"{verb} {what}{' ' + note if note else ''}".rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/")))
