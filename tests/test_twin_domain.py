"""A twin as a libvirt domain (oemkit/twin/domain.py): golden XML for three vendors' twins (virtio, USB and mirrored
boot devices; SATA and NVMe datastores), the guest's view of the PCI topology computed from the XML alone, the schema
(virt-xml-validate), the real daemon's acceptance (defined, read back, undefined: no boot) and `oemkit twin xml`.

The guest's bus numbers come from the topology, not from libvirt's controller indices: `guest_nics` numbers buses
as the firmware does for the twin's shape (an expander's root bus is its busNr, its root ports' buses follow in
slot order; root ports on pcie.0 take 1, 2, … in slot order) and must give back every catalog address. That the
firmware really numbers them so was checked once by booting OVMF on both renderings and comparing `info pci`."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.twin import appliance, domain
from oemkit.twin.session import TwinRun, prepare
from oemkit.twin.spec import BootDisk, Smbios, Twin, TwinDisk, TwinNic

from .conftest import REPO
from .firstboot_kit import compile_to

GOLDEN = REPO / "tests" / "golden" / "twin-domain"
Q = "{" + domain.QEMU_NS + "}"
SD = REPO / "tests" / "data" / "profiles" / "sd-boot"
CASES = {  # name: (profile, site, serial, domain type)
    "dell-r650": (REPO / "profiles" / "retail-branch.yaml", REPO / "profiles" / "sites" / "retail-ber01.yaml",
                  "J30XML01", "qemu"),
    "hpe-dl360-gen10": (SD / "store-sd.yaml", SD / "sites" / "store-ber02.yaml", "CZJ8XML001", "qemu"),
    "lenovo-sr650-v2": (REPO / "profiles" / "factory-edge.yaml", REPO / "profiles" / "sites" / "factory-plant1.yaml",
                        "J90XML001", "kvm"),
}  # fmt: skip
VALIDATE = shutil.which("virt-xml-validate")
XMLLINT = shutil.which("xmllint")  # virt-xml-validate runs it (libxml2-utils, not a dependency of libvirt-clients)


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("units")
    made = {}
    for name, (profile, site, serial, _) in CASES.items():
        made[name] = out / f"{serial}.json"
        compile_to(profile, site, serial, made[name])
    return made


def _twin(unit: Path, catalog) -> tuple[TwinRun, BootDisk]:
    """As `oemkit boot` builds it (session.prepare_config, appliance.boot_device); memory without the host's RAM."""
    run = prepare(unit, catalog, host_mib=None)
    return run, appliance.boot_device(catalog.get(run.twin.model_id))


def _render(run: TwinRun, boot: BootDisk, domain_type: str, paths: domain.DomainPaths | None = None) -> str:
    paths = paths or domain.default_paths(run.twin, boot)
    return domain.domain_xml(run.twin, boot, paths, domain_type=domain_type, memory_mib=run.memory_mib,
                             oem_strings=run.oem_strings(poweroff=True))  # fmt: skip


def _pci(element: ET.Element) -> tuple[int, int, int] | None:
    address = element.find("address")
    if address is None or address.get("type") != "pci":
        return None
    return int(address.get("bus", "0"), 16), int(address.get("slot", "0"), 16), int(address.get("function", "0"), 16)


def guest_buses(root: ET.Element) -> dict[int, int]:
    """Controller index → the bus number the guest gives the bus behind it, for the twin's shape of topology."""
    controllers = {int(c.get("index", "-1")): c for c in root.iter("controller") if c.get("type") == "pci"}
    bus = {0: 0}
    for index, c in controllers.items():
        if c.get("model") == "pcie-expander-bus":
            target = c.find("target")
            assert target is not None
            bus[index] = int(target.get("busNr", "-1"))
    ports: dict[int, list[tuple[int, int]]] = {}  # parent index → [(slot, index)]
    for index, c in controllers.items():
        if c.get("model") == "pcie-root-port":
            address = _pci(c)
            assert address is not None
            ports.setdefault(address[0], []).append((address[1], index))
        else:
            assert c.get("model") in ("pcie-root", "pcie-expander-bus"), c.get("model")  # nothing else takes a bus
    for parent, children in ports.items():
        for rank, (_slot, index) in enumerate(sorted(children)):
            bus[index] = bus[parent] + 1 + rank
    return bus


