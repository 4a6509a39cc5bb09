"""A twin as a libvirt domain: the appliance boot of twin/qemu.py (OVMF with Secure Boot, the boot device as the model
has it, SMBIOS, NICs at the catalog's PCI addresses, datastore disks, a TPM) for libvirtd to run. Pure, golden-tested:
the same spec.Twin and spec.BootDisk drive both renderers, and the PCI layout is qemu.py's own (its bus runs).

In libvirt a device's <address bus=…> names a controller's *index*, not the bus number the guest sees: the guest numbers
buses itself (a pxb-pcie's busNr, then the firmware behind each root port). So the controllers are qemu.py's — a
pcie-expander-bus numbered B-1 for a run of buses B, B+1, … with a pcie-root-port per bus (bus 1's root ports on
pcie.0 at 0x1c+) — indexed 1, 2, … in the order qemu.py adds them, and each NIC names its root port's index. The
indices are contiguous on purpose: libvirt fills a gap in them with a pcie-root-port of its own on bus 0, which
would take a slot and a bus number the firmware then gives away. tests/test_twin_domain.py checks the guest's view.

libvirt 9.0 has no NVMe disk bus: NVMe drives go on QEMU's command line (<qemu:commandline>), as qemu.py puts them.
What libvirt cannot say natively but QEMU can (a NIC's link speed, an ATA disk's model) goes through
<qemu:override> on the device's user alias (libvirt >= 8.2).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from oemkit.hardware.disks import scsi_name
from oemkit.twin import uefi
from oemkit.twin.qemu import SATA_PORTS, opt, placement
from oemkit.twin.spec import BootDisk, Smbios, Twin, TwinDisk, TwinNic

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
TYPES = ("qemu", "kvm")  # TCG (-cpu max) or KVM (-cpu host)
TWINS_DIR = "/var/lib/libvirt/images/oemkit-twins"  # the `oemkit-twins` pool: every twin's volumes (volume_name)
SAS_VENDOR, SAS_PRODUCT_MAX = "SEAGATE", 16  # SCSI INQUIRY: vendor 8, product 16 characters


@dataclass(frozen=True)
class DomainPaths:
    """Where a twin's files are on the libvirt host."""

    boot: str  # the boot disk's file (a qcow2 overlay) on the libvirt host
    boot_mirror: str | None  # the second half when BootDisk.mirror
    disks: tuple[str, ...]  # datastore disk files (raw), one per Twin.disks entry, same order
    nvram_template: str  # the OEM-enrolled OVMF VARS file on the libvirt host
    nvram: str | None  # where libvirt keeps this domain's NVRAM (None: libvirt's default)
    console_log: str  # serial console log file on the libvirt host


def domain_name(serial: str) -> str:
    """The twin's domain name: stable, so a crashed run's twin is found (and removed) by it."""
    return f"oemkit-twin-{serial}"


def volume_name(serial: str, part: str) -> str:
    """A twin's file in the libvirt host's `oemkit-twins` pool (oemkit/twin/virt.py makes them): `part` is
    image.raw, boot.qcow2, boot1.qcow2, disk<i>.raw, vars.fd or console.log."""
    return f"{domain_name(serial)}-{part}"


def default_paths(tw: Twin, boot: BootDisk) -> DomainPaths:
    """Where `oemkit boot` puts the twin's files on a libvirt host: its volumes in the `oemkit-twins` pool (the
    overlay on the uploaded image, the mirror's half, the datastore disks, the variable store template), NVRAM at
    libvirt's default."""

    def at(part: str) -> str:
        return f"{TWINS_DIR}/{volume_name(tw.serial, part)}"

    return DomainPaths(
        boot=at("boot.qcow2"),
        boot_mirror=at("boot1.qcow2") if boot.mirror else None,
        disks=tuple(at(f"disk{i}.raw") for i in range(len(tw.disks))),
        nvram_template=at("vars.fd"),
        nvram=None,
        console_log=at("console.log"),
    )


