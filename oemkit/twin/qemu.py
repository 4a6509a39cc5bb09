"""A twin as a QEMU command line: direct kernel boot of the core, console on stdio. Pure (golden-tested).

QEMU's q35 puts devices on bus 0 only, so a port on bus B sits behind a PCIe root port on a PCI expander bridge
numbered B-1 (consecutive buses share one expander): the firmware numbers the root port's secondary bus B and
Linux keeps the firmware's numbering. Disks go on the controllers their interface implies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from oemkit.twin.spec import Smbios, Twin, TwinDisk, TwinNic

SATA_PORTS = 5  # the q35 chipset AHCI has 6 ports; the last one holds the config CD


def opt(value: str) -> str:
    """QEMU option values escape a comma by doubling it."""
    return value.replace(",", ",,")


def smbios_args(s: Smbios) -> list[str]:
    """-smbios type=0..3: BIOS, system, base board and chassis."""
    system = [f"manufacturer={opt(s.manufacturer)}", f"product={opt(s.product)}", f"serial={opt(s.serial)}"]
    system.append(f"uuid={s.uuid}")
    if s.sku:
        system.append(f"sku={opt(s.sku)}")
    if s.family:
        system.append(f"family={opt(s.family)}")
    tables = (
        f"type=0,vendor={opt(s.manufacturer)},version={opt(s.bios_version)}",
        "type=1," + ",".join(system),
        f"type=2,manufacturer={opt(s.manufacturer)},product={opt(s.product)},serial={opt(s.serial)}",
        f"type=3,manufacturer={opt(s.manufacturer)},serial={opt(s.serial)}",
    )
    return [arg for table in tables for arg in ("-smbios", table)]


def _split(pci: str) -> tuple[int, int, int]:
    _, bus, devfn = pci.split(":")
    dev, fn = devfn.split(".")
    return int(bus, 16), int(dev, 16), int(fn)


def _runs(buses: list[int]) -> list[list[int]]:
    """Consecutive bus numbers share one expander bridge: [4, 5, 0x31] → [[4, 5], [0x31]]."""
    runs: list[list[int]] = []
    for bus in sorted(set(buses)):
        if runs and bus == runs[-1][-1] + 1:
            runs[-1].append(bus)
        else:
            runs.append([bus])
    return runs


@dataclass(frozen=True)
class Placed:
    """A NIC where both renderers (these QEMU arguments, the libvirt domain) put it."""

    bus: int
    device: int
    function: int
    index: int  # its place in the twin's NIC list (netdev and alias names)
    nic: TwinNic
    multifunction: bool  # function 0 of a slot with more functions


def placement(nic_list: tuple[TwinNic, ...]) -> tuple[list[list[int]], list[Placed]]:
    """The runs of buses needing an expander bridge (bus 0 excluded), and every NIC placed, bus by bus."""
    by_bus: dict[int, list[tuple[int, int, int, TwinNic]]] = {}
    for i, nic in enumerate(nic_list):
        bus, dev, fn = _split(nic.pci_address)
        by_bus.setdefault(bus, []).append((dev, fn, i, nic))
    placed = []
    for bus in sorted(by_bus):
        ports = sorted(by_bus[bus], key=lambda p: p[:3])
        per_slot = Counter(dev for dev, _fn, _i, _nic in ports)
        placed += [Placed(bus, dev, fn, i, nic, fn == 0 and per_slot[dev] > 1) for dev, fn, i, nic in ports]
    return _runs([b for b in by_bus if b != 0]), placed


def nic_args(nic_list: tuple[TwinNic, ...], guestfwd: str | None = None) -> list[str]:
    """-device arguments that put each NIC at its PCI address. Bus 0 slots the twin uses itself: 0x03 (SAS HBA),
    0x04-0x05 (boot disks), 0x06 (state disk), 0x07 (xHCI), 0x08-0x0f (expander bridges), 0x10+ (NVMe), 0x1c+
    (root ports for bus 1), 0x1f (chipset)."""
    args: list[str] = []
    runs, placed = placement(nic_list)
    parent: dict[int, str] = {0: "pcie.0"}
    for n, run in enumerate(runs):
        if run[0] == 1:  # buses 1, 2, … are what the firmware gives the root ports on bus 0, in slot order
            host, slot0 = "pcie.0", 0x1C
        else:
            host, slot0 = f"pxb{n}", 0
            args += ["-device", f"pxb-pcie,id={host},bus_nr={run[0] - 1},bus=pcie.0,addr={0x08 + n:#x}"]
        for k, bus in enumerate(run):
            parent[bus] = f"rp{bus:02x}"
            args += ["-device", f"pcie-root-port,id=rp{bus:02x},bus={host},chassis={bus},addr={slot0 + k:#x}"]
    for p in placed:
        bus, dev, fn, i, nic = p.bus, p.device, p.function, p.index, p.nic
        multi = ",multifunction=on" if p.multifunction else ""
        fwd = f",guestfwd={opt(guestfwd)}" if guestfwd else ""  # every port: any of them may carry the management
        args += ["-netdev", f"user,id=net{i},restrict=on{fwd}"]
        args += [
            "-device",
            f"virtio-net-pci,netdev=net{i},bus={parent[bus]},addr={dev:#x}.{fn:#x}{multi},"
            f"mac={nic.mac},speed={nic.speed_mbps},duplex=full,romfile=",  # no iPXE ROM: seconds of BIOS
        ]
    return args


def disk_args(disk_list: tuple[TwinDisk, ...], paths: list[str]) -> list[str]:
    """SATA on the chipset AHCI (ide.N), SAS on a virtio-scsi HBA at 00:03.0, NVMe at 00:10.0 onwards."""
    args: list[str] = []
    sata = sas = nvme = 0
    for i, (disk, path) in enumerate(zip(disk_list, paths, strict=True)):
        args += ["-drive", f"if=none,id=disk{i},format=raw,file={opt(path)}"]
        rate = 1 if disk.ssd else 7200
        if disk.interface == "sata":
            if sata == SATA_PORTS:
                raise ValueError(f"the twin has {SATA_PORTS} SATA ports; {len(disk_list)} SATA disks asked for")
            args += [
                "-device",
                f"ide-hd,drive=disk{i},bus=ide.{sata},rotation_rate={rate},serial={disk.serial},model={disk.model}",
            ]
            sata += 1
        elif disk.interface == "sas":
            if sas == 0:
                args += ["-device", "virtio-scsi-pci,id=hba0,bus=pcie.0,addr=0x3"]
            args += [
                "-device",
                f"scsi-hd,drive=disk{i},bus=hba0.0,scsi-id={sas},lun=0,rotation_rate={rate},"
                f"serial={disk.serial},vendor=SEAGATE,product={disk.model}",
            ]
            sas += 1
        else:
            args += ["-device", f"nvme,drive=disk{i},serial={disk.serial},bus=pcie.0,addr={0x10 + nvme:#x}"]
            nvme += 1
    return args


def qemu_argv(
    tw: Twin,
    *,
    kernel: str | None,
    initrd: str | None,
    disk_paths: list[str],
    config_iso: str | None,
    accel: str,
    state_disk: str | None = None,
    memory_mib: int = 3072,
    cpus: int = 2,
    append: str = "",
    firmware: list[str] | None = None,
    boot_disk: str | None = None,
    boot_format: str = "raw",
    boot_bus: str = "virtio",
    boot_mirror: str | None = None,
    machine: str = "q35",
    oem_strings: tuple[str, ...] = (),
    guestfwd: str | None = None,
) -> list[str]:
    """The whole QEMU command line, console on stdio: direct kernel boot of the core (the developer mode), or, with
    `firmware` (oemkit.twin.uefi) and `boot_disk`, the appliance image booted by the firmware as a box boots it."""
    argv = [
        "qemu-system-x86_64",
        "-accel",
        accel,
        "-machine",
        machine,
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mib),
        "-nographic",
        "-nodefaults",
        "-serial",
        "stdio",
        "-monitor",
        "none",
    ]
    if firmware is not None:
        if boot_disk is None:
            raise ValueError("firmware boot needs the boot disk")
        # a reboot is the firmware's to handle, as on a box: the core reboots when a bank on trial fails, and the
        # firmware's boot counting then falls back to the other bank
        argv += firmware
        argv += ["-drive", f"if=none,id=boot,format={boot_format},file={opt(boot_disk)}"]
        if boot_bus == "usb":  # SD/IDSDM kits and USB keys: USB mass storage behind the xHCI controller
            argv += ["-device", "qemu-xhci,id=xhci,bus=pcie.0,addr=0x7"]
            argv += ["-device", "usb-storage,drive=boot,bus=xhci.0,bootindex=0"]
        else:  # a fixed boot disk (BOSS/M.2-like), where the twin's other disks are not
            argv += ["-device", "virtio-blk-pci,drive=boot,bus=pcie.0,addr=0x5,bootindex=0"]
        if boot_mirror:  # the other half of a mirror the firmware's RAID would present as one
            argv += ["-drive", f"if=none,id=boot1,format={boot_format},file={opt(boot_mirror)}"]
            argv += ["-device", "virtio-blk-pci,drive=boot1,bus=pcie.0,addr=0x4"]
    else:
        if kernel is None or initrd is None:
            raise ValueError("direct kernel boot needs the kernel and the initrd")
        argv += ["-no-reboot", "-kernel", kernel, "-initrd", initrd]  # a panic ends the twin (panic=-1)
        argv += ["-append", " ".join(filter(None, ["console=ttyS0 panic=-1 quiet", append]))]
    argv += smbios_args(tw.smbios)
    for text in oem_strings:  # SMBIOS type 11: what a twin tells the core (hypervisor_core/smbios.py)
        argv += ["-smbios", f"type=11,value={opt(text)}"]
    argv += nic_args(tw.nics, guestfwd)
    argv += disk_args(tw.disks, disk_paths)
    if config_iso:
        argv += ["-drive", f"if=none,id=cfg,format=raw,readonly=on,media=cdrom,file={opt(config_iso)}"]
        argv += ["-device", "ide-cd,drive=cfg,bus=ide.5"]
    if state_disk:  # the core's OEMKIT-STATE filesystem, on a disk of its own as the boot media's partition will be
        argv += ["-drive", f"if=none,id=state,format=raw,file={opt(state_disk)}"]
        argv += ["-device", "virtio-blk-pci,drive=state,serial=OEMKIT-STATE,bus=pcie.0,addr=0x6"]
    return argv
