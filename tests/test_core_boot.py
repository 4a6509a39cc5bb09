"""The real thing: the core this session built boots under QEMU on a unit's twin, the agent inside configures the
box through the guest's own libvirtd, and the console's OEMKIT-STATUS says so. Slow (TCG), run in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app

from .conftest import REPO
from .firstboot_kit import compile_to

pytestmark = pytest.mark.slow
PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"
SERIAL = "J30DEV01"
DEVMODE = REPO / "tests" / "data" / "profiles" / "units" / f"{SERIAL}.yaml"  # no UEFI here: no Secure Boot, no TPM


def _boot(unit: Path, core: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["boot", str(unit), "--core", str(core), "--json", "--timeout", "900", *extra])
    assert result.exit_code in (0, 1, 3), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def first_boot(core_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, Path, Path]:
    work = tmp_path_factory.mktemp("boot")
    unit = work / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, unit, DEVMODE)
    code, doc = _boot(unit, core_dir, "--state-disk", str(work / "state.img"), "--log", str(work / "first.log"))
    return code, doc, work, unit


def test_the_unit_boots_ready_on_its_twin(first_boot) -> None:
    code, doc, work, _ = first_boot
    console = (work / "first.log").read_text()
    assert (code, doc["status"], doc["reason"]) == (0, "READY", None), console[-3000:]
    assert (doc["model"], doc["serial"]) == ("dell-poweredge-r650", SERIAL)  # from the SMBIOS QEMU presented
    steps = {s["id"] for s in doc["steps"]}
    # the host config was written and applied, and workloads were defined through the guest's own libvirtd
    assert {"host.hostname", "host.management-network", "host.datastore", "libvirt.pool.datastore"} <= steps
    assert {"libvirt.domain.pos-server", "libvirt.domain.nvr", "libvirt.domain.edge-fw"} <= steps
    # the uplink rule found the LOM ports at the catalog's PCI addresses; the datastore rule the two SATA SSDs
    assert "(0000:04:00.0), " in console and "(0000:04:00.1); datastore: sda, sdb" in console
    assert "active-backup over" in console and "vlan 100, static, applied" in console
    assert "==== Northwind Retail Systems Northwind StoreBox ====" in console and "powered by oemkit core" in console
    assert all(doc["boot"][k] > 0 for k in ("kernel", "init", "agent")), doc["boot"]
    # the build's capabilities seed was installed before libvirtd and kept: the first define did not probe QEMU
    # (on a KVM twin the emulated CPU is the host's, libvirt rightly re-probes)
    assert "libvirtd t=" in console and "capabilities seeded" in console.split("libvirtd t=", 1)[1].splitlines()[0]
    if doc["accel"] == "tcg":
        assert "capabilities seed kept" in console.split("ready t=", 1)[1].splitlines()[0], console[-2000:]


def test_a_reboot_keeps_the_state_and_reapplies_the_host_config(first_boot, core_dir: Path) -> None:
    code, doc, work, unit = first_boot
    assert code == 0
    code, doc = _boot(unit, core_dir, "--state-disk", str(work / "state.img"), "--log", str(work / "second.log"))
    console = (work / "second.log").read_text()
    assert (code, doc["status"], doc["reason"]) == (0, "READY", "already done"), console[-3000:]
    assert "state t=" in console and "persistent on /dev/vda" in console
    hostconfig = console.split("hostconfig t=", 1)[1].splitlines()[0]
    assert "applied, hostname br-ber01-j30dev01" in hostconfig  # the name and network first boot set, restored
    assert doc["steps"] == []  # nothing applied twice


def test_the_same_unit_on_another_vendors_box_fails_on_identity(core_dir: Path, tmp_path: Path) -> None:
    unit = tmp_path / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, unit, DEVMODE)
    code, doc = _boot(unit, core_dir, "--as-model", "hpe-proliant-dl360-gen10-plus", "--log", str(tmp_path / "c.log"))
    assert (code, doc["status"]) == (1, "FAILED"), (tmp_path / "c.log").read_text()[-3000:]
    assert doc["reason"].startswith("wrong hardware: this config is for dell-poweredge-r650"), doc["reason"]
    assert "this box is HPE ProLiant DL360 Gen10 Plus" in doc["reason"]
    assert doc["steps"] == []  # refused before anything was applied


def test_a_core_that_does_not_report_in_time_is_exit_3(core_dir: Path, tmp_path: Path) -> None:
    unit = tmp_path / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, unit, DEVMODE)
    result = CliRunner().invoke(app, ["boot", str(unit), "--core", str(core_dir), "--json", "--timeout", "3"])
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "TIMEOUT" and doc["reason"].startswith("no OEMKIT-STATUS within 3 s")


def test_a_state_filesystem_on_a_usb_stick_is_refused(core_dir: Path, tmp_path: Path, catalog) -> None:
    """A stick in a front port must not bring its own state (hostname, network, a 'done' marker): the init boots
    volatile and first boot runs as on a new box."""  # the refusal itself: the init's */usb* case
    from oemkit.twin import session

    unit = tmp_path / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, unit, DEVMODE)
    stick = tmp_path / "stick.img"
    session.make_state_disk(stick, 64)
    usb = ("-device", "qemu-xhci,id=xhci,bus=pcie.0,addr=0x7", "-drive", f"if=none,id=stick,format=raw,file={stick}")
    usb += ("-device", "usb-storage,bus=xhci.0,drive=stick")
    log = tmp_path / "console.log"
    result = session.boot(session.prepare(unit, catalog), core_dir, accel="tcg", timeout=900, log=log, extra_args=usb)
    console = log.read_text()
    # the init waits for no USB device (state there is refused anyway): the stick is either refused, if it was
    # enumerated in time, or not there yet; either way the box is volatile and this is a first boot
    state = console.split("state t=", 1)[1].splitlines()[0]
    assert ("volatile: refused /dev/sd" in state and "(USB)" in state) or "volatile (no OEMKIT-STATE" in state, state
    assert (result.status, result.reason) == ("READY", None), result.reason  # not "already done"; no datastore


def test_a_state_disk_on_sata_is_found_without_a_fixed_wait(core_dir: Path, tmp_path: Path, catalog) -> None:
    """The init no longer sleeps for the state disk: behind AHCI (libata, SCSI, sd) it exists once ahci's modprobe
    returns, because scsi_mod scans synchronously (/etc/modprobe.d). The twin's own state disk is virtio; this one
    sits on a SATA port of the chipset, as a BOSS-style boot SSD would."""
    from oemkit.twin import session

    unit = tmp_path / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, unit, DEVMODE)
    disk = tmp_path / "state.img"
    session.make_state_disk(disk, 64)
    sata = ("-drive", f"if=none,id=st,format=raw,file={disk}", "-device", "ide-hd,drive=st,bus=ide.4")
    log = tmp_path / "console.log"
    result = session.boot(session.prepare(unit, catalog), core_dir, accel="tcg", timeout=900, log=log, extra_args=sata)
    console = log.read_text()
    state = console.split("state t=", 1)[1].splitlines()[0]
    assert " persistent on /dev/sd" in state, console[-3000:]
    assert result.status == "READY", result.reason
