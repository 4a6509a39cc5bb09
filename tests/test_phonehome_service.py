"""The box's phone home against the real provisioning service: `oemkit serve` as it is deployed (its own process,
SQLite, HTTPS with a certificate from the CA the unit config pins), a unit registered through the admin API, then
`python3 -m hypervisor_core.phonehome`'s entry point enrolling and delivering — and the service's own answers to a
lost answer, a replay and a wrong token."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
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
    assert phonehome.main([*argv, *args], post=post, sleep=box.slept.append) == 0
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


def test_a_sequence_the_service_has_seen_is_set_aside_and_skipped(
    tmp_path: Path, service: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    serial = "J30SVC03"
    service.register(serial)
    box = Box(tmp_path)
    cfg = seal(service.url, ca_pem=service.ca_pem, serial=serial)
    assert _cli(box, capsys, cfg) == "phone home: enrolled, delivered 1, spooled 0\n"
    box.layout.phonehome_seq.write_text("0\n")  # the state restored from a copy older than the last report
    assert _cli(box, capsys, cfg, "--init-failure", "x") == "phone home: delivered 0, rejected 1, spooled 0\n"
    assert box.layout.phonehome_seq.read_text() == "1\n"
    assert _cli(box, capsys, cfg, "--init-failure", "y") == "phone home: delivered 1, spooled 0\n"
    assert [r["seq"] for r in service.reports(serial)] == [2, 1]


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
