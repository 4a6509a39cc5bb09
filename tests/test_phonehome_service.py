"""The box's phone home against the real provisioning service: `oemkit serve` as it is deployed (its own process,
SQLite, HTTPS with a certificate from the CA the unit config pins), a unit registered through the admin API, then
`python3 -m hypervisor_core.phonehome`'s entry point enrolling and delivering — and the service's own answers to a
lost answer, a replay and a wrong token."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hypervisor_core import phonehome, phonehttp

from .conftest import REPO
from .test_phonehome import AGENT_REPORT, TOKEN, Box, seal
from .test_phonehome_http import make_ca, make_server_cert, pem

ADMIN_TOKEN = "phonehome-test-admin-" + "y" * 24


@dataclass
class Running:
    port: int
    ca_pem: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        context = ssl.create_default_context(cadata=self.ca_pem)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=context)
        try:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
            conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read() or b"null")
        finally:
            conn.close()

    def register(self, serial: str, token: str = TOKEN) -> None:
        body = {
            "serial": serial,
            "model": "dell-poweredge-r650",
            "site": "berlin",
            "profile": "retail-branch",
            "content_id": "sha256:" + "cd" * 32,
            "core_id": "0123456789abcdef0123",
            "pcr15_expected": "ab" * 32,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "branding": {"oem_name": "ACME Systems", "product": "Edge Box", "support_url": None},
        }
        status, doc = self.admin("POST", "/v1/units", body)
        assert status == 201, doc

    def reports(self, serial: str) -> list[dict[str, Any]]:
        status, doc = self.admin("GET", f"/v1/units/{serial}")
        assert status == 200, doc
        found: list[dict[str, Any]] = doc["reports"]
        return found


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("serve")
    ca = make_ca("provisioning test CA")
    make_server_cert(ca, ["127.0.0.1", "localhost"], folder / "tls")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(REPO / ".venv" / "bin" / "oemkit"), "serve", "--db", f"sqlite:///{folder / 'serve.db'}",
           "--port", str(port), "--tls-cert", str(folder / "tls" / "cert.pem"),
           "--tls-key", str(folder / "tls" / "key.pem"), "--enrol-rate", "10000/minute",
           "--report-rate", "10000/minute"]  # fmt: skip
    log = (folder / "serve.log").open("wb")
    env = {**os.environ, "OEMKIT_ADMIN_TOKEN": ADMIN_TOKEN}
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    running = Running(port, pem(ca[1]))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if running.admin("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"oemkit serve did not come up: {(folder / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def _cli(box: Box, capsys: pytest.CaptureFixture[str], cfg: bytes, *args: str, post: Any = phonehttp.post) -> str:
    unit = box.root / "unit.json"
    unit.write_bytes(cfg)
    argv = ["--root", str(box.root), "--config", str(unit), "--pubkey", str(REPO / "tests/data/keys/signing.pub")]
    assert phonehome.main([*argv, *args], post=post, sleep=box.sleep, clock=box.clock) == 0
    return capsys.readouterr().out


def test_a_registered_unit_enrols_and_its_reports_reach_the_fleet(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    serial = "J30SVC01"
    service.register(serial)
    box = Box(tmp_path)
    cfg = seal(service.url, ca_pem=service.ca_pem, serial=serial)
    assert _cli(box, capsys, cfg) == "phone home: enrolled, delivered 1, spooled 0\n"
    assert not box.layout.enrol_token.exists()
    assert [(r["status"], r["seq"]) for r in service.reports(serial)] == [("FAILED", 1)]
    assert _cli(box, capsys, cfg, "--init-failure", 'agent "died"') == "phone home: delivered 1, spooled 0\n"
    init, agent = service.reports(serial)  # newest first
    assert (agent["seq"], agent["origin"], agent["failed_step"]) == (1, "agent", "storage.pool")
    assert (agent["reason"], agent["made_at"], agent["pcr15"]) == (AGENT_REPORT["reason"], 1796000042.5, "ab" * 32)
    assert (init["seq"], init["origin"], init["fault"], init["reason"]) == (2, "init", "core", 'agent "died"')


def test_a_lost_answer_is_delivered_once(tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]) -> None:
    serial = "J30SVC02"
    service.register(serial)
    lost: list[str] = []

    def lossy(ep: phonehttp.Endpoint, path: str, body: bytes, headers: Any, timeout: float) -> phonehttp.Answer:
        answer = phonehttp.post(ep, path, body, headers, timeout)
        if path.endswith("/reports") and not lost:
            lost.append(path)  # stored by the service, the answer lost on the way back
            raise phonehttp.TransportError("the connection was closed without an answer")
        return answer

    box = Box(tmp_path)
    out = _cli(box, capsys, seal(service.url, ca_pem=service.ca_pem, serial=serial), post=lossy)
    assert out == "phone home: enrolled, delivered 1, spooled 0\n" and len(box.slept) == 1  # its 409 duplicate
    assert len(service.reports(serial)) == 1


def test_a_report_numbered_below_what_the_service_has_seen_catches_up_and_arrives(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state restored from a copy older than the last report: the service answers 409 replay (the id is new to
    it), the box moves its sequence past the service's, numbers and signs the report again and it is stored."""
    serial = "J30SVC03"
    service.register(serial)
    box = Box(tmp_path)
    cfg = seal(service.url, ca_pem=service.ca_pem, serial=serial)
    assert _cli(box, capsys, cfg) == "phone home: enrolled, delivered 1, spooled 0\n"
    box.layout.phonehome_seq.write_text("0\n")  # the state restored from a copy older than the last report
    assert _cli(box, capsys, cfg, "--init-failure", "x") == "phone home: delivered 1, spooled 0\n"
    assert box.layout.phonehome_seq.read_text() == "2\n"
    assert _cli(box, capsys, cfg, "--init-failure", "y") == "phone home: delivered 1, spooled 0\n"
    assert [(r["seq"], r["reason"]) for r in service.reports(serial)] == [
        (3, "y"),
        (2, "x"),
        (1, AGENT_REPORT["reason"]),
    ]


