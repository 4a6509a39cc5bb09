"""`oemkit facts from-dmi`: a sysfs/procfs-shaped tree of a real box, from its dmidecode dump and catalog model.

The tree is what `hypervisor_core.facts.probe(root)` reads on a real server, laid out the same way (the same
files, symlinks and value formats), so first boot can be previewed and rehearsed at the factory: SMBIOS from the
dump (with the unit's serial), CPUs and memory from the dump, NICs at the catalog's PCI addresses with their
drivers, disks as ordered, the embedded boot device, TPM and Secure Boot as the model offers them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from hypervisor_core.identity import DMI_FIELDS
from oemkit.catalog.schema import HardwareModel
from oemkit.hardware.disks import DiskSpec, disks_for_rule, scsi_name
from oemkit.hardware.dmi import DmiReport
from oemkit.hardware.nics import ifname, placed_ports, unit_mac

GIB = 1 << 30
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    os.symlink(target, path)


def create_tree(
    root: Path, report: DmiReport, model: HardwareModel, serial: str, disks: list[DiskSpec] | None = None
) -> None:
    """The tree at `root` (new, or an empty folder), whole or not at all: built beside it and renamed into place,
    so an interrupted run leaves no half tree; `root` itself is never a link to write through."""
    if root.is_symlink():
        raise OSError(errno.ELOOP, "a symbolic link: give the folder itself", str(root))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        build_tree(tmp, report, model, serial, disks)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 is for its life as a temporary folder
        if root.is_dir():
            root.rmdir()  # empty (checked by the caller); a folder with content makes this fail, nothing lost
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_tree(
    root: Path, report: DmiReport, model: HardwareModel, serial: str, disks: list[DiskSpec] | None = None
) -> None:
    dmi = root / "sys/class/dmi/id"
    # every SMBIOS string the dump has, as the kernel exposes it; the unit's serial (dumps usually mask theirs),
    # no UUID (the dump's is another box's), and the rack chassis as the number sysfs shows
    values = {name: getattr(report.identity, name) for name in DMI_FIELDS}
    values |= {"product_serial": serial, "product_uuid": None, "chassis_type": "23"}
    for name, value in values.items():
        if value is not None:
            _write(dmi / name, value + "\n")
    # as many logical CPUs as the dump's populated sockets have threads (a guess only when it does not say)
    threads = report.cpu_threads or max(1, (report.cpu_sockets_populated or 1) * 2 * 8)
    flag = model.cpu.virtualization
    cpuinfo = "".join(
        f"processor\t: {i}\nvendor_id\t: {'GenuineIntel' if flag == 'vmx' else 'AuthenticAMD'}\n"
        f"flags\t\t: fpu lm {flag} aes avx2\n\n"
        for i in range(threads)
    )
    _write(root / "proc/cpuinfo", cpuinfo)
    memory_kib = (report.memory_bytes or 16 * GIB) // 1024
    _write(root / "proc/meminfo", f"MemTotal:       {memory_kib} kB\nMemFree:        {memory_kib // 2} kB\n")
    _write(root / "dev/kvm", "")
    _nics(root, model, serial)
    _disks(root, model, serial, disks if disks is not None else disks_for_rule(model, None))
    if model.firmware.secure_boot:
        efivars = root / "sys/firmware/efi/efivars"
        efivars.mkdir(parents=True, exist_ok=True)
        (efivars / f"SecureBoot-{EFI_GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x01")
    if model.firmware.tpm == "2.0":
        _write(root / "sys/class/tpm/tpm0/tpm_version_major", "2\n")


def _nics(root: Path, model: HardwareModel, serial: str) -> None:
    for port, pci, _known in placed_ports(model):
        dev = root / "sys/devices/pci0000:00" / pci
        _link(dev / "driver", f"../../../bus/pci/drivers/{port.driver}")
        (root / "sys/bus/pci/drivers" / port.driver).mkdir(parents=True, exist_ok=True)
        net = root / "sys/class/net" / ifname(pci)
        _link(net / "device", f"../../../devices/pci0000:00/{pci}")
        _write(net / "address", unit_mac(serial, port.id) + "\n")
        _write(net / "speed", f"{port.speed_mbps}\n")
        _write(net / "carrier", "1\n")
        _write(net / "operstate", "up\n")
    _write(root / "sys/class/net/lo/address", "00:00:00:00:00:00\n")  # no device link: skipped, as on a box


def _disk(root: Path, name: str, spec: DiskSpec, model_name: str, serial: str) -> None:
    block = root / "sys/block" / name
    _write(block / "size", f"{spec.size_gib * GIB // 512}\n")
    _write(block / "removable", "0\n")
    _write(block / "queue/rotational", "0\n" if spec.ssd else "1\n")
    device = block / "device"
    _write(device / "model", model_name + "\n")
    if spec.interface == "nvme":
        _write(device / "serial", serial + "\n")
        _write(block / "wwid", f"eui.{hashlib.sha256(serial.encode()).hexdigest()[:16]}\n")
    else:
        _write(device / "vendor", ("ATA" if spec.interface == "sata" else "SEAGATE") + "\n")
        _write(device / "wwid", f"naa.5{hashlib.sha256(serial.encode()).hexdigest()[:15]}\n")


def _disks(root: Path, model: HardwareModel, serial: str, disks: list[DiskSpec]) -> None:
    scsi = nvme = 0
    for spec in disks:
        for n in range(spec.count):
            disk_serial = f"{serial}-{spec.interface}{scsi + nvme}{n}"
            kind = "SSD" if spec.ssd else "HDD"
            if spec.interface == "nvme":
                _disk(root, f"nvme{nvme}n1", spec, f"NVMe {kind} {spec.size_gib}G", disk_serial)
                nvme += 1
            else:
                _disk(
                    root,
                    scsi_name(scsi),
                    spec,
                    f"{spec.interface.upper()} {kind} {spec.size_gib}G",
                    disk_serial,
                )
                scsi += 1
    for boot in model.boot_devices:
        if boot.kind in ("boss", "m2") and boot.capacities_gib:
            spec = DiskSpec("sata", True, min(boot.capacities_gib), 1)
            name = scsi_name(scsi)
            _disk(root, name, spec, boot.name, f"{serial}-boot")
            # the core runs from its boot media and keeps its config partition mounted
            _write(root / "proc/mounts", f"/dev/{name}1 /run/oemkit/boot vfat ro,relatime 0 0\n")
            break
