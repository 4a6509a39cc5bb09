"""The build line without a core: its report and JUnit XML as rendered, the audit log's lines, and every input the
line refuses before a unit starts (exit 2, nothing built)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.line import audit
from oemkit.line.report import Report, UnitResult, junit_xml

from .conftest import REPO

runner = CliRunner()
KEY = REPO / "tests" / "data" / "keys" / "signing.key"
ORDERS = REPO / "profiles" / "orders-example.csv"


def _report() -> Report:
    report = Report("orders.csv", "out", "c0ffee", "raw", 2, "threads", "2026-12-01T10:00:00.125Z", rows=4)
    report.units = [  # in the order they finished, not the rows'
        UnitResult("B2", 3, "failed", "orders.csv:3:1: row: model x is not one of this profile's models", 0.004),
        UnitResult("A1", 2, "ok", None, 2.5, "out/A1/appliance.raw", "ab" * 32, 111_149_056),
        UnitResult("C3", 4, "skipped", "verified", 0.4, "out/C3/appliance.raw", "cd" * 32, 111_149_056),
    ]
    report.seconds, report.seal_seconds = 30.0, 0.25
    return report


def test_the_json_report_has_every_unit_in_row_order_and_the_totals() -> None:
    doc = _report().to_dict()
    assert [u["serial"] for u in doc["units"]] == ["A1", "B2", "C3"]
    assert doc["totals"] == {"units": 4, "ok": 1, "skipped": 1, "failed": 1, "not_run": 1}
    assert doc["units_per_minute"] == 6.0  # 3 finished in 30 s
    assert doc["workers"] == 2 and doc["format"] == "raw" and doc["seal_seconds"] == 0.25
    assert set(doc["units"][0]) == {"serial", "line", "status", "reason", "seconds", "image", "sha256", "bytes"}
    assert doc["units"][1]["image"] is None and doc["units"][1]["reason"].startswith("orders.csv:3:1:")
    json.dumps(doc)  # plain JSON


def test_junit_is_one_suite_with_a_case_per_unit() -> None:
    root = ET.fromstring(junit_xml(_report(), "orders"))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    counts = [suite.get(k) for k in ("name", "tests", "failures", "errors", "skipped")]
    assert counts == ["orders", "3", "1", "0", "1"]
    assert suite.get("timestamp") == "2026-12-01T10:00:00"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["A1", "B2", "C3"]
    ok, failed, skipped = cases
    assert ok.find("failure") is None and ok.find("skipped") is None and "ab" * 32 in (ok.findtext("system-out"))
    failure = failed.find("failure")
    assert failure is not None and failure.get("message") == _report().units[0].reason
    assert skipped.find("skipped") is not None and skipped.find("skipped").get("message").startswith("verified")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["core_id"] == "c0ffee" and props["workers"] == "2" and props["interrupted"] == "false"


def test_junit_stays_xml_when_a_reason_holds_what_xml_cannot() -> None:
    report = _report()
    report.units[0].reason = "mcopy failed (exit 1): \x1b[31mbad\x00 <&> \"'"  # a tool's stderr, escapes and all
    text = junit_xml(report, "orders")
    failure = ET.fromstring(text).find("testsuite/testcase[@name='B2']/failure")
    assert failure is not None and failure.get("message") == "mcopy failed (exit 1): \ufffd[31mbad\ufffd <&> \"'"


def test_the_audit_log_appends_one_json_line_an_event(tmp_path: Path) -> None:
    unit = tmp_path / "J30ABC12"
    audit.record(unit, "sealed", 2, {"content_id": "sha256:00"}, time="2026-12-01T10:00:00.000Z")
    audit.record(unit, "failed", 2, {"reason": "x"})
    lines = [json.loads(t) for t in (unit / audit.LOG).read_text().splitlines()]
    assert [e["event"] for e in lines] == ["sealed", "failed"]
    assert lines[0] == {"time": "2026-12-01T10:00:00.000Z", "event": "sealed", "line": 2,
                        "detail": {"content_id": "sha256:00"}}  # fmt: skip
    assert lines[1]["time"].endswith("Z")


# ------------------------------------------------------------------------------------------ refused before a unit
def _fake_core(folder: Path) -> Path:
    """A folder shaped like a core (what the line checks before it starts; nothing is built from it here)."""
    folder.mkdir()
    (folder / "core.json").write_text('{"core_id": "0123456789abcdef0123"}')
    for name in ("vmlinuz", "initrd.img"):
        (folder / name).write_bytes(b"\0")
    return folder


def _line(tmp: Path, *extra: str, orders: Path = ORDERS, core: Path | None = None, keys: Path | None = None):
    args = ["line", str(orders), "--core", str(core or tmp / "no-core"), "--key", str(KEY),
            "--keys", str(keys or tmp / "no-keys"), "-o", str(tmp / "out"), *extra]  # fmt: skip
    return runner.invoke(app, args)


def test_missing_orders_core_or_keys_is_exit_2_before_any_unit(tmp_path: Path) -> None:
    core = _fake_core(tmp_path / "core")
    cases = [
        (dict(orders=tmp_path / "none.csv", core=core), "none.csv"),
        (dict(), "no-core/core.json"),
        (dict(core=core), "no-keys/secureboot/owner.guid"),
    ]
    for kwargs, where in cases:
        result = _line(tmp_path, **kwargs)
        assert result.exit_code == 2, result.output
        assert where in result.stderr and "cannot read" in result.stderr
        assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_unreadable_orders_and_a_non_core_folder_are_exit_2(tmp_path: Path) -> None:
    orders = tmp_path / "o.csv"
    orders.write_text("serial,profile\nSN0001,p.yaml\n")
    result = _line(tmp_path, orders=orders, core=_fake_core(tmp_path / "core"))
    assert result.exit_code == 2 and "o.csv:1:1" in result.stderr and "missing site" in result.stderr
    (tmp_path / "empty").mkdir()
    result = _line(tmp_path, core=tmp_path / "empty")
    assert result.exit_code == 2 and "core.json" in result.stderr


def test_argument_errors_are_exit_2(tmp_path: Path) -> None:
    core = _fake_core(tmp_path / "core")
    result = _line(tmp_path, "--format", "vmdk", core=core)
    assert result.exit_code == 2 and "format 'vmdk' is not available" in result.stderr
    assert _line(tmp_path, "--workers", "0", core=core).exit_code == 2
    result = runner.invoke(app, ["line", str(ORDERS), "--key", str(KEY), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--core" in result.output  # a required option missing: click's usage error


def test_an_output_that_is_not_a_folder_is_exit_2(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keys", "init", "--dir", str(keys), "--secure-boot"]).exit_code == 0
    (tmp_path / "out").write_text("a file")
    result = _line(tmp_path, core=_fake_core(tmp_path / "core"), keys=keys)
    assert result.exit_code == 2 and "out: exists and is not a folder" in result.stderr
    assert (tmp_path / "out").read_text() == "a file"


def test_an_existing_junit_file_is_refused_unless_force(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text("<old/>")
    result = _line(tmp_path, "--junit", str(junit), core=_fake_core(tmp_path / "core"), orders=tmp_path / "none.csv")
    assert result.exit_code == 2 and "junit.xml: exists" in result.stderr and "--force" in result.stderr
    assert junit.read_text() == "<old/>"


def test_json_errors_are_json(tmp_path: Path) -> None:
    result = _line(tmp_path, "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["file"].endswith("core.json")
