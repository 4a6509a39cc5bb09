"""The state partition grown to its disk's end (hypervisor_core/growpart.py), on GPTs written by the real sgdisk and
checked by it afterwards. The kernel's part (re-reading the table, growing the mounted ext4) runs in the appliance
boot test; here the table itself, on a file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hypervisor_core import growpart

MiB = 1 << 20


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The appliance's layout in small: ESP, config, state last (sgdisk costs seconds a call: made once)."""
    path = tmp_path_factory.mktemp("gpt") / "template.raw"
    with path.open("wb") as fh:
        fh.truncate(64 * MiB)
    cmd = ["sgdisk", "-Z", "-n", "1:2048:+8M", "-c", "1:ESP", "-n", "2:0:+8M", "-c", "2:oemkit-config",
           "-n", "3:0:+16M", "-c", "3:oemkit-state", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def _sgdisk(*args: str) -> str:
    return subprocess.run(["sgdisk", *args], check=True, capture_output=True, text=True).stdout


def _grow(path: Path, partno: int) -> tuple[int, int] | None:
    fd = os.open(path, os.O_RDWR)
    try:
        return growpart.grow_table(fd, path.stat().st_size, partno)
    finally:
        os.close(fd)


def test_the_last_partition_grows_to_the_end_of_a_larger_disk(template: Path, tmp_path: Path) -> None:
    disk = Path(shutil.copyfile(template, tmp_path / "disk.raw"))
    with disk.open("r+b") as fh:
        fh.truncate(1024 * MiB)  # the image written to a larger device: its backup GPT is now mid-disk
    first, last = _grow(disk, 3) or (0, 0)
    assert (last + 1) * 512 == 1023 * MiB  # the last whole MiB before the backup table
    assert "No problems found" in _sgdisk("-v", str(disk))  # both headers, both arrays, every CRC
    info = _sgdisk("-i", "3", str(disk))
    assert f"First sector: {first} " in info and f"Last sector: {last} " in info and "oemkit-state" in info
    assert _grow(disk, 3) is None  # a second boot: nothing to do


def test_only_the_last_partition_grows_and_a_damaged_table_is_left_alone(template: Path, tmp_path: Path) -> None:
    disk = Path(shutil.copyfile(template, tmp_path / "disk.raw"))
    with disk.open("r+b") as fh:
        fh.truncate(256 * MiB)
    assert _grow(disk, 2) is None  # partition 3 lies after it
    with disk.open("rb") as fh:
        before = fh.read(34 * 512)
    with disk.open("r+b") as fh:
        fh.seek(512 + 40)
        fh.write(b"\xff")  # a flipped byte in the primary header
    with pytest.raises(growpart.GrowError, match="CRC"):
        _grow(disk, 3)
    with disk.open("rb") as fh:
        assert fh.read(34 * 512)[1024:] == before[1024:]  # nothing written
    raid = Path(shutil.copyfile(template, tmp_path / "raid.raw"))
    with raid.open("r+b") as fh:  # a larger drive whose last sectors hold a software-RAID anchor (as IMSM's)
        fh.truncate(256 * MiB)
        fh.seek(256 * MiB - 1024)
        fh.write(b"Intel Raid ISM Cfg Sig. ")
    with pytest.raises(growpart.GrowError, match="not empty"):
        _grow(raid, 3)
    same = Path(shutil.copyfile(template, tmp_path / "same.raw"))
    assert _grow(same, 3) is None  # the disk is the image's own size


def test_growing_a_device_that_is_no_partition_says_so() -> None:
    assert "not a partition" in growpart.grow_device("/dev/oemkit-no-such-disk")


def test_the_filesystems_size_is_read_from_its_superblock(tmp_path: Path) -> None:
    """statvfs leaves out ext4's metadata, so a full filesystem would always look smaller than its partition and be
    'grown' at every boot: the size comes from the superblock (made here by the real mkfs.ext4)."""
    fs = tmp_path / "state.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-T", "default", "-b", "4096", str(fs), "32M"], check=True)
    assert growpart.fs_blocks(str(fs)) == (32 * MiB // 4096, 4096)
    (tmp_path / "zero.img").write_bytes(bytes(4096))
    with pytest.raises(growpart.GrowError, match="no ext4 superblock"):
        growpart.fs_blocks(str(tmp_path / "zero.img"))
