"""Grow the appliance's state partition to the end of its boot device on first boot, then its ext4 with it.

The image is built small (it must fit the smallest boot device of a model, and a factory writes thousands), so its
last partition, the OEMKIT-STATE ext4, is grown on the box: the GPT is rewritten here (the last partition ends where
the disk does; the backup header and entries move to the disk's end; every CRC redone), the kernel re-reads the
table (BLKRRPART: before anything on the disk is mounted), and once mounted the kernel grows the filesystem online
(EXT4_IOC_RESIZE_FS) — no sgdisk, resize2fs or partx in the core, the standard library's struct, zlib and fcntl.

Run by the init: `python3 -m hypervisor_core.growpart /dev/vda3` before mounting (the table), and
`python3 -m hypervisor_core.growpart --fs MOUNTPOINT /dev/vda3` after (the filesystem). Each prints one line.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"EFI PART"
HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # the 92 bytes UEFI defines, up to the entries' CRC
BLKRRPART = 0x125F  # _IO(0x12, 95): re-read the partition table
EXT4_IOC_RESIZE_FS = 0x40086610  # _IOW('f', 16, __u64): the new block count
ALIGN = 1 << 20  # the partition's end stays on a MiB boundary, as the image's partitions are
END_CHECK = 1 << 20  # the disk's last MiB must be empty before the backup table moves there


class GrowError(Exception):
    pass


@dataclass
class Header:
    revision: int
    size: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    entries: int
    entry_size: int
    entries_crc: int

    @classmethod
    def parse(cls, raw: bytes) -> Header:
        sig, rev, size, crc, _, my, alt, first, last, guid, elba, n, esize, ecrc = HEADER.unpack_from(raw)
        if sig != SIGNATURE or not 92 <= size <= len(raw):
            raise GrowError("no GPT header")
        if zlib.crc32(raw[:16] + b"\0\0\0\0" + raw[20:size]) != crc:
            raise GrowError("the GPT header's CRC does not match: not touching a damaged table")
        if not (0 < n <= 1024 and 128 <= esize <= 1024):
            raise GrowError("an implausible GPT partition array")
        return cls(rev, size, my, alt, first, last, guid, elba, n, esize, ecrc)

    def pack(self, sector: int) -> bytes:
        body = HEADER.pack(SIGNATURE, self.revision, self.size, 0, 0, self.my_lba, self.alternate_lba,
                           self.first_usable, self.last_usable, self.disk_guid, self.entries_lba, self.entries,
                           self.entry_size, self.entries_crc)  # fmt: skip
        body += bytes(self.size - len(body))
        crc = zlib.crc32(body)
        return (body[:16] + struct.pack("<I", crc) + body[20:]).ljust(sector, b"\0")


def grow_table(fd: int, disk_bytes: int, partno: int, sector: int = 512) -> tuple[int, int] | None:
    """Make partition `partno` (1-based) of the GPT on `fd` end at the disk's end. Returns its (first, last) LBA
    after, or None when there is nothing to do (the disk is no larger than the table says, or the partition is not
    the last one). Raises GrowError on a table it will not touch."""
    disk_lbas = disk_bytes // sector
    primary = Header.parse(os.pread(fd, sector, sector))
    array_bytes = primary.entries * primary.entry_size
    array = bytearray(os.pread(fd, array_bytes, primary.entries_lba * sector))
    if zlib.crc32(array) != primary.entries_crc:
        raise GrowError("the GPT partition array's CRC does not match: not touching a damaged table")
    if primary.alternate_lba >= disk_lbas - 1:
        return None  # already spans the disk
    at = (partno - 1) * primary.entry_size
    first, last = struct.unpack_from("<QQ", array, at + 32)
    if array[at : at + 16] == bytes(16):
        raise GrowError(f"partition {partno} is empty")
    for i in range(primary.entries):
        entry = array[i * primary.entry_size : (i + 1) * primary.entry_size]
        if i != partno - 1 and entry[:16] != bytes(16) and struct.unpack_from("<Q", entry, 40)[0] > last:
            return None  # another partition lies after it: growing would run into it
    tail_at = max(disk_bytes - END_CHECK, (primary.alternate_lba + 1) * sector)
    if any(os.pread(fd, disk_bytes - tail_at, tail_at)):
        # where the backup table would go something is written: the metadata of a mirror the host's software RAID
        # keeps at the end of each drive (Intel VROC/IMSM, DDF, md 1.0), or a disk used before. Never over it.
        raise GrowError("the end of the disk is not empty (RAID metadata, or data from before): not growing")
    array_lbas = -(-array_bytes // sector)
    backup_entries = disk_lbas - 1 - array_lbas
    new_last = ((backup_entries * sector) // ALIGN * ALIGN) // sector - 1
    if new_last <= last:
        return None
    struct.pack_into("<Q", array, at + 40, new_last)
    crc = zlib.crc32(array)
    primary.alternate_lba, primary.last_usable, primary.entries_crc = disk_lbas - 1, backup_entries - 1, crc
    backup = Header(**{**primary.__dict__, "my_lba": disk_lbas - 1, "alternate_lba": 1,
                       "entries_lba": backup_entries})  # fmt: skip
    # the backup first (at the new end), then the primary: a crash between leaves the old primary, still valid
    os.pwrite(fd, bytes(array), backup_entries * sector)
    os.pwrite(fd, backup.pack(sector), (disk_lbas - 1) * sector)
    os.pwrite(fd, bytes(array), primary.entries_lba * sector)
    os.pwrite(fd, primary.pack(sector), sector)
    mbr = bytearray(os.pread(fd, 512, 0))
    if mbr[510:512] == b"\x55\xaa" and mbr[446 + 4] == 0xEE:  # the protective MBR covers the whole disk
        struct.pack_into("<I", mbr, 446 + 12, min(disk_lbas - 1, 0xFFFFFFFF))
        os.pwrite(fd, bytes(mbr), 0)
    os.fsync(fd)
    return first, new_last


def _sysfs(dev: str) -> Path:
    return Path("/sys/class/block") / Path(dev).name


def grow_device(partition: str) -> str:
    """Grow `partition` (e.g. /dev/vda3) to its disk's end and have the kernel re-read the table."""
    part = _sysfs(partition)
    if not (part / "partition").is_file():
        return f"{partition} is not a partition: nothing to grow"
    partno = int((part / "partition").read_text())
    disk = Path(os.path.realpath(part)).parent.name
    sector = int((Path("/sys/class/block") / disk / "queue/logical_block_size").read_text())
    disk_bytes = int((Path("/sys/class/block") / disk / "size").read_text()) * 512  # sysfs counts 512-byte units
    fd = os.open(f"/dev/{disk}", os.O_RDWR | os.O_CLOEXEC)
    try:
        grown = grow_table(fd, disk_bytes, partno, sector)
        if grown is None:
            return f"{partition} already ends at the disk's end"
        fcntl.ioctl(fd, BLKRRPART)
    finally:
        os.close(fd)
    size = (grown[1] - grown[0] + 1) * sector
    return f"{partition} grown to {size:,} bytes (to the end of /dev/{disk})"


