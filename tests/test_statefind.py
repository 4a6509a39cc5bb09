"""Which OEMKIT-STATE filesystem is the box's state (hypervisor_core/statefind.py): a stick or another box's disk
never, the boot device's own on a fixed boot disk, a move on a box booting from flash or a VROC half — decided from
the boot device systemd-boot names and the serial; and the same read from a sysfs tree and device files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hypervisor_core import statefind
from hypervisor_core.statedisk import gpt_writes
from hypervisor_core.statefind import Part, decide, guids

SERIAL = "CZJ8SD0001"
MOVED = str(guids(SERIAL)[1])
ESP, IMAGE = "6f3a2c1e-0000-4000-8000-000000000002", "6f3a2c1e-0000-4000-8000-000000000001"


def _image(disk: str, flash: str | None, disk_guid: str = IMAGE) -> list[Part]:
    """The appliance image's partitions on `disk`: ESP (the one systemd-boot names), config, state."""
    return [
        Part(f"{disk}1", disk, "ESP", ESP if disk_guid == IMAGE else None, disk_guid, flash, False),
        Part(f"{disk}2", disk, "oemkit-config", None, disk_guid, flash, False),
        Part(f"{disk}3", disk, "oemkit-state", None, disk_guid, flash, True),
    ]


def _moved(disk: str, partuuid: str = MOVED, flash: str | None = None) -> Part:
    return Part(f"{disk}1", disk, "oemkit-datastore", partuuid, "d15c0000-0000-4000-8000-000000000000", flash, True)


def test_a_box_booting_from_sd_moves_from_its_own_state_partition() -> None:
    parts = _image("sdb", "USB")
    assert decide(parts, SERIAL, ESP.upper()) == ("move", "/dev/sdb3", "refused /dev/sdb3 (USB)")
    # a stick in a front port carrying a state filesystem is never the source, whatever its order
    stick = [Part("sda1", "sda", None, None, None, "USB", True)]
    assert decide(stick + parts, SERIAL, ESP)[:2] == ("move", "/dev/sdb3")


def test_after_the_move_the_datastore_disks_state_is_used_and_only_this_boxs() -> None:
    parts = _image("sdb", "USB")
    assert decide([_moved("sda"), *parts], SERIAL, ESP) == ("use", "/dev/sda1", "")
    assert decide([_moved("sda"), *parts], SERIAL.lower() + " ", ESP)[:2] == ("use", "/dev/sda1")  # as DMI says it
    # another box's moved disk, or a stick forging this box's GUID, is never this box's state
    verb, what, note = decide([_moved("sdc", str(guids("CZJ8SD0002")[1])), *parts], SERIAL, ESP)
    assert (verb, what) == ("move", "/dev/sdb3") and "ignored /dev/sdc1 (moved state of another box)" in note
    verb, what, note = decide([_moved("sdd", flash="USB"), *parts], SERIAL, ESP)
    assert (verb, what) == ("move", "/dev/sdb3") and "ignored /dev/sdd1 (moved state of removable media)" in note
    assert decide([_moved("sda"), _moved("sdc"), *parts], SERIAL, ESP)[0] == "none"


def test_a_box_booting_from_a_fixed_disk_uses_its_own_state_whatever_else_is_there() -> None:
    parts = _image("vda", None)
    assert decide(parts, SERIAL, ESP) == ("use", "/dev/vda3", "")
    second = _image("vdb", None, "0ddd15c0-0000-4000-8000-000000000000")  # another unit's oemkit disk in a bay
    stick = [Part("sda1", "sda", None, None, None, "USB", True)]
    verb, what, note = decide(parts + second + stick, SERIAL, ESP)
    assert (verb, what) == ("use", "/dev/vda3") and "/dev/vdb3" in note and "/dev/sda1" in note
    # a foreign moved state on a fixed-boot box is ignored, never moved to or from
    verb, what, note = decide([_moved("sdc", str(guids("X")[1])), *parts], SERIAL, ESP)
    assert (verb, what) == ("use", "/dev/vda3") and "another box" in note


def test_a_vroc_mirrors_halves_are_refused_and_the_state_moved_from_the_booted_half() -> None:
    halves = _image("nvme0n1", None) + [
        Part(p.name.replace("nvme0n1", "nvme1n1"), "nvme1n1", p.partname, p.partuuid, p.disk_guid, None, p.state)
        for p in _image("nvme0n1", None)
    ]
    verb, what, note = decide(halves, SERIAL, ESP)
    assert (verb, what) == ("move", "/dev/nvme0n13") and "halves of a mirror" in note
    assert decide([_moved("sda"), *halves], SERIAL, ESP)[:2] == ("use", "/dev/sda1")


