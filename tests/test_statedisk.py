"""The state moved off SD/USB onto the datastore's first disk (hypervisor_core/statedisk.py): the table it writes,
checked by the real sgdisk; the filesystem it copies, checked by the real e2fsck; a disk with anything on it never
written; the crash window; which disk, and only on the box the config is for. The kernel's part (re-reading the
table, the mount, growing the filesystem) runs in the appliance boot test on an SD-booting twin."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from hypervisor_core import config, statedisk
from hypervisor_core.facts import probe
from hypervisor_core.growpart import Header
from hypervisor_core.match import Refusal

from .conftest import REPO
from .firstboot_kit import PUB, compile_to, facts_tree

MiB = 1 << 20
GiB = 1 << 30
PROFILE = REPO / "tests" / "data" / "profiles" / "sd-boot" / "store-sd.yaml"
SITE = REPO / "tests" / "data" / "profiles" / "sd-boot" / "sites" / "store-ber02.yaml"
DL360 = "hpe/ProLiant-DL360-Gen10/0438CFCFB022.txt"
SERIAL = "CZJ8SD0001"


@pytest.fixture(scope="module")
def state_fs(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An empty 32 MiB ext4 labelled OEMKIT-STATE, as the image carries it (made by the real mke2fs)."""
    path = tmp_path_factory.mktemp("fs") / "state.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "OEMKIT-STATE", str(path), "32M"], check=True)
    return path.read_bytes()


def _disk(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def _place(path: Path, source: bytes, sector: int = 512) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        statedisk.place(fd, path.stat().st_size, sector, source, SERIAL)
    finally:
        os.close(fd)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_blank_disk_gets_one_partition_to_its_end_holding_the_state(tmp_path: Path, state_fs: bytes) -> None:
    disk = _disk(tmp_path / "ssd.raw", 4 * GiB + 12345 * 512)  # not a whole number of MiB
    _place(disk, state_fs)
    verify = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True, check=True).stdout
    assert "No problems found" in verify, verify
    info = subprocess.run(["sgdisk", "-i", "1", str(disk)], capture_output=True, text=True, check=True).stdout
    disk_guid, part_guid = statedisk.guids(SERIAL)
    assert "Partition name: 'oemkit-datastore'" in info and "0FC63DAF-8483-4772-8E79-3D69D8477DE4" in info
    assert f"Partition unique GUID: {str(part_guid).upper()}" in info
    first = int(info.split("First sector: ")[1].split()[0])
    last = int(info.split("Last sector: ")[1].split()[0])
    assert first == 2048 and (last + 1) % 2048 == 0 and (disk.stat().st_size - (last + 1) * 512) < 2 * MiB
    printed = subprocess.run(["sgdisk", "-p", str(disk)], capture_output=True, text=True, check=True).stdout
    assert f"Disk identifier (GUID): {str(disk_guid).upper()}" in printed
    part = tmp_path / "part.ext4"
    with disk.open("rb") as fh:
        fh.seek(MiB)
        part.write_bytes(fh.read(len(state_fs)))
    assert part.read_bytes() == state_fs  # byte for byte the factory's filesystem
    subprocess.run(["e2fsck", "-fn", str(part)], check=True, capture_output=True)


