"""Twins through libvirt (qemu:///system, real libvirtd, OVMF Secure Boot, libvirt's own swtpm): the appliance image
of a unit on its real site booted on its vendor's twin. CI: a twin left by a killed `oemkit boot` is found by name and
cleaned by the burn-in that follows, which brings the Dell unit READY with the PCR 15 the factory predicted and leaves
nothing behind; the same image on an HPE twin (`--as-model`) is refused by identity with nothing applied. Heavy
(scripts/test-heavy.sh): an HPE and a Lenovo unit on their real profiles burned in two twins at a time."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.twin import domain, volumes

from .conftest import REPO
from .firstboot_kit import compile_to
from .test_appliance_boot import _build, factory  # noqa: F401  (a fixture, used by name)

pytestmark = [pytest.mark.slow, pytest.mark.libvirtd]
runner = CliRunner()
URI = "qemu:///system"


def _unit(out: Path, core: Path, keys: Path, profile: str, site: str, serial: str) -> Path:
    unit = out / f"{serial}.json"
    compile_to(REPO / "profiles" / f"{profile}.yaml", REPO / "profiles" / "sites" / f"{site}.yaml", serial, unit)
    _build(unit, core, keys, out)
    unit.unlink()  # the order's folder holds built units only
    return out / serial


def _leftovers(serial: str) -> list[str]:
    conn = libvirt.open(URI)
    try:
        names = [d.name() for d in conn.listAllDomains() if d.name() == domain.domain_name(serial)]
        try:
            pool = conn.storagePoolLookupByName(volumes.POOL)
            pool.refresh(0)
            names += [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(domain.domain_name(serial) + "-")]
        except libvirt.libvirtError:
            pass
        return names
    finally:
        conn.close()


def _running(name: str) -> bool:
    conn = libvirt.open(URI)
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def order(core_dir: Path, factory, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    keys, _ = factory
    out = tmp_path_factory.mktemp("burnin")
    _unit(out, core_dir, keys.folder.parent, "retail-branch", "retail-ber01", "J30BRN01")
    return out


def test_a_killed_runs_twin_is_cleaned_and_the_order_burns_in_ready(order: Path, factory, tmp_path: Path) -> None:  # noqa: F811
    _, vars_fd = factory
    unit = order / "J30BRN01"
    before = hashlib.sha256((unit / "appliance.qcow2").read_bytes()).hexdigest()
    name = domain.domain_name("J30BRN01")
    # a boot killed while its twin runs: the twin, its NVRAM, TPM and volumes stay behind
    killed = subprocess.Popen([sys.executable, "-m", "oemkit", "boot", str(unit), "--vars", str(vars_fd), "--accel",
                               "tcg", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        end = time.monotonic() + 180
        while not _running(name) and time.monotonic() < end and killed.poll() is None:
            time.sleep(0.5)
        assert _running(name), "the twin never started"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert name in _leftovers("J30BRN01")
    junit = tmp_path / "burnin.xml"
    result = runner.invoke(app, ["burnin", str(order), "--vars", str(vars_fd), "--accel", "tcg", "--timeout", "600",
                                 "--json", "--junit", str(junit)])  # fmt: skip
    report = json.loads(result.stdout)
    (rec,) = report["units"]
    console = Path(rec["console_log"]).read_text()
    assert result.exit_code == 0, (rec, console[-3000:])
    assert (rec["serial"], rec["status"], rec["kind"], rec["twin"]) == ("J30BRN01", "READY", "first-boot",
                                                                        "dell-poweredge-r650")  # fmt: skip
    assert rec["pcr15_match"] is True and rec["bank"] == "a" and rec["uri"] == URI
    assert f"domain {name}" in rec["cleaned"], rec["cleaned"]  # found by name, removed, not duplicated
    assert rec["image_sha256"] == before and len(rec["disk_sha256"]) == 64
    assert "oemkit-core: ready" in console and Path(rec["console_log"]).parent == order / ".burnin"
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "0")
    assert _leftovers("J30BRN01") == []  # domain, NVRAM, TPM, volumes: all gone
    assert runner.invoke(app, ["image", "verify", str(unit)]).exit_code == 0  # the shipped bytes unchanged


def test_the_image_on_another_vendors_twin_is_refused_by_identity(order: Path, factory, tmp_path: Path) -> None:  # noqa: F811
    _, vars_fd = factory
    result = runner.invoke(app, ["boot", str(order / "J30BRN01"), "--vars", str(vars_fd), "--accel", "tcg",
                                 "--as-model", "hpe-proliant-dl360-gen10-plus", "--timeout", "600", "--json",
                                 "--log", str(tmp_path / "console.txt")])  # fmt: skip
    doc = json.loads(result.stdout)
    assert result.exit_code == 1, (tmp_path / "console.txt").read_text()[-3000:]
    assert (doc["status"], doc["twin"], doc["connect"]) == ("FAILED", "hpe-proliant-dl360-gen10-plus", URI)
    assert doc["reason"].startswith("wrong hardware: this config is for dell-poweredge-r650"), doc["reason"]
    assert doc["steps"] == []  # refused before anything was applied
    assert _leftovers("J30BRN01") == []


@pytest.mark.heavy
def test_an_hpe_and_a_lenovo_unit_burn_in_two_twins_at_a_time(core_dir: Path, factory, tmp_path: Path) -> None:  # noqa: F811
    keys, vars_fd = factory
    out = tmp_path / "order"
    out.mkdir()
    _unit(out, core_dir, keys.folder.parent, "remote-clinic", "clinic-valley", "CLV0BRN1")
    _unit(out, core_dir, keys.folder.parent, "factory-edge", "factory-plant1", "FEP0BRN1")
    result = runner.invoke(app, ["burnin", str(out), "--vars", str(vars_fd), "--accel", "tcg", "--parallel", "2",
                                 "--timeout", "900", "--json"])  # fmt: skip
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report
    got = {u["serial"]: (u["status"], u["twin"], u["pcr15_match"]) for u in report["units"]}
    assert got == {"CLV0BRN1": ("READY", "hpe-proliant-dl360-gen10-plus", True),
                   "FEP0BRN1": ("READY", "lenovo-thinksystem-sr650-v2", True)}  # fmt: skip
    assert report["totals"]["ready"] == 2


@pytest.mark.heavy
def test_an_interrupted_burn_in_leaves_no_twin_behind(order: Path, factory, tmp_path: Path) -> None:  # noqa: F811
    """Ctrl-C (SIGINT) while the twin boots: the twin is destroyed and removed, the report says interrupted, the unit
    cancelled, exit 130."""
    _, vars_fd = factory
    name = domain.domain_name("J30BRN01")
    run = subprocess.Popen([sys.executable, "-m", "oemkit", "burnin", str(order), "--vars", str(vars_fd), "--accel",
                            "tcg", "--json", "--force"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        end = time.monotonic() + 180
        while not _running(name) and time.monotonic() < end and run.poll() is None:
            time.sleep(0.5)
        assert _running(name), "the twin never started"
        time.sleep(5)  # well into the boot
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130
    report = json.loads(out)
    assert report["interrupted"] is True and [u["status"] for u in report["units"]] == ["cancelled"]
    assert _leftovers("J30BRN01") == []
