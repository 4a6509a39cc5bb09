"""`oemkit line` on the real core: an order with a bad row builds every other unit (each verifies, its unit.json the
very bytes `oemkit compile` seals), reports per unit in JSON and JUnit, logs per serial; a rerun skips what verifies,
rebuilds what does not, refuses a unit sealed differently since unless --force; SIGTERM stops it cleanly.
Real seal, real image builds (mkfs.fat, mtools, sgdisk), no mocks: slow (a few seconds a unit), run in CI."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.image.appliance.image import FORMATS
from oemkit.image.appliance.verify import verify
from oemkit.line.run import DEFAULT_FORMAT
from oemkit.seal import secureboot

from .conftest import REPO

pytestmark = pytest.mark.slow
runner = CliRunner()
KEY = REPO / "tests" / "data" / "keys" / "signing.key"
GOOD = [
    ("J30ABC12", "retail-branch.yaml", "sites/retail-ber01.yaml", ""),
    ("CZ2104MED1", "remote-clinic.yaml", "sites/clinic-hq-north.yaml", ""),
    ("J90LNV0001", "factory-edge.yaml", "sites/factory-plant1.yaml", ""),
    ("J90LNV0002", "factory-edge.yaml", "sites/factory-plant2.yaml", ""),
]
IMAGE = f"appliance.{DEFAULT_FORMAT}"
BAD = ("J30ABC13", "retail-branch.yaml", "sites/retail-muc02.yaml", "dell-poweredge-r640")  # the profile's is R650


@pytest.fixture(scope="module")
def sb_keys(tmp_path_factory: pytest.TempPathFactory) -> secureboot.SecureBootKeys:
    folder = tmp_path_factory.mktemp("keys")
    result = runner.invoke(app, ["keys", "init", "--dir", str(folder), "--secure-boot"])
    assert result.exit_code == 0, result.output
    return secureboot.load(folder)


def _orders(tmp: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """An order beside a copy of the example profiles (so a test may edit a site)."""
    profiles = tmp / "profiles"
    if not profiles.exists():
        shutil.copytree(REPO / "profiles", profiles)
    orders = profiles / "orders.csv"
    orders.write_text("serial,profile,site,model\n" + "".join(",".join(r) + "\n" for r in rows))
    return orders


def _line(orders: Path, core: Path, keys: secureboot.SecureBootKeys, out: Path, *extra: str):
    args = ["line", str(orders), "--core", str(core), "--key", str(KEY), "--keys", str(keys.folder.parent),
            "-o", str(out), "--workers", "2", *extra]  # fmt: skip
    return runner.invoke(app, args)


def _events(unit_dir: Path) -> list[dict]:
    return [json.loads(t) for t in (unit_dir / "line.log").read_text().splitlines()]


def _by_serial(report: dict) -> dict[str, dict]:
    return {u["serial"]: u for u in report["units"]}


def test_an_order_with_a_bad_row_builds_every_other_unit(core_dir: Path, sb_keys, tmp_path: Path) -> None:
    rows = [GOOD[0], BAD, *GOOD[1:], ("J90LNV0003", *GOOD[3][1:]), ("j30abc12", *GOOD[0][1:])]
    orders, out, junit = _orders(tmp_path, rows), tmp_path / "out", tmp_path / "junit.xml"
    (out / "J90LNV0003" / IMAGE).mkdir(parents=True)  # where its image must go: its build fails, alone
    result = _line(orders, core_dir, sb_keys, out, "--json", "--junit", str(junit))
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((out / "line-report.json").read_text())
    assert report["totals"] == {"units": 7, "ok": 4, "skipped": 0, "failed": 3, "not_run": 0}
    assert report["workers"] == 2 and report["format"] == DEFAULT_FORMAT and report["units_per_minute"] > 0
    assert [u["line"] for u in report["units"]] == [2, 3, 4, 5, 6, 7, 8]
    units = _by_serial(report)
    bad = units["J30ABC13"]
    assert bad["status"] == "failed" and bad["line"] == 3 and bad["image"] is None
    assert bad["reason"].startswith(f"{orders}:3:1:") and "dell-poweredge-r640" in bad["reason"]
    assert [e["event"] for e in _events(out / "J30ABC13")] == ["failed"]
    blocked = units["J90LNV0003"]
    assert blocked["status"] == "failed" and blocked["reason"].startswith(str(out / "J90LNV0003" / IMAGE))
    assert [e["event"] for e in _events(out / "J90LNV0003")] == ["sealed", "failed"]
    twice = report["units"][-1]  # a serial ordered twice (case folded), as compile --orders refuses it
    assert twice["status"] == "failed" and "already ordered on line 2" in twice["reason"]
    assert not (out / "j30abc12").exists()  # its failure is logged with the first row's unit
    assert [e["event"] for e in _events(out / "J30ABC12") if e["line"] == 8] == ["failed"]
    for serial, profile, site, _ in GOOD:
        unit, unit_dir = units[serial], out / serial
        manifest, problems = verify(unit_dir, sb_keys)
        assert problems == [] and unit["status"] == "ok", (serial, problems, unit)
        assert unit["image"] == str(unit_dir / IMAGE)
        recorded = manifest["files"][IMAGE]
        assert (unit["sha256"], unit["bytes"]) == (recorded["sha256"], recorded["bytes"])
        sealed_file = tmp_path / f"{serial}.json"
        compile_args = [str(orders.parent / profile), "--site", str(orders.parent / site), "--serial", serial]
        sealed = runner.invoke(app, ["compile", *compile_args, "--key", str(KEY), "-o", str(sealed_file)])
        assert sealed.exit_code == 0, sealed.output
        assert (unit_dir / "unit.json").read_bytes() == sealed_file.read_bytes()  # the very bytes compile seals
        events = [e for e in _events(unit_dir) if e["line"] == unit["line"]]  # not the row ordering it again
        assert [e["event"] for e in events] == ["sealed", "built"]
        assert events[0]["detail"]["content_id"] == manifest["unit_config"]["content_id"]
        assert events[1]["detail"]["sha256"] == unit["sha256"]
    assert not list(out.glob(".line-sealed-*")) and not list(out.glob("*/.work"))  # nothing half-done left
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("7", "3", "0")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert [c.get("name") for c in suite.iter("testcase")] == [*list(cases)[:6], "j30abc12"]
    assert list(cases)[:6] == ["J30ABC12", "J30ABC13", "CZ2104MED1", "J90LNV0001", "J90LNV0002", "J90LNV0003"]
    failure = cases["J30ABC13"].find("failure")
    assert failure is not None and failure.get("message") == bad["reason"]
    assert all(cases[s].find("failure") is None for s, *_ in GOOD)


def test_a_rerun_skips_what_verifies_and_rebuilds_what_does_not(core_dir: Path, sb_keys, tmp_path: Path) -> None:
    orders, out = _orders(tmp_path, GOOD[:3]), tmp_path / "out"
    assert _line(orders, core_dir, sb_keys, out, "--format", "raw").exit_code == 0
    first = json.loads((out / "line-report.json").read_text())
    again = _line(orders, core_dir, sb_keys, out, "--format", "raw", "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["totals"]["skipped"] == 3 and all(u["reason"].startswith("verified") for u in report["units"])
    assert [u["sha256"] for u in report["units"]] == [u["sha256"] for u in first["units"]]
    assert _events(out / "J30ABC12")[-1]["event"] == "skipped"
    image = out / "J30ABC12" / "appliance.raw"
    with image.open("r+b") as fh:  # one flipped byte
        fh.seek(image.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(image.stat().st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    (out / "CZ2104MED1" / "manifest.json").unlink()  # as a build killed between its image and its manifest leaves
    third = _line(orders, core_dir, sb_keys, out, "--format", "raw", "--json")
    assert third.exit_code == 0, third.output
    units = _by_serial(json.loads(third.stdout))
    assert units["J30ABC12"]["status"] == "ok" and "does not verify" in units["J30ABC12"]["reason"]
    assert units["CZ2104MED1"]["status"] == "ok" and "without a manifest" in units["CZ2104MED1"]["reason"]
    assert units["J90LNV0001"]["status"] == "skipped"
    for serial in units:
        assert verify(out / serial, sb_keys)[1] == []
    assert units["J30ABC12"]["sha256"] == _by_serial(first)["J30ABC12"]["sha256"]  # same inputs, same bytes
    if "qcow2" in FORMATS:  # the same units asked as the other format: a decision, as a changed config is
        other = _line(orders, core_dir, sb_keys, out, "--format", "qcow2", "--json")
        assert other.exit_code == 1, other.output
        reasons = {u["reason"] for u in json.loads(other.stdout)["units"]}
        assert reasons == {"built as raw; --force to rebuild as qcow2"}
        forced = _line(orders, core_dir, sb_keys, out, "--format", "qcow2", "--force", "--json")
        assert forced.exit_code == 0, forced.output
        assert {u["status"] for u in json.loads(forced.stdout)["units"]} == {"ok"}
        assert all(verify(out / serial, sb_keys)[1] == [] for serial in units)


def test_a_unit_sealed_differently_since_is_refused_unless_force(core_dir: Path, sb_keys, tmp_path: Path) -> None:
    rows = [GOOD[0], ("J30ABC14", *GOOD[0][1:]), GOOD[1]]
    orders, out = _orders(tmp_path, rows), tmp_path / "out"
    assert _line(orders, core_dir, sb_keys, out).exit_code == 0
    before = (out / "J30ABC12" / "unit.json").read_bytes()
    site = orders.parent / "sites" / "retail-ber01.yaml"
    site.write_text(site.read_text().replace("10.41.0.10/24", "10.41.0.20/24"))  # the management address changes
    refused = _line(orders, core_dir, sb_keys, out, "--json")
    assert refused.exit_code == 1, refused.output
    units = _by_serial(json.loads(refused.stdout))
    for serial in ("J30ABC12", "J30ABC14"):
        assert units[serial]["status"] == "failed"
        assert "built from another config/core; --force to rebuild" in units[serial]["reason"]
        assert _events(out / serial)[-1]["event"] == "failed"
    assert units["CZ2104MED1"]["status"] == "skipped"
    assert (out / "J30ABC12" / "unit.json").read_bytes() == before  # the built unit is left as it was
    assert verify(out / "J30ABC12", sb_keys)[1] == []
    forced = _line(orders, core_dir, sb_keys, out, "--json", "--force")
    assert forced.exit_code == 0, forced.output
    units = _by_serial(json.loads(forced.stdout))
    assert [units[s]["status"] for s in ("J30ABC12", "J30ABC14", "CZ2104MED1")] == ["ok", "ok", "skipped"]
    assert "rebuilt with --force" in units["J30ABC12"]["reason"]
    assert b"10.41.0.20/24" in (out / "J30ABC12" / "unit.json").read_bytes()
    manifest, problems = verify(out / "J30ABC12", sb_keys)
    assert problems == [] and manifest["unit_config"]["content_id"] == _events(out / "J30ABC12")[-2]["detail"][
        "content_id"]  # fmt: skip


def test_sigterm_stops_the_line_cleanly_and_reports_what_finished(core_dir: Path, sb_keys, tmp_path: Path) -> None:
    rows = [(f"SIG{n:04d}", *GOOD[n % 4][1:]) for n in range(5)]
    orders, out = _orders(tmp_path, rows), tmp_path / "out"
    cmd = [sys.executable, "-m", "oemkit", "line", str(orders), "--core", str(core_dir), "--key", str(KEY),
           "--keys", str(sb_keys.folder.parent), "-o", str(out), "--workers", "1", "--format", "raw"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stderr is not None
    seen = []
    for text in proc.stderr:  # not a terminal: one plain line a unit
        seen.append(text)
        if " ok " in text:
            proc.send_signal(signal.SIGTERM)
            break
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(seen) + rest
    report = json.loads((out / "line-report.json").read_text())
    assert report["interrupted"] is True
    totals = report["totals"]
    assert totals["ok"] >= 1 and totals["not_run"] >= 1 and totals["ok"] + totals["not_run"] == 5, totals
    for unit in report["units"]:
        assert unit["status"] == "ok" and verify(out / unit["serial"], sb_keys)[1] == []
    for unit_dir in out.iterdir():
        if unit_dir.name.startswith("SIG") and (unit_dir / "manifest.json").exists():
            assert verify(unit_dir, sb_keys)[1] == []  # a manifest is only ever beside its whole image
    assert not list(out.glob(".line-sealed-*")) and not list(out.glob("*/.work"))