def domain_notes(tw: Twin) -> tuple[str, ...]:
    """What the domain gives differently from the QEMU twin, or outside libvirt's model of it."""
    notes = []
    nvme = sum(d.interface == "nvme" for d in tw.disks)
    if nvme:
        notes.append(
            f"{nvme} NVMe drive(s) on QEMU's command line (<qemu:commandline>, 00:10.0 onwards): libvirt 9.0 has no "
            "NVMe disk bus, so libvirt neither manages (labels, hot-plugs) these disks nor knows their slots"
        )
    if tw.nics:
        notes.append("NICs are user-mode networking without QEMU's restrict=on (libvirt has no setting for it)")
    return tuple(notes)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    element.text = text
    return element


def _comment(parent: ET.Element, text: str) -> None:
    """An XML comment (ElementTree does not escape them: no '--' may reach one)."""
    parent.append(ET.Comment(" " + text.replace("--", "- -") + " "))


def _pci(parent: ET.Element, bus: int, slot: int, function: int = 0, multifunction: bool = False) -> None:
    """A PCI address as libvirt writes it; `bus` is a controller index."""
    attrib = {
        "type": "pci",
        "domain": "0x0000",
        "bus": f"{bus:#04x}",
        "slot": f"{slot:#04x}",
        "function": f"{function:#x}",
    }
    if multifunction:
        attrib["multifunction"] = "on"
    _sub(parent, "address", **attrib)


def _sysinfo(dom: ET.Element, s: Smbios, oem_strings: tuple[str, ...]) -> None:
    """SMBIOS types 0-3 as qemu.py's smbios_args, and type 11 (the OEM strings a twin tells the core)."""
    info = _sub(dom, "sysinfo", type="smbios")
    tables: list[tuple[str, list[tuple[str, str | None]]]] = [
        ("bios", [("vendor", s.manufacturer), ("version", s.bios_version)]),
        ("system", [("manufacturer", s.manufacturer), ("product", s.product), ("serial", s.serial),
                    ("uuid", s.uuid), ("sku", s.sku), ("family", s.family)]),
        ("baseBoard", [("manufacturer", s.manufacturer), ("product", s.product), ("serial", s.serial)]),
        ("chassis", [("manufacturer", s.manufacturer), ("serial", s.serial)]),
    ]  # fmt: skip
    for tag, entries in tables:
        table = _sub(info, tag)
        for name, value in entries:
            if value:
                _sub(table, "entry", value, name=name)
    if oem_strings:
        strings = _sub(info, "oemStrings")
        for text in oem_strings:
            _sub(strings, "entry", text)


def _disk(devices: ET.Element, path: str, fmt: str, dev: str, bus: str, alias: str, **target: str) -> ET.Element:
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=fmt)
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev=dev, bus=bus, **target)
    _sub(disk, "alias", name=alias)
    return disk


def _boot_device(devices: ET.Element, boot: BootDisk, paths: DomainPaths, fmt: str) -> None:
    """As qemu.py's firmware boot: a virtio disk at 00:05.0 (its mirror half at 00:04.0), or a USB disk behind an
    xHCI controller at 00:07.0 for SD/IDSDM kits and USB keys. No USB controller otherwise (libvirt would add one)."""
    if boot.bus == "usb":
        disk = _disk(devices, paths.boot, fmt, "sda", "usb", "ua-boot", removable="off")
        _sub(disk, "boot", order="1")
        _sub(disk, "address", type="usb", bus="0", port="1")
    else:
        disk = _disk(devices, paths.boot, fmt, "vda", "virtio", "ua-boot")
        _sub(disk, "boot", order="1")
        _pci(disk, 0, 0x05)
    if boot.mirror:  # the other half of a mirror the firmware's RAID would present as one
        if paths.boot_mirror is None:
            raise ValueError("the boot device is a mirror: its second half needs a path (DomainPaths.boot_mirror)")
        disk = _disk(devices, paths.boot_mirror, fmt, "vdb", "virtio", "ua-boot1")
        _pci(disk, 0, 0x04)
    usb = _sub(devices, "controller", type="usb", index="0", model="qemu-xhci" if boot.bus == "usb" else "none")
    if boot.bus == "usb":
        _pci(usb, 0, 0x07)