def test_without_a_boot_device_the_label_alone_decides_as_before() -> None:
    """The developer mode (direct kernel boot, config on a CD): no LoaderDevicePartUUID."""
    state = [Part("vdb1", "vdb", None, None, None, None, True)]
    assert decide(state, SERIAL, None)[:2] == ("use", "/dev/vdb1")
    two = [*state, Part("vdc1", "vdc", None, None, None, None, True)]
    assert decide(two, SERIAL, None)[0] == "none" and "is on 2 devices" in decide(two, SERIAL, None)[1]
    stick = [Part("sda1", "sda", None, None, None, "USB", True)]
    assert decide(stick, SERIAL, None) == ("none", "refused /dev/sda1 (USB)", "")
    assert decide([], SERIAL, None) == ("none", "no OEMKIT-STATE filesystem", "")
    assert decide(_image("sdb", "USB")[:2], SERIAL, ESP)[0] == "none"  # a boot device without a state partition


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A box booted from a USB SD kit (sdb) with a SATA SSD (sda) holding its moved state, as sysfs and /dev show
    them; the device files are small regular files holding the real tables and superblock bytes."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    for disk, where, size in (("sda", "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0", 4 << 30),
                              ("sdb", "pci0000:00/0000:00:07.0/usb1/1-1/1-1:1.0/host1/target1:0:0/1:0:0:0",
                               256 << 20)):  # fmt: skip
        folder = root / "sys/devices" / where / "block" / disk
        (folder / "queue").mkdir(parents=True)
        (folder / "queue/logical_block_size").write_text("512\n")
        (folder / "removable").write_text("0\n")
        (root / "sys/class/block").mkdir(parents=True, exist_ok=True)
        os.symlink(folder, root / "sys/class/block" / disk)
        (folder / f"{disk}1").mkdir()
        (folder / f"{disk}1/partition").write_text("1\n")
        os.symlink(folder / f"{disk}1", root / "sys/class/block" / f"{disk}1")
        with (root / "dev" / disk).open("wb") as fh:
            fh.truncate(size)
    with (root / "dev/sda").open("r+b") as fh:  # the moved state's table, as statedisk writes it
        for offset, data in gpt_writes(4 << 30, 512, *guids(SERIAL)):
            fh.seek(offset)
            fh.write(data)
    head = bytearray(2048)
    head[1080:1082], head[1144:1156] = b"\x53\xef", b"OEMKIT-STATE"
    (root / "dev/sda1").write_bytes(bytes(head))
    (root / "dev/sdb1").write_bytes(bytes(head))
    (root / "sys/class/dmi/id").mkdir(parents=True)
    (root / "sys/class/dmi/id/product_serial").write_text(f"{SERIAL}\n")
    return root


def test_the_parts_are_read_from_sysfs_and_the_devices(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = {p.name: p for p in statefind.scan(tree)}
    assert parts["sda1"] == Part("sda1", "sda", "oemkit-datastore", MOVED, str(guids(SERIAL)[0]), None, True)
    assert (parts["sdb1"].flash, parts["sdb1"].state, parts["sdb1"].partname) == ("USB", True, None)
    assert statefind.main(tree) == 0
    assert capsys.readouterr().out == "use /dev/sda1\n"
    (tree / "sys/class/dmi/id/product_serial").write_text("CZJ8SD0002\n")  # the disk moved into another box
    statefind.main(tree)
    assert capsys.readouterr().out == "none refused /dev/sdb1 (USB)\n"


def test_a_filesystem_spanning_a_whole_disk_counts_too(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The developer mode's state disk and a stick formatted whole carry no partition table: they are read too."""
    head = bytearray(2048)
    head[1080:1082], head[1144:1156] = b"\x53\xef", b"OEMKIT-STATE"
    for disk, where in (("vdb", "pci0000:00/0000:00:06.0/virtio3"),
                        ("sdc", "pci0000:00/0000:00:07.0/usb1/1-2/1-2:1.0/host2/target2:0:0/2:0:0:0")):  # fmt: skip
        folder = tree / "sys/devices" / where / "block" / disk
        folder.mkdir(parents=True)
        (folder / "removable").write_text("0\n")
        os.symlink(folder, tree / "sys/class/block" / disk)
        (tree / "dev" / disk).write_bytes(bytes(head))
    parts = {p.name: p for p in statefind.scan(tree)}
    assert parts["vdb"] == Part("vdb", "vdb", None, None, None, None, True)
    assert parts["sdc"] == Part("sdc", "sdc", None, None, None, "USB", True)
    (tree / "sys/class/dmi/id/product_serial").write_text("OTHER\n")  # the moved state is not this box's
    statefind.main(tree)
    assert capsys.readouterr().out.startswith("use /dev/vdb ")  # the one fixed copy; the rest said
