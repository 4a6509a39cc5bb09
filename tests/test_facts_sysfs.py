"""Facts from sysfs layouts a real kernel produces that the dump-built trees do not: virtio NICs (the netdev's
device is virtioN, under the PCI function) and SATA/SAS disks whose serial is only in the VPD page 0x80."""

from __future__ import annotations

import os
from pathlib import Path

from hypervisor_core.facts import probe


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_virtio_nic_is_found_at_its_pci_function(tmp_path: Path) -> None:
    pci = tmp_path / "sys/devices/pci0000:00/0000:00:1c.0/0000:04:00.1"
    (pci / "virtio3").mkdir(parents=True)
    _link(pci / "virtio3/driver", "../../../../../bus/virtio/drivers/virtio_net")
    net = tmp_path / "sys/class/net/eth3"
    _link(net / "device", "../../../devices/pci0000:00/0000:00:1c.0/0000:04:00.1/virtio3")
    (net / "address").write_text("02:00:00:00:00:01\n")
    (nic,) = probe(tmp_path).nics
    assert (nic.name, nic.pci_address, nic.driver) == ("eth3", "0000:04:00.1", "virtio_net")


def test_sata_disk_serial_comes_from_vpd_page_80(tmp_path: Path) -> None:
    block = tmp_path / "sys/block/sda"
    (block / "device").mkdir(parents=True)
    (block / "size").write_text(str(480 << 21) + "\n")
    (block / "device/vendor").write_text("ATA     \n")
    serial = b"TW30B2D0CD"
    (block / "device/vpd_pg80").write_bytes(b"\x00\x80\x00" + bytes([len(serial)]) + serial)
    (disk,) = probe(tmp_path).disks
    assert (disk.interface, disk.serial, disk.size_bytes) == ("sata", "TW30B2D0CD", 480 << 30)


def test_usb_nic_has_no_pci_address(tmp_path: Path) -> None:
    """The iDRAC host interface is a USB NIC: its path passes the xHCI controller, which is not its address."""
    usb = tmp_path / "sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0"
    usb.mkdir(parents=True)
    _link(tmp_path / "sys/class/net/idrac/device", "../../../devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0")
    (nic,) = probe(tmp_path).nics
    assert (nic.name, nic.pci_address) == ("idrac", None)
