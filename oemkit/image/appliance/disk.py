"""Byte-reproducible disk images without root or loop devices: FAT filesystems made by `mkfs.fat --invariant` and
filled by mtools, a GPT written by `sgdisk` with GUIDs the caller derives, each filesystem copied in at its offset;
and the FAT files of a partition inside a disk image read, listed, removed and added by mtools at its offset
(`-i image@@offset`), which is how `image verify` and `image upgrade` reach them.

Every tool runs with SOURCE_DATE_EPOCH (mtools stamps directory entries with it) and every file is copied with a
fixed modification time, so the same inputs give the same bytes on any machine, as any user."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from oemkit.image.tools import PATH, run_tool

SECTOR = 512
ALIGN_SECTORS = 2048  # 1 MiB: every partition starts on a MiB boundary
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_DATA_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"
MiB = 1 << 20


@dataclass(frozen=True)
class Partition:
    name: str  # the GPT partition name
    type_guid: str
    guid: str
    image: Path | None  # a filesystem image, copied in at the partition's start (None: the GPT only)
    size_mib: int


def _env(epoch: int) -> dict[str, str]:
    return {"PATH": PATH, "LC_ALL": "C.UTF-8", "SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


def fat_image(
    path: Path, size_mib: int, label: str, volume_id: str, files: dict[str, Path], epoch: int, fat_bits: int | None = 32
) -> Path:
    """A FAT filesystem image of `size_mib` holding `files` (destination path with / -> source file); FAT32 unless
    `fat_bits` says otherwise (None: mkfs.fat picks by size, e.g. FAT16 for a small config partition)."""
    path.unlink(missing_ok=True)
    env = _env(epoch)
    # --invariant before -i, else the volume id becomes 1234ABCD (NOTES-uefi.md)
    bits = ["-F", str(fat_bits)] if fat_bits else []
    cmd = ["mkfs.fat", "-C", *bits, "-n", label, "--invariant", "-i", volume_id, str(path), str(size_mib * 1024)]
    run_tool(cmd, what="mkfs.fat", env=env)
    folders = sorted({str(Path(dest).parent) for dest in files} - {"/", "."}, key=lambda p: (p.count("/"), p))
    made: set[str] = set()
    for folder in folders:
        parts = folder.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                run_tool(["mmd", "-i", str(path), f"::/{sub}"], what=f"mmd {sub}", env=env)
                made.add(sub)
    with tempfile.TemporaryDirectory(prefix="oemkit-fat-") as tmp:
        for dest, src in sorted(files.items()):
            staged = Path(tmp) / "file"
            shutil.copyfile(src, staged)
            os.utime(staged, (epoch, epoch))  # mcopy -m keeps the source's time
            run_tool(["mcopy", "-m", "-i", str(path), str(staged), f"::{dest}"], what=f"mcopy {dest}", env=env)
            staged.unlink()
    return path


def gpt_table(path: Path, disk_guid: str, partitions: list[Partition], epoch: int) -> list[int]:
    """A sparse raw disk holding only a GPT (protective MBR, both headers) with `partitions` in order, each on a
    MiB boundary, one MiB left at the end; the first sector of each partition."""
    starts, at = [], ALIGN_SECTORS
    for p in partitions:
        starts.append(at)
        at += p.size_mib * MiB // SECTOR
    total = at + ALIGN_SECTORS  # room for the backup GPT at the end
    path.unlink(missing_ok=True)
    with path.open("wb") as fh:
        fh.truncate(total * SECTOR)
    # no -Z: the file is new and all zero, and each of sgdisk's writes costs a sync() and a one-second sleep
    cmd = ["sgdisk", "-U", disk_guid]
    for i, (p, start) in enumerate(zip(partitions, starts, strict=True), 1):
        end = start + p.size_mib * MiB // SECTOR - 1
        cmd += ["-n", f"{i}:{start}:{end}", "-t", f"{i}:{p.type_guid}", "-u", f"{i}:{p.guid}", "-c", f"{i}:{p.name}"]
    run_tool([*cmd, str(path)], what="sgdisk", env=_env(epoch))
    return starts


# bookworm's mke2fs.conf defaults for ext4, written out (mke2fs runs without that file)
EXT4_FEATURES = ("has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,sparse_super,large_file,"
                 "huge_file,dir_nlink,extra_isize,metadata_csum")  # fmt: skip


def ext4_image(path: Path, size_mib: int, label: str, fs_uuid: str, epoch: int) -> Path:
    """An empty ext4 filesystem image, the same bytes every time: a fixed UUID and directory hash seed, the fake
    clock e2fsprogs honours, root-owned. 4 KiB blocks and the default inode ratio, not mke2fs's "small" type a
    filesystem this size would get: it is grown on the box to the boot device's end (hypervisor_core/growpart.py),
    where 1 KiB blocks would make tens of thousands of block groups."""
    path.unlink(missing_ok=True)
    # no /etc/mke2fs.conf: every feature and size named here, so the host's defaults cannot change the bytes (or
    # add a feature the core's kernel, 6.1, cannot mount)
    env = {**_env(epoch), "E2FSPROGS_FAKE_TIME": str(epoch), "MKE2FS_CONFIG": "/dev/null"}
    with tempfile.TemporaryDirectory(prefix="oemkit-ext4-") as empty:
        os.utime(empty, (epoch, epoch))
        cmd = ["mke2fs", "-q", "-F", "-t", "ext4", "-O", EXT4_FEATURES, "-b", "4096", "-I", "256", "-i", "16384",
               "-L", label, "-U", fs_uuid, "-E", f"root_owner=0:0,hash_seed={fs_uuid}", "-d", empty, str(path),
               f"{size_mib}M"]  # fmt: skip
        run_tool(cmd, what="mkfs.ext4", env=env)
    return path


def gpt_disk(path: Path, disk_guid: str, partitions: list[Partition], epoch: int) -> Path:
    """A raw disk: GPT (protective MBR, both headers) with `partitions` in order, each filesystem at its start."""
    starts = gpt_table(path, disk_guid, partitions, epoch)
    with path.open("r+b") as fh:
        for p, start in zip(partitions, starts, strict=True):
            if p.image is None:
                continue
            if p.image.stat().st_size > p.size_mib * MiB:
                raise ValueError(f"{p.image.name} is larger than partition {p.name}")
            with p.image.open("rb") as src:
                copy_range(src.fileno(), fh.fileno(), 0, start * SECTOR, p.image.stat().st_size)
    return path


def regpt(first: bytes, last: bytes, disk_guid: str, part_guids: list[str]) -> tuple[bytes, bytes]:
    """A GPT written by `gpt_table` given other GUIDs, as sgdisk would write it with them (-U, -u): `first` holds
    the disk's first 34 sectors or more (protective MBR, primary header, entries) and `last` its last 33 or more
    (backup entries, backup header). The disk GUID and each partition's unique GUID are replaced and the four
    CRC32s recomputed; nothing else in a GPT depends on them (tests compare with sgdisk's own output). sgdisk
    cannot be run per unit: each write it makes costs a sync() of the whole host and a one-second sleep."""
    head, tail = bytearray(first), bytearray(last)
    primary = _header(head, SECTOR)
    backup_at = len(tail) - SECTOR
    backup = _header(tail, backup_at)
    if len(part_guids) > primary["count"]:
        raise ValueError("more partition GUIDs than GPT entries")
    entries_at = [primary["entries"] * SECTOR, backup_at - (backup["my"] - backup["entries"]) * SECTOR]
    for buf, at in zip((head, tail), entries_at, strict=True):
        for i, guid in enumerate(part_guids):
            buf[at + i * primary["size"] + 16 : at + i * primary["size"] + 32] = uuid.UUID(guid).bytes_le
    crc = zlib.crc32(head[entries_at[0] : entries_at[0] + primary["count"] * primary["size"]])
    for buf, at in ((head, SECTOR), (tail, backup_at)):
        buf[at + 56 : at + 72] = uuid.UUID(disk_guid).bytes_le
        struct.pack_into("<I", buf, at + 88, crc)
        struct.pack_into("<I", buf, at + 16, 0)
        struct.pack_into("<I", buf, at + 16, zlib.crc32(buf[at : at + primary["hsize"]]))
    return bytes(head), bytes(tail)


def _header(buf: bytearray, at: int) -> dict[str, int]:
    if buf[at : at + 8] != b"EFI PART":
        raise ValueError("no GPT header where one must be")
    hsize, my, entries, count, size = (
        struct.unpack_from("<I", buf, at + 12)
        + struct.unpack_from("<Q", buf, at + 24)
        + struct.unpack_from("<QII", buf, at + 72)
    )
    return {"hsize": hsize, "my": my, "entries": entries, "count": count, "size": size}


def copy_range(src: int, dst: int, src_at: int, dst_at: int, length: int) -> None:
    """Copy `length` bytes between descriptors, leaving the holes of `src` as holes in `dst` (a FAT image is mostly
    unwritten): only the data extents are copied, by the kernel (copy_file_range may share blocks)."""
    at, end = src_at, src_at + length
    while at < end:
        try:
            data = os.lseek(src, at, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after `at`
            return
        if data >= end:
            return
        hole = min(os.lseek(src, data, os.SEEK_HOLE), end)
        todo, s_off, d_off = hole - data, data, dst_at + (data - src_at)
        while todo > 0:
            done = os.copy_file_range(src, dst, todo, s_off, d_off)
            if done == 0:
                raise OSError(f"copy_file_range stopped {todo} bytes short")
            todo, s_off, d_off = todo - done, s_off + done, d_off + done
        at = hole


def sparse_copy(src: Path, dst: Path) -> Path:
    """`dst` a new file with the bytes of `src`, its holes kept (a raw disk image is mostly unwritten)."""
    size = src.stat().st_size
    with src.open("rb") as fin, dst.open("xb") as fout:
        fout.truncate(size)
        copy_range(fin.fileno(), fout.fileno(), 0, 0, size)
    return dst


def _mtools(args: list[str], image: Path, offset: int, what: str, epoch: int = 0) -> subprocess.CompletedProcess:
    return run_tool([args[0], "-i", f"{image}@@{offset}", *args[1:]], what=what, env=_env(epoch))


def fat_files(image: Path, offset: int) -> list[str]:
    """Every file (not folder) of the FAT filesystem at `offset`, as /PATH, in mtools' order."""
    done = _mtools(["mdir", "-a", "-/", "-b", "::/"], image, offset, "mdir")  # -a: hidden and system files too
    names = done.stdout.decode(errors="replace").splitlines()
    return [n.removeprefix("::") for n in names if n.startswith("::/") and not n.endswith("/")]


def fat_read(image: Path, offset: int, name: str, dest: Path) -> bool:
    """Copy /`name` out of the FAT filesystem at `offset` (read-only); False if it is not there."""
    done = subprocess.run(
        ["mcopy", "-n", "-i", f"{image}@@{offset}", f"::{name}", str(dest)],
        capture_output=True, env=_env(0), check=False,
    )  # fmt: skip
    return done.returncode == 0 and dest.is_file()


def fat_delete(image: Path, offset: int, name: str, epoch: int) -> None:
    _mtools(["mdel", f"::{name}"], image, offset, f"mdel {name}", epoch)


def fat_put(image: Path, offset: int, src: Path, name: str, epoch: int) -> None:
    """Add `src` as /`name` with the fixed time `epoch` (mtools stamps the folder's entry with SOURCE_DATE_EPOCH)."""
    with tempfile.TemporaryDirectory(prefix="oemkit-fat-") as tmp:
        staged = Path(tmp) / "file"
        shutil.copyfile(src, staged)
        os.utime(staged, (epoch, epoch))  # mcopy -m keeps the source's time
        _mtools(["mcopy", "-m", "-D", "o", str(staged), f"::{name}"], image, offset, f"mcopy {name}", epoch)