def guest_nics(root: ET.Element) -> dict[str, str]:
    """MAC → the PCI address the guest sees the NIC at."""
    bus = guest_buses(root)
    seen = {}
    for iface in root.iter("interface"):
        mac = iface.find("mac")
        address = _pci(iface)
        assert mac is not None and address is not None
        seen[mac.get("address", "")] = f"0000:{bus[address[0]]:02x}:{address[1]:02x}.{address[2]}"
    return seen


def _bus0_slots(root: ET.Element) -> list[int]:
    """Every slot on pcie.0 a device or controller takes (one per slot, whatever its functions), NVMe included."""
    slots = []
    for element in root.iter():
        address = _pci(element)
        if address is not None and address[0] == 0 and address[2] == 0:
            slots.append(address[1])
    args = [a.get("value", "") for a in root.iter(Q + "arg")]
    slots += [int(m.group(1), 16) for a in args for m in [re.search(r",bus=pcie\.0,addr=(0x[0-9a-f]+)", a)] if m]
    return slots


def _sysinfo(root: ET.Element) -> dict[str, str]:
    """SMBIOS types 0-3 as {"system.serial": …}."""
    return {f"{table.tag}.{e.get('name')}": e.text or "" for table in root.iterfind("sysinfo/*") for e in table
            if e.get("name")}  # fmt: skip


def _overrides(root: ET.Element) -> list[tuple[str | None, list[tuple[str | None, ...]]]]:
    return [(d.get("alias"), [(p.get("name"), p.get("type"), p.get("value")) for p in d.iter(Q + "property")])
            for d in root.iter(Q + "device")]  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_golden_domain_xml(name: str, units: dict[str, Path], catalog, golden) -> None:
    run, boot = _twin(units[name], catalog)
    xml = _render(run, boot, CASES[name][3])
    golden(GOLDEN / f"{name}.xml", xml)
    root = ET.fromstring(xml)
    # what the agent's rules find the NICs by: each at its catalog address, as the guest numbers the buses
    assert guest_nics(root) == {n.mac: n.pci_address for n in run.twin.nics}
    assert root.findtext("name") == f"oemkit-twin-{run.twin.serial}"
    assert root.findtext("uuid") == run.twin.smbios.uuid == _sysinfo(root)["system.uuid"]
    assert _sysinfo(root)["system.serial"] == _sysinfo(root)["baseBoard.serial"] == run.twin.serial
    assert _sysinfo(root)["system.product"] == run.twin.smbios.product
    assert [e.text for e in root.iterfind("sysinfo/oemStrings/entry")] == ["oemkit:poweroff"]
    slots = _bus0_slots(root)
    assert len(slots) == len(set(slots)), f"two devices on one slot of pcie.0: {sorted(slots)}"


def test_each_vendors_boot_device_and_datastore(units: dict[str, Path], catalog) -> None:
    r650 = ET.fromstring(_render(*_twin(units["dell-r650"], catalog), "qemu"))
    boot = r650.find("devices/disk")
    assert boot is not None and boot.find("target").get("bus") == "virtio" and _pci(boot) == (0, 5, 0)
    assert boot.find("boot").get("order") == "1"
    assert r650.find("devices/controller[@type='usb']").get("model") == "none"
    sata = [d for d in r650.iterfind("devices/disk") if d.find("target").get("bus") == "sata"]
    assert [(d.find("address").get("unit"), d.find("target").get("rotation_rate")) for d in sata] == [
        ("0", "1"),
        ("1", "1"),
    ]  # two SSDs on the chipset AHCI's first ports, their ATA model through <qemu:override>
    models = {d.get("alias"): p.get("value") for d in r650.iter(Q + "device") for p in d.iter(Q + "property")
              if p.get("name") == "model"}  # fmt: skip
    assert set(models) == {"ua-disk0", "ua-disk1"} and all(m and m.startswith("SSD ") for m in models.values())

    dl360 = ET.fromstring(_render(*_twin(units["hpe-dl360-gen10"], catalog), "qemu"))
    usb = dl360.find("devices/controller[@type='usb']")
    assert usb is not None and usb.get("model") == "qemu-xhci" and _pci(usb) == (0, 7, 0)
    boot = dl360.find("devices/disk")
    assert boot is not None and boot.find("target").get("bus") == "usb" and boot.find("boot").get("order") == "1"
    assert boot.find("address").get("type") == "usb"
    assert [d.find("target").get("dev") for d in dl360.iterfind("devices/disk")] == ["sda", "sdb"]

    sr650 = ET.fromstring(_render(*_twin(units["lenovo-sr650-v2"], catalog), "kvm"))
    halves = [d for d in sr650.iterfind("devices/disk") if d.find("target").get("bus") == "virtio"]
    assert [_pci(d) for d in halves] == [(0, 5, 0), (0, 4, 0)]  # the mirror's second half at 00:04.0, no boot order
    assert halves[1].find("boot") is None
    args = [a.get("value", "") for a in sr650.iter(Q + "arg")]
    nvme = [a for a in args if a.startswith("nvme,")]
    assert [re.search(r"addr=(0x[0-9a-f]+)", a).group(1) for a in nvme] == ["0x10", "0x11", "0x12", "0x13"]
    assert all("serial=TW" in a for a in nvme) and args.count("-drive") == 4
    assert sr650.find("cpu").get("mode") == "host-passthrough"
    assert r650.find("cpu").get("mode") == "maximum"
    # one socket of two cores, as QEMU's -smp 2 (qemu.py): not libvirt's default of one socket per vCPU
    assert r650.find("cpu/topology").attrib == {"sockets": "1", "dies": "1", "cores": "2", "threads": "1"}