def fs_blocks(partition: str) -> tuple[int, int]:
    """(blocks, block size) of the ext4 on `partition`, from its superblock: statvfs leaves out the metadata's
    blocks, so it always looks smaller than its partition."""
    fd = os.open(partition, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sb = os.pread(fd, 1024, 1024)
    finally:
        os.close(fd)
    if len(sb) < 0x158 or struct.unpack_from("<H", sb, 0x38)[0] != 0xEF53:
        raise GrowError(f"{partition} holds no ext4 superblock")
    lo, log_size = struct.unpack_from("<I", sb, 0x4)[0], struct.unpack_from("<I", sb, 0x18)[0]
    hi = struct.unpack_from("<I", sb, 0x150)[0] if struct.unpack_from("<I", sb, 0x60)[0] & 0x80 else 0  # 64bit
    return lo | hi << 32, 1024 << log_size


def grow_fs(mountpoint: str, partition: str) -> str:
    """Grow the mounted ext4 at `mountpoint` to fill `partition` (the kernel does it online)."""
    part_bytes = int((_sysfs(partition) / "size").read_text()) * 512
    blocks, block = fs_blocks(partition)
    want = part_bytes // block
    if want <= blocks:
        return f"{mountpoint} already fills {partition}"
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, EXT4_IOC_RESIZE_FS, struct.pack("<Q", want))
    finally:
        os.close(fd)
    return f"{mountpoint} grown to {fs_blocks(partition)[0] * block:,} bytes"


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 1:
            print(grow_device(argv[0]))
        elif len(argv) == 3 and argv[0] == "--fs":
            print(grow_fs(argv[1], argv[2]))
        else:
            print("usage: python3 -m hypervisor_core.growpart [--fs MOUNTPOINT] PARTITION", file=sys.stderr)
            return 2
    except (OSError, ValueError, GrowError) as exc:
        print(f"not grown: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