def test_the_table_follows_the_disks_sector_size() -> None:
    """A 4Kn disk: the header in LBA 1 is at 4096, the array 16 KiB long is 4 sectors, the partition at 1 MiB."""
    writes = statedisk.gpt_writes(8 * GiB, 4096, *statedisk.guids(SERIAL))
    (start, head), (backup_at, tail) = writes
    assert start == 0 and head[4096:4104] == b"EFI PART" and head[510:512] == b"\x55\xaa"
    entry = head[2 * 4096 : 2 * 4096 + 128]
    assert int.from_bytes(entry[32:40], "little") == MiB // 4096
    assert backup_at + len(tail) == 8 * GiB and tail[-4096:-4088] == b"EFI PART"
    primary, backup = Header.parse(head[4096:8192]), Header.parse(tail[-4096:])  # each CRC checked
    assert (primary.my_lba, primary.alternate_lba, backup.my_lba) == (1, 8 * GiB // 4096 - 1, 8 * GiB // 4096 - 1)
    assert primary.entries_crc == backup.entries_crc == zlib.crc32(head[2 * 4096 : 2 * 4096 + 128 * 128])
    assert backup.entries_lba * 4096 == backup_at


@pytest.mark.parametrize("where", ["table", "start", "end"])
def test_a_disk_with_anything_on_it_is_never_written(tmp_path: Path, state_fs: bytes, where: str) -> None:
    disk = _disk(tmp_path / "used.raw", 2 * GiB)
    if where == "table":
        subprocess.run(["sgdisk", "-o", str(disk)], check=True, capture_output=True)
    else:
        with disk.open("r+b") as fh:
            fh.seek(4096 if where == "start" else 2 * GiB - 4096)  # an LVM label, or RAID metadata at the end
            fh.write(b"LABELONE")
    before = _sha(disk)
    with pytest.raises(statedisk.NotMoved, match="not blank"):
        _place(disk, state_fs)
    assert _sha(disk) == before


def test_a_disk_too_small_for_a_datastore_is_not_written(tmp_path: Path, state_fs: bytes) -> None:
    disk = _disk(tmp_path / "tiny.raw", 512 * MiB)
    with pytest.raises(statedisk.NotMoved, match="too few"):
        _place(disk, state_fs)
    assert not any(disk.read_bytes())


def test_a_crash_before_the_table_leaves_a_disk_the_next_boot_starts_over_on(
    tmp_path: Path, state_fs: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power lost after the filesystem's copy, before its table (a mock: a real crash cannot be timed here)."""
    disk = _disk(tmp_path / "ssd.raw", 2 * GiB)
    real = os.pwrite

    def power_lost(fd: int, data: bytes, offset: int) -> int:
        if offset != MiB:
            raise OSError("power lost")
        return real(fd, data, offset)

    with monkeypatch.context() as m:
        m.setattr(statedisk.os, "pwrite", power_lost)
        with pytest.raises(OSError, match="power lost"):
            _place(disk, state_fs)
    with disk.open("rb") as fh:
        assert not any(fh.read(MiB))  # still blank where the next boot looks
    assert _place_says(disk, state_fs) == "moved"
    assert "No problems found" in subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True).stdout


def _place_says(path: Path, source: bytes) -> str:
    fd = os.open(path, os.O_RDWR)
    try:
        return statedisk.place(fd, path.stat().st_size, 512, source, SERIAL)
    finally:
        os.close(fd)


@pytest.mark.parametrize("cut", ["torn-primary", "no-backup", "done"])
def test_an_interrupted_table_is_finished_and_a_finished_one_left_alone(
    tmp_path: Path, state_fs: bytes, cut: str
) -> None:
    """Every byte of the move is derived from the serial, so a table cut short by power loss is recognised as this
    serial's and finished; a finished move writes nothing (the filesystem may be in use by then)."""
    disk = _disk(tmp_path / "ssd.raw", 2 * GiB)
    (head_at, head), (tail_at, tail) = statedisk.gpt_writes(2 * GiB, 512, *statedisk.guids(SERIAL))
    with disk.open("r+b") as fh:
        fh.seek(MiB)
        fh.write(state_fs)
        fh.seek(head_at)
        fh.write(head[:1024] if cut == "torn-primary" else head)  # the MBR and header, not the entries
        if cut == "done":
            fh.seek(tail_at)
            fh.write(tail)
            fh.seek(MiB + 4096)
            fh.write(b"state written since")
    said = _place_says(disk, state_fs)
    assert (
        said == {"torn-primary": "moved", "no-backup": "the backup table finished", "done": "already moved there"}[cut]
    )
    assert "No problems found" in subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True).stdout
    with disk.open("rb") as fh:
        fh.seek(MiB + 4096)
        assert (fh.read(19) == b"state written since") is (cut == "done")


def test_another_serials_table_is_foreign(tmp_path: Path, state_fs: bytes) -> None:
    disk = _disk(tmp_path / "ssd.raw", 2 * GiB)
    (_, head), _ = statedisk.gpt_writes(2 * GiB, 512, *statedisk.guids("CZJ8SD0002"))
    with disk.open("r+b") as fh:
        fh.write(head)
    with pytest.raises(statedisk.NotMoved, match="not blank"):
        _place(disk, state_fs)