def _nic(i: int, pci: str) -> TwinNic:
    return TwinNic(f"P{i}", pci, f"02:00:00:00:00:{i:02x}", 1000 * (i + 1))


def test_topology_is_qemu_py_s_with_contiguous_indices() -> None:
    """Bus 0, bus 1 (a root port on pcie.0), a run of two buses behind one expander, and a bus of its own: every NIC
    where the catalog says, the controllers indexed 1, 2, … (libvirt fills a gap with a root port of its own)."""
    pcis = ["0000:00:19.0", "0000:01:00.0", "0000:04:00.0", "0000:04:00.1", "0000:05:00.0", "0000:e0:00.2"]
    nics = tuple(_nic(i, pci) for i, pci in enumerate(pcis))
    tw = Twin("m", "S1", replace(_smbios(), serial="S1"), nics, ())
    root = ET.fromstring(domain.domain_xml(tw, BootDisk(None, "virtio", False, ""), _paths(0), domain_type="qemu",
                                           memory_mib=3072))  # fmt: skip
    assert guest_nics(root) == {n.mac: n.pci_address for n in nics}
    controllers = [c for c in root.iter("controller") if c.get("type") == "pci"]
    assert [int(c.get("index", "-1")) for c in controllers] == list(range(len(controllers)))
    for c in controllers[1:]:
        address = _pci(c)
        assert address is not None and address[0] < int(c.get("index", "-1"))  # plugged into one defined before it
    expanders = [c for c in controllers if c.get("model") == "pcie-expander-bus"]
    assert [(c.find("target").get("busNr"), _pci(c)) for c in expanders] == [("3", (0, 9, 0)), ("223", (0, 10, 0))]
    multi = [i.find("address").get("multifunction") for i in root.iter("interface")]
    assert multi == [None, None, "on", None, None, None]  # function 0 of the one slot with two functions
    speeds = [p.get("value") for p in root.iter(Q + "property") if p.get("name") == "speed"]
    assert speeds == ["1000", "2000", "3000", "4000", "5000", "6000"]


def _smbios() -> Smbios:
    return Smbios("Acme", "X1", "S1", "6a5d3c40-0f46-4b4d-9d53-9a1a86c0a001")


def _paths(disks: int, **kw: str) -> domain.DomainPaths:
    values = {"boot": "/t/boot.qcow2", "boot_mirror": None, "nvram_template": "/t/VARS.fd", "nvram": None,
              "console_log": "/t/console.log", **kw}  # fmt: skip
    return domain.DomainPaths(disks=tuple(f"/t/disk{i}.raw" for i in range(disks)), **values)


