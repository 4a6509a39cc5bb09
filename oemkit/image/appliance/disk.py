"""Byte-reproducible disk images without root or loop devices: FAT filesystems made by `mkfs.fat --invariant` and
filled by mtools, a GPT written by `sgdisk` with GUIDs the caller derives, each filesystem copied in at its offset.

Every tool runs with SOURCE_DATE_EPOCH (mtools stamps directory entries with it) and every file is copied with a
fixed modification time, so the same inputs give the same bytes on any machine, as any user."""

from __future__ import annotations

import os
import shutil
import tempfile
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
    image: Path  # a filesystem image, copied in at the partition's start
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


def gpt_disk(path: Path, disk_guid: str, partitions: list[Partition], epoch: int) -> Path:
    """A raw disk: GPT (protective MBR, both headers) with `partitions` in order, each filesystem at its start."""
    starts, at = [], ALIGN_SECTORS
    for p in partitions:
        starts.append(at)
        at += p.size_mib * MiB // SECTOR
    total = at + ALIGN_SECTORS  # room for the backup GPT at the end
    path.unlink(missing_ok=True)
    with path.open("wb") as fh:
        fh.truncate(total * SECTOR)
    cmd = ["sgdisk", "-Z", "-U", disk_guid]
    for i, (p, start) in enumerate(zip(partitions, starts, strict=True), 1):
        end = start + p.size_mib * MiB // SECTOR - 1
        cmd += ["-n", f"{i}:{start}:{end}", "-t", f"{i}:{p.type_guid}", "-u", f"{i}:{p.guid}", "-c", f"{i}:{p.name}"]
    run_tool([*cmd, str(path)], what="sgdisk", env=_env(epoch))
    with path.open("r+b") as fh:
        for p, start in zip(partitions, starts, strict=True):
            data = p.image.read_bytes()
            if len(data) > p.size_mib * MiB:
                raise ValueError(f"{p.image.name} is larger than partition {p.name}")
            fh.seek(start * SECTOR)
            fh.write(data)
    return path