def test_the_state_source_must_be_the_images_filesystem(tmp_path: Path, state_fs: bytes, monkeypatch) -> None:
    sys_block = tmp_path / "sys"
    for name, data in (("sdz3", state_fs), ("sdz4", bytes(4 * MiB))):
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "size").write_text(f"{len(data) // 512}\n")
        (tmp_path / name).write_bytes(data)
    monkeypatch.setattr(statedisk, "SYS_BLOCK", sys_block)
    assert statedisk.read_source(str(tmp_path / "sdz3")) == state_fs
    with pytest.raises(statedisk.NotMoved, match="holds no OEMKIT-STATE filesystem"):
        statedisk.read_source(str(tmp_path / "sdz4"))
    (sys_block / "sdz4" / "size").write_text(f"{(1 << 30) // 512}\n")
    with pytest.raises(statedisk.NotMoved, match="not the image's state filesystem"):
        statedisk.read_source(str(tmp_path / "sdz4"))


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> config.UnitConfig:
    path = tmp_path_factory.mktemp("unit") / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, path)
    return config.load(path.read_bytes(), config.read_public_key(PUB.read_text()))


def _box(tmp_path: Path, serial: str = SERIAL, disks: str = "sata:ssd:480,sata:hdd:2000x2") -> Path:
    tree = facts_tree(DL360, serial, tmp_path / "box", disks)
    (tree / "sys/firmware/efi/efivars").mkdir(parents=True, exist_ok=True)
    (tree / "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c").write_bytes(b"\6\0\0\0\1")
    (tree / "sys/class/tpm/tpm0").mkdir(parents=True, exist_ok=True)
    return tree


def test_the_state_goes_to_the_datastore_rules_disk_on_the_box_the_config_is_for(tmp_path: Path, unit) -> None:
    facts = probe(_box(tmp_path))
    chosen = statedisk.choose(unit, facts)
    assert chosen.interface == "sata" and chosen.rotational is False and chosen.size_bytes >= 200 * GiB
    other = probe(_box(tmp_path / "other", serial="CZJ8SD0002"))
    with pytest.raises(Refusal, match="wrong unit"):
        statedisk.choose(unit, other)


def test_a_mounted_state_partition_on_the_datastore_disk_leaves_it_the_datastores(tmp_path: Path, unit) -> None:
    """After the move the agent must find the same disk: the moved state's mount does not make it boot media, and
    the disk says it holds the state; a disk carrying the appliance's config partition is boot media, mounted or
    not (the SD kit, either half of a VROC mirror)."""
    tree = _box(tmp_path)
    disk = statedisk.choose(unit, probe(tree))
    part = statedisk.partition_of(disk.name, 1)
    folder = tree / "sys/block" / disk.name / part
    folder.mkdir(parents=True)
    (folder / "partition").write_text("1\n")
    (folder / "uevent").write_text(f"DEVNAME={part}\nPARTN=1\nPARTNAME=oemkit-datastore\n")
    (tree / "proc").mkdir(exist_ok=True)
    (tree / "proc/mounts").write_text(f"/dev/{part} /run/oemkit/state ext4 rw 0 0\n")
    assert statedisk.choose(unit, probe(tree)) == replace(disk, holds_state=True)
    (folder / "uevent").write_text(f"DEVNAME={part}\nPARTN=1\nPARTNAME=other\n")
    assert next(d for d in probe(tree).disks if d.name == disk.name).in_use
    (tree / "proc/mounts").write_text("")
    (folder / "uevent").write_text(f"DEVNAME={part}\nPARTN=2\nPARTNAME=oemkit-config\n")
    assert next(d for d in probe(tree).disks if d.name == disk.name).in_use  # boot media, nothing mounted


def test_an_unsigned_or_foreign_config_writes_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, path)
    stranger = tmp_path / "stranger.pub"  # a valid key, not the factory's
    stranger.write_text(PUB.read_text().replace("sfQp4X8O", "AAAAAAAA"))
    code = statedisk.main(["--config", str(path), "--pubkey", str(stranger), "--from", "/dev/null"])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("not moved: unit config refused: "), out
    tampered = tmp_path / "tampered.json"
    tampered.write_text(path.read_text().replace(SERIAL, "CZJ8SD0009"))
    code = statedisk.main(["--config", str(tampered), "--pubkey", str(PUB), "--from", "/dev/null"])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("not moved: unit config refused: "), out