def test_sas_disks_on_a_virtio_scsi_hba_and_every_path_escaped() -> None:
    disks = (TwinDisk("sas", False, 1200, "TWAAAA0001", "HDD 1200G"), TwinDisk("nvme", True, 960, "TWB", "SSD 960G"))
    tw = Twin("m", "S1", _smbios(), (), disks)
    odd = "/t/a&b <c> 'd\",e"
    paths = replace(_paths(2), disks=(odd + "0", odd + "1"), nvram=odd, console_log=odd + ".log")
    root = ET.fromstring(domain.domain_xml(tw, BootDisk(None, "virtio", False, ""), paths, domain_type="qemu",
                                           memory_mib=3072))  # fmt: skip
    hba = root.find("devices/controller[@type='scsi']")
    assert hba is not None and hba.get("model") == "virtio-scsi" and _pci(hba) == (0, 3, 0)
    sas = root.find("devices/disk/target[@bus='scsi']/..")
    assert sas is not None
    assert (sas.findtext("vendor"), sas.findtext("product"), sas.findtext("serial")) == ("SEAGATE", "HDD 1200G",
                                                                                         "TWAAAA0001")  # fmt: skip
    assert sas.find("target").get("rotation_rate") == "7200" and sas.find("source").get("file") == odd + "0"
    assert root.find("os/nvram").text == odd and root.find("devices/serial/log").get("file") == odd + ".log"
    # QEMU's own option syntax on the NVMe drive: a comma doubled
    assert f"file={odd.replace(',', ',,')}1" in [a.get("value") for a in root.iter(Q + "arg")][1]
    assert root.find("devices/controller[@type='usb']").get("model") == "none"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"domain_type": "xen"}, "domain type 'xen'"),
        ({"disks": (TwinDisk("sata", True, 1, "S", "SSD 1G"),) * 6}, "5 SATA ports"),
        ({"disks": (TwinDisk("sas", True, 1, "S", "SSD 1G with a long name"),)}, "at most 16 characters"),
        ({"boot": BootDisk(None, "virtio", True, "")}, "second half needs a path"),
        ({"paths": _paths(3)}, "0 datastore disks; 3 paths"),
    ],
)
def test_what_cannot_be_rendered_is_refused(change: dict, message: str) -> None:
    tw = Twin("m", "S1", _smbios(), (), change.get("disks", ()))
    with pytest.raises(ValueError, match=message):
        domain.domain_xml(tw, change.get("boot", BootDisk(None, "virtio", False, "")),
                          change.get("paths", _paths(len(tw.disks))), domain_type=change.get("domain_type", "qemu"),
                          memory_mib=3072)  # fmt: skip


@pytest.mark.skipif(VALIDATE is None or XMLLINT is None, reason="virt-xml-validate (libvirt-clients) or xmllint "
                    "(libxml2-utils) is not installed")  # fmt: skip
