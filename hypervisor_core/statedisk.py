"""The state moved off flash that wears: first boot puts it on the first disk the datastore rule chose.

A box that boots from SD/IDSDM or USB (or from an M.2 mirror only the host's software RAID assembles) has the image's
OEMKIT-STATE filesystem only there, and the init refuses it (ESXi's SD wear-out, KB 83376, is the lesson). Then,
before libvirt or the agent runs, the init calls this module to give the state a fixed local disk — the one the
architect gave the box's data, as ESXi puts its scratch on a local datastore:

1. the unit config, verified as the agent verifies it (signature, this box's model and serial, Secure Boot and a TPM
   as required): an unsigned or foreign config never makes the box write a disk;
2. the datastore rule resolved on this box (match.resolve_datastore, as the agent will): its first disk;
3. that disk must be blank, its first and last MiB all zero (no partition table, filesystem, RAID or LVM label at
   either end): a disk with anything on it is never written;
4. the image's empty state filesystem (ext4, byte for byte what the factory built, from the boot device's state
   partition) is copied to 1 MiB into the disk and synced; then a GPT with one partition, named `oemkit-datastore`,
   from 1 MiB to the disk's end (primary table, then backup) is written and synced, and the kernel re-reads it.

Crash-safe by that order: until the primary table is written the first MiB is still zero, so the next boot finds the
disk blank and starts over; once it is written the filesystem is complete and the next boot finds its label. The
init then mounts it as any state partition and grows the filesystem to the partition (growpart --fs).

`python3 -m hypervisor_core.statedisk --config UNIT --pubkey KEY --from PARTITION` prints one line: the new
partition (exit 0), or why nothing was written (exit 1); 2 is bad usage.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import struct
import time
import uuid
import zlib
from pathlib import Path

from hypervisor_core import config, layout
from hypervisor_core.config import files
from hypervisor_core.facts import Disk, Facts, probe
from hypervisor_core.growpart import BLKRRPART, Header
from hypervisor_core.match import Refusal, check_identity, check_security, resolve_datastore
from hypervisor_core.statefind import guids

LINUX_FS = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
MIB = 1 << 20
EDGE = MIB  # the first and last MiB of a blank disk are all zero
ENTRIES, ENTRY_SIZE = 128, 128
MAX_STATE_BYTES = 256 * MIB  # the image's state filesystem is 32 MiB: anything far larger is not it
MIN_DISK_BYTES = 1 << 30
SYS_BLOCK = Path("/sys/class/block")


class NotMoved(Exception):
    """The state stays where it is (in RAM); `str()` says why, for the console."""


def gpt_writes(disk_bytes: int, sector: int, disk_guid: uuid.UUID, part_guid: uuid.UUID) -> list[tuple[int, bytes]]:
    """The (offset, bytes) writes of a GPT with one Linux partition from 1 MiB to the disk's end (on a MiB
    boundary), in the order they must land: the protective MBR and the primary table, then the backup."""
    lbas = disk_bytes // sector
    array_lbas = -(-ENTRIES * ENTRY_SIZE // sector)
    first_usable, last_usable = 2 + array_lbas, lbas - 2 - array_lbas
    first = MIB // sector
    last = ((last_usable + 1) * sector // MIB * MIB) // sector - 1
    if last <= first:
        raise NotMoved(f"a disk of {disk_bytes:,} bytes is too small for the state")
    name = layout.STATE_PART_NAME.encode("utf-16-le").ljust(72, b"\0")
    entry = LINUX_FS.bytes_le + part_guid.bytes_le + struct.pack("<QQQ", first, last, 0) + name
    array = entry.ljust(ENTRIES * ENTRY_SIZE, b"\0")
    crc = zlib.crc32(array)
    primary = Header(0x10000, 92, 1, lbas - 1, first_usable, last_usable, disk_guid.bytes_le, 2, ENTRIES,
                     ENTRY_SIZE, crc)  # fmt: skip
    backup_at = lbas - 1 - array_lbas
    backup = Header(**{**primary.__dict__, "my_lba": lbas - 1, "alternate_lba": 1, "entries_lba": backup_at})
    mbr = bytearray(sector)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1, min(lbas - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    return [
        (0, bytes(mbr) + primary.pack(sector) + array),
        (backup.entries_lba * sector, array + backup.pack(sector)),
    ]


def ext4_label(head: bytes) -> bytes | None:
    """The volume label of the ext2/3/4 whose first 2 KiB are `head`, or None when it is none."""
    if len(head) < 1160 or head[1080:1082] != b"\x53\xef":
        return None
    return head[1144:1160].rstrip(b"\0")


def partition_of(disk: str, number: int) -> str:
    """sdb, 1 → sdb1; nvme0n1, 1 → nvme0n1p1 (a disk name ending in a digit takes a 'p')."""
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def choose(cfg: config.UnitConfig, facts: Facts) -> Disk:
    """The disk the state goes to: the datastore rule's first, on the box the config is for. Refusal otherwise."""
    check_identity(cfg, facts)
    check_security(cfg, facts)
    return resolve_datastore(cfg, facts)[0]