Overrides = list[tuple[str, list[tuple[str, str, str]]]]  # (alias, [(property, type, value)])


def _datastore(
    devices: ET.Element, disks: tuple[TwinDisk, ...], paths: tuple[str, ...], first_sd: int
) -> tuple[Overrides, list[str]]:
    """qemu.py's disk_args: SATA on the chipset AHCI, SAS on a virtio-scsi HBA at 00:03.0, NVMe (QEMU arguments, the
    second value) at 00:10.0 onwards."""
    if len(disks) != len(paths):
        raise ValueError(f"the twin has {len(disks)} datastore disks; {len(paths)} paths given")
    overrides: Overrides = []
    nvme_args: list[str] = []
    sata = sas = nvme = 0
    sd = first_sd
    for i, (disk, path) in enumerate(zip(disks, paths, strict=True)):
        rate = "1" if disk.ssd else "7200"
        alias = f"ua-disk{i}"
        if disk.interface == "sata":
            if sata == SATA_PORTS:
                raise ValueError(f"the twin has {SATA_PORTS} SATA ports; more SATA disks asked for")
            element = _disk(devices, path, "raw", scsi_name(sd), "sata", alias, rotation_rate=rate)
            _sub(element, "serial", disk.serial)
            _sub(element, "address", type="drive", controller="0", bus="0", target="0", unit=str(sata))
            overrides.append((alias, [("model", "string", disk.model)]))  # libvirt has no ATA model element
            sata += 1
            sd += 1
        elif disk.interface == "sas":
            if len(disk.model) > SAS_PRODUCT_MAX:
                raise ValueError(f"a SCSI product is at most {SAS_PRODUCT_MAX} characters: {disk.model!r}")
            element = _disk(devices, path, "raw", scsi_name(sd), "scsi", alias, rotation_rate=rate)
            _sub(element, "serial", disk.serial)
            _sub(element, "vendor", SAS_VENDOR)
            _sub(element, "product", disk.model)
            _sub(element, "address", type="drive", controller="0", bus="0", target=str(sas), unit="0")
            sas += 1
            sd += 1
        else:
            nvme_args += ["-drive", f"if=none,id=oemkit-nvme{nvme},format=raw,file={opt(path)}"]
            nvme_args += ["-device", f"nvme,id=oemkit-nvme{nvme}-ctrl,drive=oemkit-nvme{nvme},serial={disk.serial},"
                          f"bus=pcie.0,addr={0x10 + nvme:#x}"]  # fmt: skip
            nvme += 1
    if sas:
        hba = _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
        _pci(hba, 0, 0x03)
    return overrides, nvme_args


def _nics(devices: ET.Element, nic_list: tuple[TwinNic, ...]) -> Overrides:
    """qemu.py's nic_args as controllers and interfaces: each NIC at its catalog address as the guest numbers it."""
    runs, placed = placement(nic_list)
    _sub(devices, "controller", type="pci", index="0", model="pcie-root")
    index_of = {0: 0}  # guest bus → controller index
    index = 1
    for n, run in enumerate(runs):
        if run[0] == 1:  # buses 1, 2, … are what the firmware gives the root ports on bus 0, in slot order
            host, slot0 = 0, 0x1C
        else:
            _comment(
                devices,
                f"guest buses {', '.join(f'{b:#04x}' for b in run)}: behind an expander numbered {run[0] - 1:#04x}",
            )
            pxb = _sub(devices, "controller", type="pci", index=str(index), model="pcie-expander-bus")
            _sub(pxb, "model", name="pxb-pcie")
            _sub(pxb, "target", busNr=str(run[0] - 1))
            _pci(pxb, 0, 0x08 + n)
            host, slot0, index = index, 0, index + 1
        for k, bus in enumerate(run):
            port = _sub(devices, "controller", type="pci", index=str(index), model="pcie-root-port")
            _sub(port, "model", name="pcie-root-port")
            _sub(port, "target", chassis=str(bus), port="0x0")
            _pci(port, host, slot0 + k)
            index_of[bus], index = index, index + 1
    overrides: Overrides = []
    for p in placed:
        alias = f"ua-net{p.index}"
        _comment(devices, f"{p.nic.port}: {p.nic.pci_address}, {p.nic.speed_mbps} Mb/s")
        iface = _sub(devices, "interface", type="user")
        _sub(iface, "mac", address=p.nic.mac)
        _sub(iface, "model", type="virtio")
        _sub(iface, "rom", enabled="no")  # no iPXE ROM: seconds of firmware
        _sub(iface, "alias", name=alias)
        _pci(iface, index_of[p.bus], p.device, p.function, p.multifunction)
        overrides.append((alias, [("speed", "unsigned", str(p.nic.speed_mbps)), ("duplex", "string", "full")]))
    return overrides


