"""Burn-in without VMs: the units found in OUT, the scheduler (N workers over the URIs, the fewest twins first),
cancellation, the JSON report and JUnit XML, and the CLI's exit codes — the per-unit boot injected through the
`boot_one` seam (or LibvirtBoot replaced), so no twin is ever started."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.burnin import boot as burnin_boot
from oemkit.burnin import job as burnin_job
from oemkit.burnin import run as burnin_run
from oemkit.burnin.boot import failing_step
from oemkit.burnin.job import Job, Unit, discover, prepare
from oemkit.burnin.report import FIRST_BOOT, INFRASTRUCTURE, Report, UnitResult, junit_xml
from oemkit.burnin.run import Interrupted, burn_in
from oemkit.cli.app import app
from oemkit.errors import OemkitError, OutputRefused
from oemkit.twin.console import BootResult
from oemkit.twin.virt import Cancelled, TwinError

runner = CliRunner()
MODEL = "dell-poweredge-r640"
PCR = "ab" * 32


def _unit(out: Path, serial: str, model: str = MODEL, folder: str | None = None) -> Path:
    """A built unit folder as far as discovery (and appliance.load's manifest reading) looks: manifest + image."""
    where = out / (folder or serial)
    where.mkdir(parents=True)
    doc = {"serial": serial, "model": model, "format": "raw", "files": {"appliance.raw": {}}, "pcr15_expected": PCR}
    (where / "manifest.json").write_text(json.dumps(doc))
    (where / "appliance.raw").write_bytes(b"\0" * 512)
    return where


def _order(out: Path, n: int) -> list[str]:
    serials = [f"J30BRN{i:02d}" for i in range(n)]
    for s in serials:
        _unit(out, s)
    return serials


def _job(out: Path, uris: tuple[str, ...] = ("qemu:///system",), parallel: int = 1) -> Job:
    vars_fd = out.parent / "VARS.fd"
    vars_fd.write_bytes(b"vars")
    return prepare(out, uris, parallel=parallel, timeout=60, vars_fd=vars_fd, catalog=None, accel="tcg")


def _ready(unit: Unit, uri: str, **kw: object) -> UnitResult:
    return UnitResult(unit.serial, unit.model, "READY", FIRST_BOOT, folder=str(unit.folder), uri=uri, pcr15=PCR,
                      pcr15_expected=PCR, pcr15_match=True, **kw)  # fmt: skip


# ---------------------------------------------------------------------------------------------------- discovery
def test_discovery_finds_unit_folders_and_skips_the_shared_caches_and_our_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _order(out, 2)
    for cache in (".base", ".uki", ".burnin", ".line-sealed-x"):  # each with a manifest, to prove the name decides
        _unit(out, "J30CACHE", folder=cache)
    (out / "J30NOMAN").mkdir()  # a build killed before its manifest: not a unit
    (out / "J30NOMAN" / "appliance.raw").write_bytes(b"")
    (out / "line-report.json").write_text("{}")
    bad = out / "J30BADMF"
    bad.mkdir()
    (bad / "manifest.json").write_text("[1, 2")
    _unit(out, "J30BRN00", folder="J30COPY0")  # a copy of another unit: booting both would fight over one twin
    _unit(out, "../../etc", folder="J30EVIL0")  # a serial that is a path: never a log name
    units = discover(out)
    assert [u.folder.name for u in units] == ["J30BADMF", "J30BRN00", "J30BRN01", "J30COPY0", "J30EVIL0"]
    by = {u.folder.name: u for u in units}
    assert by["J30BRN00"].problem is None and by["J30BRN00"].model == MODEL
    assert "not an image manifest" in (by["J30BADMF"].problem or "")
    assert "also the unit in" in (by["J30COPY0"].problem or "") and by["J30COPY0"].serial == "J30BRN00"
    assert by["J30EVIL0"].serial == "J30EVIL0" and "is not 3-32 letters" in (by["J30EVIL0"].problem or "")


def test_prepare_refuses_what_would_fail_later(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OemkitError, match="not a folder of built units"):
        _job(out)
    out.mkdir()
    (out / ".base").mkdir()
    with pytest.raises(OemkitError, match="no built units"):
        _job(out)
    _order(out, 1)
    with pytest.raises(OemkitError, match="no OVMF variable store"):
        prepare(out, [], parallel=1, timeout=1, vars_fd=tmp_path / "nope.fd", catalog=None, accel="tcg")
    (out / ".burnin").mkdir()
    (out / ".burnin" / "J30BRN00.console.log").write_text("an earlier run's")
    with pytest.raises(OutputRefused, match="exists"):
        _job(out)
    job = prepare(out, ["a", "b", "a"], parallel=1, timeout=1, vars_fd=tmp_path / "VARS.fd", catalog=None,
                  force=True, accel="kvm")  # fmt: skip
    assert job.uris == ("a", "b") and job.domain_type == "kvm" and job.accel_why == "asked for"


def test_every_host_is_reached_before_any_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libvirt's in-process test driver stands in for a host: its pool is made once, up front; a host that cannot
    be reached refuses the run (exit 2) instead of failing every unit handed to it."""
    burnin_job.check_hosts(["test:///default"])
    with pytest.raises(TwinError, match="cannot connect to bogus:///x"):
        burnin_job.check_hosts(["test:///default", "bogus:///x"])
    monkeypatch.setattr("oemkit.twin.appliance.require_tools", lambda: None)
    out = tmp_path / "out"
    _order(out, 1)
    result = runner.invoke(app, _cli(out, "-c", "bogus:///x"))
    assert result.exit_code == 2 and "cannot connect to bogus:///x" in result.stderr
    assert not (out / ".burnin").exists()


# ---------------------------------------------------------------------------------------------------- scheduling
@pytest.mark.parametrize(("units", "parallel"), [(6, 2), (8, 4)])
def test_twins_spread_evenly_over_the_uris(tmp_path: Path, units: int, parallel: int) -> None:
    """Each round of `parallel` boots runs at once (a barrier), so which URI each unit got is decided by the
    scheduler alone: never more than parallel/URIs twins on one host, and the same number of units on each."""
    _order(tmp_path / "out", units)
    job = _job(tmp_path / "out", ("qemu+ssh://a/system", "qemu+ssh://b/system"), parallel)
    barrier = threading.Barrier(parallel, timeout=10)
    lock, running, peak = threading.Lock(), Counter[str](), Counter[str]()

    def boot(unit: Unit, uri: str, cancel: threading.Event) -> UnitResult:
        with lock:
            running[uri] += 1
            peak[uri] = max(peak[uri], running[uri])
        barrier.wait()  # every twin of this round is up at once
        with lock:
            running[uri] -= 1
        return _ready(unit, uri)

    seen: list[str] = []
    report = burn_in(job, boot_one=boot, on_result=lambda r: seen.append(r.serial))
    assert Counter(u.uri for u in report.units) == {uri: units // 2 for uri in job.uris}
    assert peak == {uri: parallel // 2 for uri in job.uris}
    assert sorted(seen) == [u.serial for u in report.units]  # on_result: each unit once
    assert report.ok and report.totals() == {"units": units, "ready": units, "failed": 0, "timeout": 0,
                                             "errors": 0, "cancelled": 0}  # fmt: skip
    assert (job.out / ".burnin").is_dir()


def test_one_uri_takes_every_unit_one_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _order(out, 3)
    active, peak = [0], [0]
    lock = threading.Lock()

    def boot(unit: Unit, uri: str, cancel: threading.Event) -> UnitResult:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        with lock:
            active[0] -= 1
        return _ready(unit, uri)

    report = burn_in(_job(out), boot_one=boot)
    assert peak == [1] and {u.uri for u in report.units} == {"qemu:///system"}
    assert [u.serial for u in report.units] == ["J30BRN00", "J30BRN01", "J30BRN02"]  # OUT's order, not finishing


def test_infrastructure_errors_fail_their_unit_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _order(out, 3)
    (out / "J30BADMF").mkdir()
    (out / "J30BADMF" / "manifest.json").write_text("{}")  # no serial: never handed to boot_one
    booted: list[str] = []

    def boot(unit: Unit, uri: str, cancel: threading.Event) -> UnitResult:
        booted.append(unit.serial)
        if unit.serial == "J30BRN00":
            raise TwinError(f"cannot connect to {uri}: Failed to connect socket")
        if unit.serial == "J30BRN01":
            raise RuntimeError("a bug")
        return _ready(unit, uri)

    report = burn_in(_job(out, parallel=2), boot_one=boot)
    by = {u.serial: u for u in report.units}
    assert sorted(booted) == ["J30BRN00", "J30BRN01", "J30BRN02"]
    twin, bug, bad = by["J30BRN00"], by["J30BRN01"], by["J30BADMF"]
    assert (twin.status, twin.kind, twin.uri) == ("ERROR", INFRASTRUCTURE, "qemu:///system")
    assert twin.reason == "cannot connect to qemu:///system: Failed to connect socket"
    assert (bug.status, bug.kind, bug.reason) == ("ERROR", INFRASTRUCTURE, "RuntimeError: a bug")
    assert bad.status == "ERROR" and bad.kind == INFRASTRUCTURE and "not an image manifest" in (bad.reason or "")
    assert by["J30BRN02"].passed and not report.ok
    assert report.totals() == {"units": 4, "ready": 1, "failed": 0, "timeout": 0, "errors": 3, "cancelled": 0}


@pytest.mark.parametrize(("stop", "code"), [(KeyboardInterrupt(), 130), (SystemExit(143), 143)])
def test_a_stop_cancels_the_running_twins_and_the_rest(tmp_path: Path, stop: BaseException, code: int) -> None:
    """The first result reaches the main thread, which is then "interrupted" (as a Ctrl-C or SIGTERM would be):
    the running boots see the cancel event and clean their twins, the units never started are cancelled."""
    out = tmp_path / "out"
    _order(out, 5)
    cleaned: list[str] = []

    def boot(unit: Unit, uri: str, cancel: threading.Event) -> UnitResult:
        if unit.serial == "J30BRN00":
            return _ready(unit, uri)
        assert cancel.wait(10), "the cancel event never came"
        cleaned.append(unit.serial)  # what virt.boot does before Cancelled propagates
        raise Cancelled("interrupted")

    def interrupt(result: UnitResult) -> None:
        if result.serial == "J30BRN00":  # once: the cancelled units' results are delivered too, as they come in
            raise stop

    with pytest.raises(Interrupted) as caught:
        burn_in(_job(out, parallel=2), boot_one=boot, on_result=interrupt)
    report = caught.value.report
    assert caught.value.code == code and report.interrupted
    statuses = [(u.serial, u.status) for u in report.units]
    assert statuses == [("J30BRN00", "READY")] + [(f"J30BRN{i:02d}", "cancelled") for i in range(1, 5)]
    booting = {u.serial for u in report.units if (u.reason or "").startswith("interrupted while booting")}
    assert "J30BRN01" in booting and booting == set(cleaned)  # every twin that was running was cleaned
    assert all(u.reason == "not started: the burn-in was interrupted" for u in report.units[3:])
    assert report.totals()["cancelled"] == 4 and not report.ok


# ---------------------------------------------------------------------------------------------------- results
def _boot_result(status: str, reason: str | None, steps: list[dict], **kw: object) -> BootResult:
    return BootResult(status, MODEL, "J30BRN00", reason, 12.0, steps, **kw)


def test_the_failing_step_is_the_first_that_did_not_succeed() -> None:
    steps = [{"id": "network:uplink", "seconds": 0.1}, {"id": "pool:datastore", "seconds": 0.2}]
    assert failing_step(_boot_result("FAILED", "pool:datastore: OSError: no disk", steps)) == "pool:datastore"
    assert failing_step(_boot_result("FAILED", "first boot timed out before vm:web", steps[:1])) == "vm:web"
    flagged = [{"id": "a", "status": "ok"}, {"id": "b", "status": "failed"}]
    assert failing_step(_boot_result("FAILED", "whatever", flagged)) == "b"
    assert failing_step(_boot_result("FAILED", "serial mismatch: the box is J30XXX", [])) is None  # a refusal
    assert failing_step(_boot_result("READY", None, steps)) is None


def _report() -> Report:
    report = Report("/srv/out", ["qemu:///system", "qemu+ssh://root@b/system"], 2, "kvm", 900.0,
                    "2026-12-01T10:00:00.125Z", accel_why="asked for")  # fmt: skip
    log = "/srv/out/.burnin/{}.console.log".format
    report.units = [
        UnitResult("A1", MODEL, "READY", FIRST_BOOT, folder="/srv/out/A1", uri="qemu:///system", seconds=300.0,
                   pcr15=PCR, pcr15_expected=PCR, pcr15_match=True, console_log=log("A1")),
        UnitResult("B2", MODEL, "READY", FIRST_BOOT, seconds=310.0, pcr15="cd" * 32, pcr15_expected=PCR,
                   pcr15_match=False, console_log=log("B2")),
        UnitResult("C3", "hpe-proliant-dl360-gen10", "FAILED", FIRST_BOOT, "pool:datastore: no disk \x1b[31m\x00",
                   "pool:datastore", seconds=200.0, console_log=log("C3")),
        UnitResult("D4", MODEL, "TIMEOUT", FIRST_BOOT, "no OEMKIT-STATUS within 900 s", seconds=900.0,
                   console_log=log("D4")),
        UnitResult("E5", MODEL, "ERROR", INFRASTRUCTURE, "cannot connect to qemu+ssh://root@b/system", seconds=1.0),
        UnitResult("F6", MODEL, "cancelled", reason="not started: the burn-in was interrupted"),
    ]  # fmt: skip
    report.seconds = 1800.0
    return report


def test_the_json_report_counts_every_unit_once() -> None:
    doc = _report().to_dict()
    assert doc["totals"] == {"units": 6, "ready": 1, "failed": 2, "timeout": 1, "errors": 1, "cancelled": 1}
    assert doc["units_per_hour"] == 10.0  # 5 burnt in (the cancelled one is not) in half an hour
    units = {u["serial"]: u for u in doc["units"]}
    assert units["A1"]["passed"] and not units["B2"]["passed"]  # READY, but not the PCR 15 the factory predicted
    assert {"serial", "model", "twin", "uri", "status", "kind", "reason", "step", "seconds", "boot", "phases",
            "bank", "pcr15", "pcr15_expected", "pcr15_match", "disk_sha256", "image_sha256", "console_log",
            "cleaned"} <= set(units["A1"])  # fmt: skip
    assert units["E5"]["kind"] == "infrastructure" and units["F6"]["kind"] is None
    json.dumps(doc)


def test_junit_has_a_case_per_unit_with_failures_errors_and_skips() -> None:
    root = ET.fromstring(junit_xml(_report(), "out"))  # parses, although a reason holds ESC and NUL
    (suite,) = root.findall("testsuite")
    assert [suite.get(k) for k in ("tests", "failures", "errors", "skipped")] == ["6", "2", "2", "1"]
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["A1", "B2", "C3", "D4", "E5", "F6"]
    assert cases["C3"].get("classname") == "hpe-proliant-dl360-gen10" and cases["A1"].get("classname") == MODEL
    assert cases["A1"].find("failure") is None and cases["A1"].find("error") is None
    assert cases["A1"].findtext("system-out") == "/srv/out/.burnin/A1.console.log"
    assert "PCR 15 mismatch" in (cases["B2"].find("failure").get("message") or "")
    failure = cases["C3"].find("failure")
    assert failure is not None and (failure.get("message") or "").startswith("pool:datastore: no disk")
    assert "\ufffd" in (failure.get("message") or "")
    timeout, infra = cases["D4"].find("error"), cases["E5"].find("error")
    assert timeout is not None and timeout.get("type") == "TIMEOUT"
    assert infra is not None and infra.get("type") == "infrastructure" and cases["E5"].find("system-out") is None
    assert cases["F6"].find("skipped") is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["uris"] == "qemu:///system qemu+ssh://root@b/system" and props["interrupted"] == "false"


# ---------------------------------------------------------------------------------------------------- the CLI
class _FakeBoot:
    """LibvirtBoot's stand-in for the CLI: writes the console log where the real one would, fails J30BRN01."""

    def __init__(self, job: Job, on_phase: burnin_boot.OnPhase | None = None) -> None:
        self.job, self.on_phase = job, on_phase

    def __call__(self, unit: Unit, uri: str, cancel: threading.Event) -> UnitResult:
        log = self.job.console_log(unit)
        log.write_text("[    1.00] oemkit-core: init t=1.0\n")
        if self.on_phase:
            self.on_phase(unit, "init")
        if unit.serial == "J30BRN01":
            return UnitResult(unit.serial, unit.model, "FAILED", FIRST_BOOT, "vm:web: libvirtError: no", "vm:web",
                              folder=str(unit.folder), console_log=str(log))  # fmt: skip
        return _ready(unit, uri, console_log=str(log))


@pytest.fixture
def fake_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(burnin_run, "LibvirtBoot", _FakeBoot)  # the scheduler's default boot
    monkeypatch.setattr(burnin_job, "check_hosts", lambda uris, serials=(): {})
    monkeypatch.setattr("oemkit.twin.appliance.require_tools", lambda: None)


def _cli(out: Path, *more: str) -> list[str]:
    vars_fd = out.parent / "VARS.fd"
    vars_fd.write_bytes(b"vars")
    return ["burnin", str(out), "--vars", str(vars_fd), "--accel", "tcg", *more]


def test_cli_bad_input_is_exit_2(tmp_path: Path, fake_boot: None) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, _cli(out))
    assert result.exit_code == 2 and "not a folder of built units" in result.stderr
    out.mkdir()
    result = runner.invoke(app, _cli(out))
    assert result.exit_code == 2 and "no built units" in result.stderr
    _order(out, 1)
    result = runner.invoke(app, ["burnin", str(out), "--vars", str(tmp_path / "none.fd")])
    assert result.exit_code == 2 and "no OVMF variable store" in result.stderr
    result = runner.invoke(app, _cli(out, "--parallel", "0"))
    assert result.exit_code == 2 and "--parallel" in result.output
    result = runner.invoke(app, _cli(out, "--accel", "hvf"))
    assert result.exit_code == 2 and "--accel must be auto, kvm or tcg" in result.stderr
    (tmp_path / "junit.xml").write_text("")
    result = runner.invoke(app, _cli(out, "--junit", str(tmp_path / "junit.xml")))
    assert result.exit_code == 2 and "junit.xml: exists" in result.stderr and "--force" in result.stderr
    assert not (out / ".burnin").exists()  # refused before any twin: nothing written