@pytest.mark.parametrize("name", CASES)
def test_libvirt_schema_accepts_the_domain(name: str, units: dict[str, Path], catalog, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(_render(*_twin(units[name], catalog), CASES[name][3]))
    done = subprocess.run([str(VALIDATE), str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "validates" in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.libvirtd
def test_the_daemon_defines_each_twin_as_rendered(units: dict[str, Path], catalog, tmp_path: Path) -> None:
    """Defined with VALIDATE on qemu:///system (not started), read back: the NICs' guest addresses and MACs, the
    SMBIOS identity, the overrides and the NVMe arguments survive, and libvirt added no PCI controller or device on
    a slot of pcie.0 beyond the chipset's own (0x1f)."""
    import libvirt

    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:  # a failure, not a skip: CI must exercise the real daemon
        pytest.fail(f"no libvirtd at qemu:///system ({exc}); run scripts/libvirtd.sh")
    prefix = f"oemkit-xmltest-{secrets.token_hex(3)}"
    try:
        for n, (name, (_, _, serial, _)) in enumerate(CASES.items()):
            run, boot = _twin(units[name], catalog)
            work = tmp_path / name
            work.mkdir()
            files = ["boot.qcow2", "boot1.qcow2", "VARS.fd"] + [f"disk{i}.raw" for i in range(len(run.twin.disks))]
            for file in files:
                (work / file).write_bytes(b"\0" * 4096)
            paths = domain.DomainPaths(
                str(work / "boot.qcow2"), str(work / "boot1.qcow2") if boot.mirror else None,
                tuple(str(work / f"disk{i}.raw") for i in range(len(run.twin.disks))), str(work / "VARS.fd"),
                None if n == 0 else str(work / "nvram.fd"), str(work / "console.log"),
            )  # fmt: skip
            fresh = str(uuid.uuid4())  # a run of its own: never the UUID of a twin someone is running
            run = replace(run, twin=replace(run.twin, smbios=replace(run.twin.smbios, uuid=fresh)))
            xml = _render(run, boot, "qemu", paths).replace(
                f"<name>{domain.domain_name(serial)}<", f"<name>{prefix}-{n}<"
            )
            rendered = ET.fromstring(xml)
            dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            back = ET.fromstring(dom.XMLDesc(0))
            assert guest_nics(back) == guest_nics(rendered) == {nic.mac: nic.pci_address for nic in run.twin.nics}
            assert [_pci(i) for i in back.iter("interface")] == [_pci(i) for i in rendered.iter("interface")]
            assert _sysinfo(back) == _sysinfo(rendered) and back.findtext("uuid") == fresh
            assert [e.text for e in back.iterfind("sysinfo/oemStrings/entry")] == ["oemkit:poweroff"]
            assert _overrides(back) == _overrides(rendered) != []
            assert [a.get("value") for a in back.iter(Q + "arg")] == [a.get("value") for a in rendered.iter(Q + "arg")]
            assert back.find("os/nvram").get("template") == str(work / "VARS.fd")
            assert back.find("cpu/topology").get("sockets") == "1"
            pci = [(c.get("index"), c.get("model")) for c in back.iter("controller") if c.get("type") == "pci"]
            assert pci == [
                (c.get("index"), c.get("model")) for c in rendered.iter("controller") if c.get("type") == "pci"
            ]
            assert sorted(s for s in _bus0_slots(back) if s != 0x1F) == sorted(_bus0_slots(rendered))
            assert back.find("devices/video") is None and back.find("devices/graphics") is None
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM)
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM)
        conn.close()


def test_cli_prints_the_twin_of_a_unit_config(units: dict[str, Path], tmp_path: Path) -> None:
    unit = units["lenovo-sr650-v2"]
    result = CliRunner().invoke(app, ["twin", "xml", str(unit), "--json", "--accel", "tcg"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["name"], doc["model"], doc["serial"]) == ("oemkit-twin-J90XML001", "lenovo-thinksystem-sr650-v2",
                                                         "J90XML001")  # fmt: skip
    root = ET.fromstring(doc["xml"])
    assert root.get("type") == "qemu" and root.findtext("name") == doc["name"]
    pool = "/var/lib/libvirt/images/oemkit-twins"
    assert root.find("devices/disk/source").get("file") == f"{pool}/{doc['name']}-boot.qcow2"
    assert root.find("devices/serial/log").get("file") == f"{pool}/{doc['name']}-console.log"
    assert root.find("os/nvram").get("template") == f"{pool}/{doc['name']}-vars.fd"
    assert any("no image yet" in note for note in doc["notes"]) and any("NVMe" in note for note in doc["notes"])
    assert set(guest_nics(root).values()) == {f"0000:17:00.{f}" for f in range(4)}

    plain = CliRunner().invoke(app, ["twin", "xml", str(unit), "--accel", "kvm", "--model", "dell-poweredge-r650"])
    assert plain.exit_code == 0, plain.output
    root = ET.fromstring(plain.stdout)  # the XML alone on stdout, the notes on stderr
    assert root.get("type") == "kvm" and _sysinfo(root)["system.product"] == "PowerEdge R650"
    assert _sysinfo(root)["system.serial"] == "J90XML001"  # the unit's serial on the other model's box
    assert "oemkit twin xml: note: " in plain.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.json"], "cannot read unit config"),
        (["{tmp}/bad.json"], "not a unit config"),
        (["{tmp}"], "cannot read image manifest"),  # a folder that is not a built unit
        (["{unit}", "--model", "acme-x1"], "--model 'acme-x1' is not in the catalog"),
        (["{unit}", "--accel", "hvf"], "--accel must be auto, kvm or tcg"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str], message: str, units: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"schema": "something/else"}')
    argv = [
        "twin",
        "xml",
        *(a.replace("{unit}", str(units["dell-r650"])).replace("{tmp}", str(tmp_path)) for a in args),
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert "<domain" not in result.stdout