def _compare(actual: bytes, expected: bytes, sector: int) -> str:
    """ "ours" when `actual` is `expected`; "partial" when each sector is either its expected bytes or zero (a write
    cut short by power loss); else "foreign"."""
    if actual == expected:
        return "ours"
    for at in range(0, len(actual), sector):
        got = actual[at : at + sector]
        if any(got) and got != expected[at : at + sector]:
            return "foreign"
    return "partial"


def place(fd: int, disk_bytes: int, sector: int, source: bytes, serial: str) -> str:
    """Write the state filesystem and its table onto the disk open at `fd`, each synced before the next. The disk
    must be blank at both ends, or hold exactly what an interrupted move of this serial wrote there (every byte is
    derived from the serial, so a torn write is recognised and finished, and a finished one left alone). Returns
    what was done."""
    if disk_bytes < max(MIN_DISK_BYTES, len(source) + 3 * MIB):
        raise NotMoved(f"it holds {disk_bytes:,} bytes, too few for a datastore")
    (head_at, head), (tail_at, tail) = gpt_writes(disk_bytes, sector, *guids(serial))
    edge = disk_bytes - EDGE
    want_head = head.ljust(EDGE, b"\0")
    want_tail = bytes(tail_at - edge) + tail
    found_head = _compare(os.pread(fd, EDGE, 0), want_head, sector)
    found_tail = _compare(os.pread(fd, EDGE, edge), want_tail, sector)
    if "foreign" in (found_head, found_tail):
        raise NotMoved("it is not blank (a partition table or data in its first or last MiB): never written over")
    if found_head == "ours" and found_tail == "ours":
        return "already moved there"
    if found_head == "ours":  # the primary table landed, the backup did not: the filesystem may be in use now
        os.pwrite(fd, tail, tail_at)
        os.fsync(fd)
        return "the backup table finished"
    os.pwrite(fd, source, MIB)  # nothing could have mounted it yet: no table pointed at it
    os.fsync(fd)
    for offset, data in ((head_at, head), (tail_at, tail)):
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    return "moved"


def read_source(partition: str) -> bytes:
    """The image's empty state filesystem, whole, from the boot device's partition: checked to be it."""
    size = int((SYS_BLOCK / Path(partition).name / "size").read_text()) * 512
    if size > MAX_STATE_BYTES:
        raise NotMoved(f"{partition} holds {size:,} bytes: not the image's state filesystem")
    fd = os.open(partition, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if len(data) != size or ext4_label(data[:2048]) != layout.STATE_LABEL.encode():
        raise NotMoved(f"{partition} holds no {layout.STATE_LABEL} filesystem")
    return data


def move(config_path: Path, key_path: Path, source_partition: str) -> str:
    """The whole move; returns the new partition's device."""
    try:
        cfg = files.load_verified(config_path, key_path)  # the one reader the agent and phone home use
    except files.InputError as exc:
        raise NotMoved(str(exc)) from None
    facts = probe(Path("/"))
    try:
        disk = choose(cfg, facts)
    except Refusal as exc:
        raise NotMoved(str(exc)) from None
    source = read_source(source_partition)
    where = SYS_BLOCK / disk.name
    sector = int((where / "queue/logical_block_size").read_text())
    disk_bytes = int((where / "size").read_text()) * 512
    try:
        fd = os.open(f"/dev/{disk.name}", os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)  # EBUSY when anything holds it
    except OSError as exc:
        raise NotMoved(f"/dev/{disk.name}: {exc.strerror}") from None
    try:
        # the disk the rule chose, not another that took its name since (a hot-plug between probe and open)
        rdev = os.fstat(fd).st_rdev
        if f"{os.major(rdev)}:{os.minor(rdev)}" != (where / "dev").read_text().strip():
            raise NotMoved(f"/dev/{disk.name} changed while first boot looked at it")
        try:
            place(fd, disk_bytes, sector, source, cfg.serial)
        except NotMoved as exc:
            raise NotMoved(f"/dev/{disk.name}, the datastore's first disk: {exc}") from None
        try:
            fcntl.ioctl(fd, BLKRRPART)
        except OSError as exc:
            raise NotMoved(f"written to /dev/{disk.name}, but the kernel did not re-read its table ({exc.strerror}): "
                           "the next boot finds it") from None  # fmt: skip
    finally:
        os.close(fd)
    part = partition_of(disk.name, 1)
    for _ in range(50):  # devtmpfs makes the node as the kernel announces the partition
        if os.path.exists(f"/dev/{part}"):
            return f"/dev/{part}"
        time.sleep(0.1)
    raise NotMoved(f"written to /dev/{disk.name}, but /dev/{part} did not appear: the next boot finds it")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m hypervisor_core.statedisk")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--pubkey", type=Path, required=True)
    ap.add_argument("--from", dest="source", required=True, help="the refused state partition to copy")
    args = ap.parse_args(argv)
    try:
        print(move(args.config, args.pubkey, args.source))
    except (NotMoved, OSError, ValueError) as exc:
        print(f"not moved: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