def test_cli_burns_in_reports_and_refuses_to_replace_without_force(tmp_path: Path, fake_boot: None) -> None:
    out = tmp_path / "out"
    _order(out, 3)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    junit = tmp_path / "junit.xml"
    result = runner.invoke(app, _cli(out, "-c", "qemu:///system", "-c", "qemu+ssh://b/system", "-j", "2", "--json",
                                     "--junit", str(junit)))  # fmt: skip
    assert result.exit_code == 1, result.output  # J30BRN01 FAILED
    doc = json.loads(result.stdout)
    assert doc == json.loads((out / ".burnin" / "report.json").read_text())
    assert doc["totals"] == {"units": 3, "ready": 2, "failed": 1, "timeout": 0, "errors": 0, "cancelled": 0}
    assert doc["uris"] == ["qemu:///system", "qemu+ssh://b/system"] and doc["parallel"] == 2
    assert doc["accel"] == "tcg"
    assert [u["console_log"] for u in doc["units"]] == [str(out.absolute() / ".burnin" / f"J30BRN0{i}.console.log")
                                                        for i in range(3)]  # fmt: skip
    assert "[2/3]" in result.stderr and "J30BRN01 FAILED" in result.stderr and "vm:web" in result.stderr
    assert ET.parse(junit).getroot().get("failures") == "1"
    # the units' own folders untouched: `image verify` still holds after a burn-in
    assert sorted(p.relative_to(out) for p in out.rglob("*") if ".burnin" not in p.parts) == before
    again = runner.invoke(app, _cli(out))
    assert again.exit_code == 2 and "exists" in again.stderr
    (out / "J30BRN01").rename(tmp_path / "J30BRN01")  # the failed unit set aside: the rest all READY
    again = runner.invoke(app, _cli(out, "--force"))
    assert again.exit_code == 0, again.output
    assert "ready" in again.stdout and "report:" in again.stdout


def test_cli_interrupted_is_130_with_the_report(tmp_path: Path, fake_boot: None, monkeypatch) -> None:
    out = tmp_path / "out"
    _order(out, 2)

    def stopped(job: Job, **_: object) -> Report:
        report = Report(str(job.out), list(job.uris), job.parallel, job.accel, job.timeout, "2026-12-01T10:00:00Z")
        report.units = [burnin_boot.cancelled(u, "not started: the burn-in was interrupted") for u in job.units]
        report.interrupted = True
        raise Interrupted(report, 130)

    monkeypatch.setattr(burnin_run, "burn_in", stopped)
    result = runner.invoke(app, _cli(out))
    assert result.exit_code == 130
    doc = json.loads((out / ".burnin" / "report.json").read_text())
    assert doc["interrupted"] and doc["totals"]["cancelled"] == 2
    assert "interrupted: 2 units cancelled" in result.stdout