def test_a_report_spooled_twice_is_stored_once(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """report.json spooled again (its digest lost: a crash before it was kept): the same id, so 409 duplicate."""
    serial = "J30SVC06"
    service.register(serial)
    box = Box(tmp_path)
    cfg = seal(service.url, ca_pem=service.ca_pem, serial=serial)
    assert _cli(box, capsys, cfg) == "phone home: enrolled, delivered 1, spooled 0\n"
    box.layout.phonehome_last_report.unlink()
    assert _cli(box, capsys, cfg) == "phone home: delivered 1, spooled 0\n"  # sent as seq 2: a duplicate all the same
    assert [r["seq"] for r in service.reports(serial)] == [1]


def test_a_box_whose_unit_key_was_made_again_says_it_needs_re_registration(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """unit.key vanished after enrolment: the key made anew is not the one the service bound, and the box says so
    rather than collect a 401 at every boot."""
    serial = "J30SVC07"
    service.register(serial)
    box = Box(tmp_path)
    cfg = seal(service.url, ca_pem=service.ca_pem, serial=serial)
    assert _cli(box, capsys, cfg) == "phone home: enrolled, delivered 1, spooled 0\n"
    box.layout.unit_key.unlink()
    out = _cli(box, capsys, cfg, "--init-failure", "x")
    assert out == (f"phone home: delivered 0, spooled 1 (enrolled as {serial} with another key: needs re-registration "
                   "(no enrolment token on this box); the reports are kept)\n")  # fmt: skip
    assert len(service.reports(serial)) == 1


def test_a_box_given_another_serial_enrols_it(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """The box re-imaged with another unit's config and token: it enrols as that serial, its marker says so."""
    first, second = "J30SVC08", "J30SVC09"
    service.register(first)
    service.register(second, token="C" * 43)
    box = Box(tmp_path)
    assert _cli(box, capsys, seal(service.url, ca_pem=service.ca_pem, serial=first)).startswith("phone home: enrolled")
    box.layout.enrol_token.write_text("C" * 43 + "\n")  # the init copies the new config partition's token
    out = _cli(box, capsys, seal(service.url, ca_pem=service.ca_pem, serial=second), "--init-failure", "x")
    assert out == "phone home: enrolled, delivered 1, spooled 0\n"
    assert [r["reason"] for r in service.reports(second)] == ["x"]
    assert json.loads(box.layout.phonehome_enrolled.read_text())["serial"] == second


def test_a_report_the_service_refuses_for_another_key_says_so_and_stays_spooled(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    serial = "J30SVC10"
    service.register(serial)
    box = Box(tmp_path)
    cfg = seal(service.url, ca_pem=service.ca_pem, serial=serial)
    assert _cli(box, capsys, cfg) == "phone home: enrolled, delivered 1, spooled 0\n"
    box.layout.unit_key.write_bytes(bytes(range(32)))  # a key the service never bound, the marker made to match
    box.mark_enrolled(serial=serial)
    out = _cli(box, capsys, cfg, "--init-failure", "x")
    assert out == (f"phone home: delivered 0, spooled 1 (401 bad_signature: the service knows another key for {serial}"
                   ": the unit needs re-registration; the reports are kept)\n")  # fmt: skip
    assert len(box.entries()) == 1 and len(service.reports(serial)) == 1


# A full state filesystem, for real: a small tmpfs mounted over the box's state in a user and mount namespace, the
# state an earlier boot left copied in, then filled (disk images share the filesystem) up to `free` pages left.
FULL_DISK = r"""
import shutil, subprocess, sys
from pathlib import Path
state, staging, after, free = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
shutil.copytree(staging, state, dirs_exist_ok=True)
images = state / "images"
images.mkdir()
n = 0
try:
    while True:
        (images / str(n)).write_bytes(bytes(4096))
        n += 1
except OSError:
    pass
for i in range(1, free + 1):
    (images / str(n - i)).unlink()
from hypervisor_core import phonehome
try:
    code = phonehome.main(sys.argv[5:])
finally:
    shutil.rmtree(images)
    shutil.copytree(state, after)
sys.exit(code)
"""


def _on_a_full_disk(box: Box, cfg: bytes, free: int, *args: str) -> tuple[int, str, str, Path]:
    """Run phone home in its own process on the box's state, moved onto a full filesystem; the state it left."""
    unshare = ["unshare", "--user", "--map-root-user", "--mount"]
    probe = [*unshare, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(box.root.parent)]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces (or no tmpfs in them) here: a full filesystem cannot be made")
    unit = box.root / "unit.json"
    unit.write_bytes(cfg)
    staging, after = box.root.parent / "staging", box.root.parent / "after"
    shutil.move(box.layout.state, staging)
    box.layout.state.mkdir()
    argv = ["--root", str(box.root), "--config", str(unit), "--pubkey", str(REPO / "tests/data/keys/signing.pub")]
    cmd = [*unshare, sys.executable, "-c", FULL_DISK, str(box.layout.state), str(staging), str(after), str(free)]
    run = subprocess.run([*cmd, *argv, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    return run.returncode, run.stdout, run.stderr, after


def test_a_full_state_filesystem_still_enrols_and_delivers_this_boots_report_from_memory(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """First boot filled the disk (its report says so, at length): the report cannot be spooled, but the box enrols,
    delivers what an earlier boot spooled, and then this boot's report from memory."""
    serial = "J30SVC11"
    service.register(serial)
    box = Box(tmp_path / "box", report=None)
    box.seed()  # made by the earlier boot, which spooled its report offline
    box.add("READY")
    steps = [{"id": f"storage.image.{i:03d}-{'x' * 40}", "status": "ok", "seconds": 1.0} for i in range(199)]
    steps.append({"id": "storage.image.last", "status": "failed", "seconds": 9.0})
    report = {**AGENT_REPORT, "serial": serial, "reason": "No space left on device", "steps": steps}
    box.layout.report.write_text(json.dumps(report, indent=2))
    code, out, err, after = _on_a_full_disk(box, seal(service.url, ca_pem=service.ca_pem, serial=serial), 2)
    assert (code, out) == (0, "phone home: enrolled, delivered 2, spooled 0\n"), err
    assert f"cannot spool this boot's report: {box.layout.spool}: No space left on device" in err
    stored = service.reports(serial)
    assert [(r["seq"], r["status"], r["reason"]) for r in stored] == [
        (2, "FAILED", "No space left on device"),
        (1, "READY", AGENT_REPORT["reason"]),
    ]
    assert (after / "phonehome" / "enrolled").exists() and not (after / "enrol.token").exists()


def test_a_state_filesystem_with_no_room_for_a_sequence_number_says_so_and_keeps_the_key(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not even the sequence file can be written: nothing can be numbered, the line says why; never REFUSED."""
    serial = "J30SVC12"
    service.register(serial)
    box = Box(tmp_path / "box")
    cfg = seal(service.url, ca_pem=service.ca_pem, serial=serial)
    assert _cli(box, capsys, cfg) == "phone home: enrolled, delivered 1, spooled 0\n"
    box.add("READY")  # an earlier boot's, not sent
    box.layout.report.write_text(json.dumps({**AGENT_REPORT, "finished": 1796000100.0}))  # this boot's
    code, out, err, after = _on_a_full_disk(box, cfg, 0, "--init-failure", "x")
    why = f"cannot number the report: {box.layout.phonehome_seq}: No space left on device"
    assert (code, out) == (0, f"phone home: delivered 0, spooled 1, not spooled 2 ({why})\n"), err
    assert err.count(f"{box.layout.spool}: No space left on device") == 2 and "None" not in err
    assert len(service.reports(serial)) == 1 and (after / "phonehome" / "seq").read_text() == "1\n"


def test_a_wrong_token_or_an_unknown_serial_is_refused_and_the_token_kept(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    service.register("J30SVC04", token="B" * 43)
    for n, serial in enumerate(("J30SVC04", "J30SVC99")):
        box = Box(tmp_path / str(n))
        out = _cli(box, capsys, seal(service.url, ca_pem=service.ca_pem, serial=serial))
        assert out.startswith("phone home: delivered 0, spooled 1 (enrolment refused (403 bad_token): ")
        assert box.layout.enrol_token.read_text().strip() == TOKEN and box.slept == []


def test_a_damaged_report_json_still_reaches_the_service(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever report.json holds, the body is one the service's schema takes: a report is never lost to a 422."""
    serial = "J30SVC05"
    service.register(serial)
    steps = [{"id": f"step\n{i}\x85\ud800", "status": "odd", "seconds": -1 if i % 2 else 1e12} for i in range(1500)]
    damaged = {**AGENT_REPORT, "reason": "bad \x00 \ud800 bytes", "agent": "0.1\n", "content_id": "x\ty",
               "steps": steps, "finished": -5, "pcr15": "ZZ", "bank": 3, "fault": "nobody"}  # fmt: skip
    box = Box(tmp_path, report=damaged)
    out = _cli(box, capsys, seal(service.url, ca_pem=service.ca_pem, serial=serial))
    assert out == "phone home: enrolled, delivered 1, spooled 0\n", box.rejected()
    (stored,) = service.reports(serial)
    assert (stored["status"], stored["fault"], stored["failed_step"]) == ("FAILED", "core", "step?0??")
    assert len(stored["steps"]) == 200 and stored["steps"][1]["seconds"] == 0.0 and stored["agent"] == "0.1?"