def domain_xml(
    tw: Twin,
    boot: BootDisk,
    paths: DomainPaths,
    *,
    domain_type: str,
    memory_mib: int,
    cpus: int = 2,
    oem_strings: tuple[str, ...] = (),
    boot_format: str = "qcow2",
    loader: str = str(uefi.OVMF_CODE_SECBOOT),
) -> str:
    """The twin's libvirt domain XML: `domain_type` qemu (TCG) or kvm; the boot device on the bus `boot` names, in
    `boot_format`; OVMF's Secure Boot `loader` with the domain's own copy of the enrolled store; `oem_strings` as
    SMBIOS type 11. Power off ends the domain; a reboot is the firmware's, as on the box (bank fallback)."""
    if domain_type not in TYPES:
        raise ValueError(f"domain type {domain_type!r} is not one of {', '.join(TYPES)}")
    dom = ET.Element("domain", {"type": domain_type, "xmlns:qemu": QEMU_NS})
    _sub(dom, "name", domain_name(tw.serial))
    _sub(dom, "uuid", tw.smbios.uuid)  # libvirt requires the SMBIOS system UUID to be the domain's
    _sub(dom, "title", f"oemkit twin: {tw.model_id} {tw.serial}")
    if boot.what or tw.notes:
        _sub(dom, "description", "\n".join(filter(None, [boot.what, *tw.notes])))
    _sub(dom, "memory", str(memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(cpus))
    _sysinfo(dom, tw.smbios, oem_strings)
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="q35")
    _sub(os_, "loader", loader, readonly="yes", secure="yes", type="pflash")
    _sub(os_, "nvram", paths.nvram, template=paths.nvram_template)
    _sub(os_, "smbios", mode="sysinfo")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(features, "smm", state="on")  # OVMF's Secure Boot build: the variable store is writable only from SMM
    cpu = _sub(dom, "cpu", mode="maximum" if domain_type == "qemu" else "host-passthrough")
    # QEMU's `-smp N` (qemu.py) is one socket of N cores; libvirt's <vcpu> alone would be N sockets (SMBIOS type 4)
    _sub(cpu, "topology", sockets="1", dies="1", cores=str(cpus), threads="1")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _boot_device(devices, boot, paths, boot_format)
    disk_overrides, nvme_args = _datastore(devices, tw.disks, paths.disks, first_sd=1 if boot.bus == "usb" else 0)
    nic_overrides = _nics(devices, tw.nics)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=paths.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    tpm = _sub(devices, "tpm", model="tpm-crb")
    _sub(tpm, "backend", type="emulator", version="2.0")
    _sub(devices, "memballoon", model="none")
    if nvme_args:
        cmdline = _sub(dom, "qemu:commandline")
        _comment(cmdline, "NVMe drives: libvirt 9.0 has no NVMe disk bus")
        for arg in nvme_args:
            _sub(cmdline, "qemu:arg", value=arg)
    overrides = nic_overrides + disk_overrides
    if overrides:
        override = _sub(dom, "qemu:override")
        for alias, props in overrides:
            frontend = _sub(_sub(override, "qemu:device", alias=alias), "qemu:frontend")
            for name, kind, value in props:
                _sub(frontend, "qemu:property", name=name, type=kind, value=value)
    ET.indent(dom, space="  ")
    return ET.tostring(dom, encoding="unicode") + "\n"
