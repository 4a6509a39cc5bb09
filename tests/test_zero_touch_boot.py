"""Zero-touch end to end, with real parts only: two units built and registered with a real `oemkit serve` (SQLite,
HTTPS from the tests' service CA, which the units' signed configs pin), then booted as the branch boots them — the
shipped image, OVMF Secure Boot, a TPM, the twin's management port reaching the service through the phone-home
address its config names (10.0.2.100, forwarded to 127.0.0.1). One reaches READY; one is refused by its datastore
rule before it configures anything and still reports FAILED. The fleet page is then read in headless Chromium.

CI runs the two boots (the issue's budget); the heavy suite adds a box powered on while the service is down, whose
spooled report arrives at its next power-on with the service up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app

from .conftest import REPO
from .firstboot_kit import compile_to
from .zt_service import ADMIN, KEYS, Service

pytestmark = pytest.mark.slow
runner = CliRunner()
PROFILES = REPO / "tests" / "data" / "profiles" / "zero-touch"
PROFILE, SITE = PROFILES / "zt-branch.yaml", PROFILES / "sites" / "zt-lab.yaml"
READY_UNIT, FAILING_UNIT, OFFLINE_UNIT = "J30ZTR01", "J30ZTF01", "J30ZTO01"


@pytest.fixture(scope="module")
def fleet(core_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Service]]:
    """OUT with the three units built (qcow2, the tests' factory keys), the service running, all registered."""
    work = tmp_path_factory.mktemp("zero-touch")
    keys = work / "keys"
    keys.mkdir()
    for name in ("signing.key", "signing.pub"):
        shutil.copyfile(KEYS / name, keys / name)
    assert runner.invoke(app, ["keys", "init", "--dir", str(keys), "--secure-boot"]).exit_code == 0
    vars_fd = keys / "VARS.fd"
    assert runner.invoke(app, ["keys", "enroll-vars", "--dir", str(keys), "-o", str(vars_fd)]).exit_code == 0
    out = work / "out"
    for serial in (READY_UNIT, FAILING_UNIT, OFFLINE_UNIT):
        overlay = PROFILES / "units" / f"{serial}.yaml"
        compile_to(PROFILE, SITE, serial, work / f"{serial}.json", overlay if overlay.exists() else None)
        result = runner.invoke(app, ["image", "build", str(work / f"{serial}.json"), "--core", str(core_dir),
                                     "--keys", str(keys), "-o", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
    service = Service(work)
    service.start()
    try:
        for serial in (READY_UNIT, FAILING_UNIT, OFFLINE_UNIT):
            result = subprocess.run(
                [sys.executable, "-m", "oemkit", "register", str(out / serial), "--server", service.url,
                 "--ca", str(KEYS / "service-ca.pem"), "--json"],
                env={**os.environ, "OEMKIT_ADMIN_TOKEN": ADMIN}, capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["serial"] == serial
            verified = runner.invoke(app, ["image", "verify", str(out / serial), "--keys", str(keys)])
            assert verified.exit_code == 0, verified.output  # the token is beside the config, recorded by hash
        yield out, vars_fd, service
    finally:
        service.stop()


def _boot(unit_dir: Path, vars_fd: Path, service_port: int, box: Path, log: Path, *extra: str) -> tuple[dict, str]:
    args = ["boot", str(unit_dir), "--vars", str(vars_fd), "--accel", "tcg", "--timeout", "600", "--qemu",
            "--box", str(box), "--service", str(service_port), "--log", str(log), "--json", *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout), log.read_text()


def _marks(console: str, name: str) -> list[str]:
    mark = f"oemkit-core: {name} "
    return [line.split(mark, 1)[1] for line in console.splitlines() if mark in line]


def test_a_refused_box_still_reports_failed_with_the_reason(fleet, tmp_path: Path) -> None:
    out, vars_fd, service = fleet
    # the twin gets a normal SSD (the rule asks for 60 TB): the refusal is the box's own, over real disks
    doc, console = _boot(out / FAILING_UNIT, vars_fd, service.port, tmp_path / "box", tmp_path / "console.log",
                         "--disks", "sata:ssd:400")  # fmt: skip
    assert doc["status"] == "FAILED" and doc["reason"].startswith("datastore: "), doc
    net, phoned = _marks(console, "reportnet"), _marks(console, "phonehome")
    assert net and "report network: single over" in net[0] and "10.0.2.15/24" in net[0], console[-3000:]
    assert phoned and phoned[0].endswith("phone home: enrolled, delivered 1, spooled 0"), console[-3000:]
    unit = service.get(f"/v1/units/{FAILING_UNIT}")
    assert (unit["state"], unit["enrolled"], unit["last_seq"]) == ("FAILED", True, 1)
    last = unit["last_report"]
    assert (last["status"], last["fault"], last["origin"]) == ("FAILED", "refusal", "agent")
    assert last["reason"] == doc["reason"] and last["pcr15"] == doc["pcr15_expected"]
    assert not unit["pcr15_mismatch"]


def test_a_box_reaches_ready_and_reports_it_with_its_core_and_pcr15(fleet, tmp_path: Path) -> None:
    out, vars_fd, service = fleet
    doc, console = _boot(out / READY_UNIT, vars_fd, service.port, tmp_path / "box", tmp_path / "console.log")
    assert doc["status"] == "READY" and doc["pcr15_match"] is True, doc
    assert _marks(console, "phonehome")[0].endswith("phone home: enrolled, delivered 1, spooled 0"), console[-3000:]
    assert not _marks(console, "reportnet")  # first boot configured the management network itself
    unit = service.get(f"/v1/units/{READY_UNIT}")
    manifest = json.loads((out / READY_UNIT / "manifest.json").read_text())
    last = unit["last_report"]
    assert (unit["state"], last["status"], last["bank"]) == ("READY", "READY", "a")
    assert last["core_id"] == manifest["core_id"] == unit["core_id"]  # from the signed UKI's command line
    assert [s["status"] for s in last["steps"]] == ["ok"] * len(last["steps"]) and len(last["steps"]) > 5
    assert last["pcr15"] == manifest["pcr15_expected"] and not unit["pcr15_mismatch"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    give_up = pytest.fail if os.environ.get("OEMKIT_REQUIRE_CORE") == "1" else pytest.skip
    give_up("Debian's chromium is not installed (bash scripts/setup.sh --dev installs it)")
    raise AssertionError


def _spki_pin(cert_pem: bytes) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value for the service's own key: that one key, no other."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_the_fleet_page_in_a_real_browser_shows_ready_and_failed(fleet, tmp_path: Path) -> None:
    """Runs after the two boots (file order): headless Chromium renders the page as an admin's browser would."""
    _, _, service = fleet
    states = {serial: service.get(f"/v1/units/{serial}") for serial in (READY_UNIT, FAILING_UNIT)}
    if {s: u["state"] for s, u in states.items()} != {READY_UNIT: "READY", FAILING_UNIT: "FAILED"}:
        pytest.skip("the two boots above did not run (or failed): nothing to show")
    pin = _spki_pin((service.work / "tls" / "server.pem").read_bytes())
    url = f"https://admin:{ADMIN}@127.0.0.1:{service.port}/"
    done = subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", f"--ignore-certificate-errors-spki-list={pin}",
         "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    dom = done.stdout
    assert done.returncode == 0 and "<html" in dom, done.stderr[-2000:]
    for serial in (READY_UNIT, FAILING_UNIT):
        assert serial in dom, dom[:3000]
    assert "READY" in dom and "FAILED" in dom
    assert states[FAILING_UNIT]["last_report"]["reason"].split(";")[0] in dom  # the reason, as the page shows it
    assert "Northwind StoreBox ZT" in dom  # the OEM's branding from the profile


@pytest.mark.heavy
def test_a_report_made_offline_arrives_at_the_next_power_on(fleet, tmp_path: Path) -> None:
    out, vars_fd, service = fleet
    box = tmp_path / "box"
    service.stop()
    try:
        doc, console = _boot(out / OFFLINE_UNIT, vars_fd, service.port, box, tmp_path / "first.log")
    finally:
        service.start()
    assert doc["status"] == "READY", doc
    first = _marks(console, "phonehome")[0]
    assert "delivered 0, spooled 1" in first, console[-3000:]
    assert service.get(f"/v1/units/{OFFLINE_UNIT}")["state"] == "registered"
    doc, console = _boot(out / OFFLINE_UNIT, vars_fd, service.port, box, tmp_path / "second.log")
    assert doc["status"] == "READY" and doc["reason"] == "already done", doc
    assert _marks(console, "phonehome")[0].endswith("phone home: enrolled, delivered 1, spooled 0"), console[-3000:]
    unit = service.get(f"/v1/units/{OFFLINE_UNIT}")
    assert (unit["state"], unit["last_seq"], unit["last_report"]["status"]) == ("READY", 1, "READY")
    # made at the first power-on, days before it counted: no clock window refused it
    assert unit["last_report"]["made_at"] < time.time() - 30
