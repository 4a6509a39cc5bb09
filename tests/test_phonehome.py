"""Phone home, the box's side (hypervisor_core/phonehome.py and its unitkey, spool, phonereport, phonehttp): the unit
key, the spool, enrolment and delivery against a small real HTTP service on 127.0.0.1 that speaks the v1 contract
(docs/zero-touch.md) and can be told to fail in each way the box must survive. TLS pinning and the transport's own
bounds are in test_phonehome_http.py."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hypervisor_core import config, phonehome, phonehttp, phonereport, phonerun, spool, unitkey
from hypervisor_core.facts import probe
from hypervisor_core.layout import Layout
from hypervisor_core.match import Refusal, match
from oemkit.seal.keys import load_private_key, raw_public

from .bounded import alarm
from .conftest import REPO
from .firstboot_kit import KEY, PUB, R650_DUMP, facts_tree

SERIAL = "J30ABC12"
TOKEN = "A" * 20 + "b-_" + "0" * 20  # 43 base64url characters
UNIT = REPO / "tests" / "data" / "units" / "v1" / "retail-branch-J30ABC12.json"
CONTEXT = b"oemkit-report-v1\n"
AGENT_REPORT = {
    "status": "FAILED",
    "model": "dell-poweredge-r650",
    "serial": SERIAL,
    "reason": 'step storage.pool failed: "disk" gone',
    "fault": "step",
    "steps": [
        {"id": "host.hostname", "status": "ok", "seconds": 0.12, "detail": "set"},
        {"id": "storage.pool", "status": "failed", "seconds": 1.5, "detail": "gone"},
    ],
    "bank": "a",
    "pcr15": "ab" * 32,
    "agent": "0.1.0",
    "started": 1796000000.0,
    "finished": 1796000042.5,
    "content_id": "sha256:" + "cd" * 32,
    "resolved": {"uplinks": []},
}


# ------------------------------------------------------------------------------------------- the test service
Script = tuple[int, dict[str, Any], dict[str, str]] | str  # a canned answer, or "drop" / "store-drop"


class Service:
    """The contract's two box endpoints, in memory, on a real HTTP server in a thread. `script` answers come first:
    (status, doc, headers), "drop" (close without an answer) or "store-drop" (act, then close without one)."""

    def __init__(self, tls: Any = None) -> None:
        self.tokens: dict[str, str | None] = {SERIAL: TOKEN}
        self.keys: dict[str, bytes] = {}
        self.ids: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.stored: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.script: list[Script] = []
        self.on_request: Callable[[str, bytes], None] | None = None
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                service.requests.append((self.path, dict(self.headers), body))
                if service.on_request:
                    service.on_request(self.path, body)
                step = service.script.pop(0) if service.script else None
                if step == "drop":
                    self.close_connection = True
                    return
                status, doc, headers = (
                    step if isinstance(step, tuple) else service.answer(self.path, self.headers, body)
                )
                if step == "store-drop":
                    self.close_connection = True
                    return
                raw = json.dumps(doc).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = path.strip("/").split("/")  # v1 units <serial> enrol|reports
        serial, what = parts[2], parts[3]
        if what == "enrol":
            doc = json.loads(body)
            key = base64.b64decode(doc["public_key"])
            if serial in self.keys and self.keys[serial] == key:
                return 200, {"serial": serial, "enrolled": True}, {}  # the box retrying after a lost answer
            if self.tokens.get(serial) != doc["token"]:
                return 403, {"detail": "bad token", "code": "bad_token"}, {}
            if serial in self.keys:
                return 409, {"detail": "already enrolled", "code": "already_enrolled"}, {}
            self.keys[serial], self.tokens[serial] = key, None
            return 200, {"serial": serial, "enrolled": True}, {}
        if serial not in self.keys:
            return 403, {"detail": "unit not enrolled", "code": "not_enrolled"}, {}
        signature = headers.get("X-Oemkit-Signature", "").removeprefix("ed25519=")
        try:
            Ed25519PublicKey.from_public_bytes(self.keys[serial]).verify(base64.b64decode(signature), CONTEXT + body)
        except (InvalidSignature, ValueError):
            return 401, {"detail": "bad signature", "code": "bad_signature"}, {}
        doc = json.loads(body)
        if doc["id"] in self.ids:
            return 409, {"detail": "duplicate", "code": "duplicate"}, {}
        if doc["seq"] <= self.last_seq.get(serial, 0):
            return 409, {"detail": "replay", "code": "replay", "last_seq": self.last_seq[serial]}, {}
        self.ids.add(doc["id"])
        self.last_seq[serial] = doc["seq"]
        self.stored.append(doc)
        return 201, {"stored": True, "seq": doc["seq"]}, {}

    def reports(self) -> list[tuple[str, dict[str, str], bytes]]:
        return [r for r in self.requests if r[0].endswith("/reports")]


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    yield s
    s.close()


# ----------------------------------------------------------------------------------------------------- helpers
def seal(
    url: str, ca_pem: str | None = None, mismatch: str = "report", *, sign: bool = True, serial: str = SERIAL
) -> bytes:
    """The test unit config sealed again with phone_home at `url` (the test factory key)."""
    doc = json.loads(UNIT.read_text())
    doc["serial"] = serial
    doc["phone_home"] = {"url": url, "interval_seconds": 300, "ca_pem": ca_pem}
    doc["firstboot"]["on_hardware_mismatch"] = mismatch
    for k in config.signing.SEAL_KEYS:
        doc.pop(k, None)
    key = load_private_key(KEY)
    doc["content_id"] = config.content_id(doc)
    doc["signed_by"] = config.key_id(raw_public(key))
    doc["signature"] = "ed25519:" + base64.b64encode(key.sign(config.signed_bytes(doc))).decode()
    if not sign:
        doc["signature"] = "ed25519:" + base64.b64encode(bytes(64)).decode()
    return json.dumps(doc, indent=2).encode()


class Box:
    """A target root with the state a box has after its agent ran."""

    def __init__(self, root: Path, token: bool = True, report: dict[str, Any] | None = AGENT_REPORT) -> None:
        self.root, self.layout = root, Layout(root)
        self.layout.state.mkdir(parents=True)
        if token:
            self.layout.enrol_token.write_text(TOKEN + "\n")
        if report is not None:
            self.layout.report.write_text(json.dumps(report, indent=2))
        self.said: list[str] = []
        self.slept: list[float] = []
        self.now = 0.0  # the runs' clock: it moves only when they sleep, so a retry loop cannot spin in real time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def spool(self) -> spool.Spool:
        return spool.Spool(self.layout.spool, self.layout.spool_rejected, self.layout.phonehome_seq, self.said.append)

    def seed(self) -> bytes:
        return unitkey.load_or_create(self.layout.unit_key)

    def phonehome(self, url: str, **kw: Any) -> phonerun.PhoneHome:
        kw.setdefault("sleep", self.sleep)
        kw.setdefault("clock", self.clock)
        ep = phonehttp.endpoint(url, kw.pop("ca_pem", None))
        return phonerun.PhoneHome(self.layout, SERIAL, ep, self.seed(), self.spool(), say=self.said.append, **kw)

    def mark_enrolled(self, serial: str = SERIAL, seed: bytes | None = None) -> None:
        """The marker an enrolment of `serial` with `seed` (this box's unit key by default) leaves."""
        marker = {"serial": serial, "public_key": unitkey.public_b64(seed or self.seed())}
        self.layout.phonehome.mkdir(exist_ok=True)
        self.layout.phonehome_enrolled.write_text(json.dumps(marker) + "\n")

    def run(self, url: str, **kw: Any) -> phonerun.Outcome:
        return self.phonehome(url, **kw).run()

    def add(self, status: str = "FAILED", n: int = 1) -> list[spool.Entry]:
        record = phonereport.report_record({**AGENT_REPORT, "status": status}, None)
        return [self.spool().add(record, 1796000000.0 + i) for i in range(n)]

    def entries(self) -> list[spool.Entry]:
        return self.spool().entries()

    def rejected(self) -> dict[str, str]:
        folder = self.layout.spool_rejected
        return {p.name[: -len(".reason")]: p.read_text().strip() for p in folder.glob("*.reason")}

    def cli(self, capsys: pytest.CaptureFixture[str], cfg: bytes, *args: str) -> tuple[int, str, str]:
        unit = self.root / "unit-under-test.json"
        unit.write_bytes(cfg)
        argv = ["--root", str(self.root), "--config", str(unit), "--pubkey", str(PUB), *args]
        code = phonehome.main(argv, sleep=self.sleep, clock=self.clock)
        out, err = capsys.readouterr()
        return code, out, err


def verifies(public: bytes, body: bytes, signature_b64: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(signature_b64), CONTEXT + body)
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------------------------------------ the unit key
def test_the_unit_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = Layout(tmp_path).unit_key
    seed = unitkey.load_or_create(path)
    assert len(seed) == 32 and path.read_bytes() == seed
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert unitkey.load_or_create(path) == seed  # never made again
    path.chmod(0o644)
    assert unitkey.load_or_create(path) == seed and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("kind", ["link", "fifo", "folder", "short", "long", "empty"])
def test_a_unit_key_that_is_not_32_bytes_in_a_regular_file_is_refused_never_replaced(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "unit.key"
    target = tmp_path / "elsewhere"
    target.write_bytes(bytes(32))
    {
        "link": lambda: path.symlink_to(target),
        "fifo": lambda: os.mkfifo(path),
        "folder": lambda: path.mkdir(),
        "short": lambda: path.write_bytes(b"x" * 31),
        "long": lambda: path.write_bytes(b"x" * 33),
        "empty": lambda: path.write_bytes(b""),
    }[kind]()
    before = os.lstat(path)
    with alarm(5), pytest.raises(unitkey.UnitKeyError) as exc:
        unitkey.load_or_create(path)
    assert "refused" in str(exc.value) and str(path) in str(exc.value)
    after = os.lstat(path)
    assert (after.st_ino, after.st_size, after.st_mode) == (before.st_ino, before.st_size, before.st_mode)


def test_a_report_signature_is_ed25519_over_the_context_and_the_body(tmp_path: Path) -> None:
    seed = unitkey.load_or_create(tmp_path / "unit.key")
    public = base64.b64decode(unitkey.public_b64(seed))
    body = b'{"seq":1}'
    signature = unitkey.sign_report(seed, body)
    assert verifies(public, body, signature)
    assert not verifies(public, body + b" ", signature)
    assert unitkey.verify_report(public, body, signature) and not unitkey.verify_report(public, body, "!!")


# -------------------------------------------------------------------------------------------------- the report
def test_the_report_body_is_the_contracts_from_the_agents_report(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text('NAME="oemkit core"\nOEMKIT_CORE_ID="c0ffee12"\n')
    core_id = phonereport.read_core_id(tmp_path)
    record = phonereport.report_record(AGENT_REPORT, core_id)
    assert set(record) == set(phonereport.REPORT_KEYS)
    assert record["failed_step"] == "storage.pool" and record["core_id"] == "c0ffee12" and record["origin"] == "agent"
    assert record["steps"] == [
        {"id": "host.hostname", "status": "ok", "seconds": 0.12},
        {"id": "storage.pool", "status": "failed", "seconds": 1.5},
    ]
    assert (record["bank"], record["pcr15"], record["fault"]) == ("a", "ab" * 32, "step")
    assert phonereport.read_core_id(tmp_path / "nowhere") is None


def test_the_report_stays_within_the_contracts_bound(tmp_path: Path) -> None:
    steps = [{"id": "ü" * 500, "status": "ok", "seconds": float("nan")} for _ in range(1000)]
    record = phonereport.report_record({**AGENT_REPORT, "reason": "x" * 10_000, "steps": steps, "bank": "z"}, None)
    assert len(record["reason"]) == phonereport.REASON_MAX and record["bank"] is None
    assert len(json.dumps(record)) < spool.MAX_BODY_BYTES - 1000 and 0 < len(record["steps"]) <= 200
    assert record["steps"][0]["seconds"] == 0.0


def test_the_reports_one_line_fields_are_made_storable() -> None:
    """A damaged report.json never costs the report a 422: the service stores one-line fields as they are."""
    steps = [{"id": "a\nb\x85\ud800", "status": "ok", "seconds": -3}, {"id": "", "status": "ok", "seconds": 1e12}]
    record = phonereport.report_record({**AGENT_REPORT, "steps": steps, "agent": "x\ty", "content_id": 7}, None)
    assert [s["id"] for s in record["steps"]] == ["a?b??", "?"] and [s["seconds"] for s in record["steps"]] == [
        0.0,
        1e7,
    ]
    assert (record["agent"], record["content_id"], record["failed_step"]) == ("x?y", None, None)


def test_a_wrong_box_is_what_match_refuses_as_one(tmp_path: Path) -> None:
    """The refusal prefixes phonereport.WRONG_BOX keys on are match.py's own."""
    cfg = config.load(seal("http://127.0.0.1:9"), config.read_public_key(PUB.read_text()))
    with pytest.raises(Refusal) as exc:
        match(cfg, probe(facts_tree(R650_DUMP, "J30ZZZ99", tmp_path / "box")))
    assert phonereport.wrong_box({"fault": "refusal", "reason": str(exc.value)}) == str(exc.value)
    assert phonereport.wrong_box({"fault": "refusal", "reason": "uplinks: 2 wanted"}) is None


# ---------------------------------------------------------------------------------------------------- the spool
def test_entries_come_oldest_first_even_when_the_clock_goes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Box(tmp_path)
    first = box.add("READY")[0]
    monkeypatch.setattr(spool.time, "time_ns", lambda: 1)  # a box whose clock was reset
    second = box.add("FAILED")[0]
    assert [e.id for e in box.entries()] == [first.id, second.id]
    assert len(first.id) == 32 and int(first.id, 16) >= 0 and first.id != second.id
    assert first.seq is None and first.body is None  # spooled unsigned


def test_the_spool_is_bounded_dropping_the_oldest_that_did_not_fail_first(tmp_path: Path) -> None:
    box = Box(tmp_path)
    failed = box.add("FAILED", 10)
    ready = box.add("READY", spool.MAX_ENTRIES - 10)
    newest = box.add("READY", 5)
    kept = box.entries()
    assert len(kept) == spool.MAX_ENTRIES
    assert {e.id for e in failed} <= {e.id for e in kept}  # every failure kept
    assert {e.id for e in ready[:5]}.isdisjoint({e.id for e in kept}) and {e.id for e in newest} <= {e.id for e in kept}
    assert sum("spool full" in s for s in box.said) == 5


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("not-json", "not JSON"),
        ("too-big", "the limit is"),
        ("link", "symbolic link"),
        ("fifo", "FIFO"),
        ("folder", "folder"),
        ("bad-name", "name"),
        ("other-id", "id"),
        ("deep", "nested too deep"),
        ("half-signed", "seq"),
    ],
)
def test_a_hostile_spool_entry_is_set_aside_with_a_reason(tmp_path: Path, kind: str, reason: str) -> None:
    box = Box(tmp_path)
    good = box.add()[0]
    name = f"{1:020d}-{'e' * 32}.json"
    path = box.layout.spool / (name if kind != "bad-name" else "evil.json")
    valid = json.loads(good.to_json()) | {"id": "e" * 32}
    {
        "not-json": lambda: path.write_bytes(b"\xff{not json"),
        "too-big": lambda: path.write_bytes(b" " * (spool.MAX_ENTRY_BYTES + 1)),
        "link": lambda: path.symlink_to("/etc/passwd"),
        "fifo": lambda: os.mkfifo(path),
        "folder": lambda: path.mkdir(),
        "bad-name": lambda: path.write_text("{}"),
        "other-id": lambda: path.write_text(good.to_json()),
        "deep": lambda: path.write_text("[" * 100_000 + "]" * 100_000),
        "half-signed": lambda: path.write_text(json.dumps(valid | {"body": "{}"})),
    }[kind]()
    with alarm(10):
        entries = box.entries()
    assert [e.id for e in entries] == [good.id]
    assert reason in box.rejected()[path.name]
    assert os.path.lexists(box.layout.spool_rejected / path.name) and not os.path.lexists(path)
    assert any(path.name in s and "set aside" in s for s in box.said)


def test_a_leftover_temporary_file_is_removed_and_a_linked_rejected_folder_never_written_through(
    tmp_path: Path,
) -> None:
    box = Box(tmp_path)
    box.add()
    (box.layout.spool / ".x.json.1234.tmp").write_text("half")
    outside = tmp_path / "outside"
    outside.mkdir()
    box.layout.spool_rejected.symlink_to(outside)
    (box.layout.spool / "evil").write_text("x")
    assert len(box.entries()) == 1
    assert sorted(p.name for p in box.layout.spool.iterdir()) == sorted([box.entries()[0].name, "rejected"])
    assert list(outside.iterdir()) == []


def test_the_sequence_is_kept_and_refused_when_unreadable(tmp_path: Path) -> None:
    s = Box(tmp_path).spool()
    assert [s.next_seq(), s.next_seq(), s.next_seq()] == [1, 2, 3]
    assert s.seq_path.read_text() == "3\n"
    s.seq_path.write_text("three")
    with pytest.raises(spool.SpoolError, match="no sequence number"):
        s.next_seq()


# ---------------------------------------------------------------------------------------------------- enrolment
def test_enrolment_binds_the_unit_key_then_reports_are_delivered_signed(tmp_path: Path, service: Service) -> None:
    box = Box(tmp_path)
    box.add("FAILED")
    box.add("READY")
    outcome = box.run(service.url)
    assert outcome.line() == "phone home: enrolled, delivered 2, spooled 0"
    path, _, body = service.requests[0]
    assert path == f"/v1/units/{SERIAL}/enrol"
    public = unitkey.public_key(box.seed())
    assert json.loads(body) == {"token": TOKEN, "public_key": base64.b64encode(public).decode()}
    assert box.layout.phonehome_enrolled.exists() and not box.layout.enrol_token.exists()
    assert [d["status"] for d in service.stored] == ["FAILED", "READY"] and [d["seq"] for d in service.stored] == [1, 2]
    for _, headers, raw in service.reports():
        assert verifies(public, raw, headers["X-Oemkit-Signature"].removeprefix("ed25519="))
        doc = json.loads(raw)
        assert set(doc) == {*phonereport.REPORT_KEYS, "serial", "seq", "id", "made_at"} and doc["serial"] == SERIAL
    assert all(TOKEN not in s for s in box.said)  # the token is never logged
    assert box.run(service.url).line() == "phone home: delivered 0, spooled 0"
    assert len(service.requests) == 3  # enrolled: no second enrolment


@pytest.mark.parametrize(("status", "code", "says"), [(403, "bad_token", "re-register"), (409, "already_enrolled", "")])
def test_a_refused_enrolment_keeps_the_token_and_the_reports(
    tmp_path: Path, service: Service, status: int, code: str, says: str
) -> None:
    box = Box(tmp_path)
    box.add()
    service.script = [(status, {"detail": "no", "code": code}, {})]
    line = box.run(service.url).line()
    assert line.startswith(f"phone home: delivered 0, spooled 1 (enrolment refused ({status} {code}): ")
    assert says in line and "the token is kept" in line
    assert box.layout.enrol_token.read_text().strip() == TOKEN and not box.layout.phonehome_enrolled.exists()
    assert len(service.requests) == 1 and box.slept == []  # a refusal is not retried


def test_without_a_token_an_unenrolled_box_keeps_its_reports(tmp_path: Path, service: Service) -> None:
    box = Box(tmp_path, token=False)
    box.add()
    line = box.run(service.url).line()
    assert line == "phone home: delivered 0, spooled 1 (not enrolled: no enrolment token on this box)"
    assert service.requests == []


def test_an_enrolment_whose_answer_was_lost_is_retried_and_counts(tmp_path: Path, service: Service) -> None:
    box = Box(tmp_path)
    box.add()
    service.script = ["store-drop"]
    assert box.run(service.url).line() == "phone home: enrolled, delivered 1, spooled 0"
    assert len(box.slept) == 1 and 1.0 <= box.slept[0] <= 1.25


def test_a_token_left_beside_the_enrolled_marker_is_removed(tmp_path: Path, service: Service) -> None:
    box = Box(tmp_path)
    box.mark_enrolled()
    box.run(service.url)
    assert not box.layout.enrol_token.exists() and service.requests == []


@pytest.mark.parametrize("marker", ["other-key", "other-serial", "plain-text", "folder"])
def test_a_marker_that_is_not_for_this_serial_and_key_means_not_enrolled(
    tmp_path: Path, service: Service, marker: str
) -> None:
    """unit.key vanished (a new key was made), the config names another serial, or the marker is not ours: the box
    enrols again with the token it holds, and without one says it needs re-registration, its reports kept."""
    box = Box(tmp_path, token=False)
    box.add()
    {
        "other-key": lambda: box.mark_enrolled(seed=bytes(32)),
        "other-serial": lambda: box.mark_enrolled(serial="J30OLD99"),
        "plain-text": lambda: box.layout.phonehome_enrolled.write_text("enrolled\n"),
        "folder": lambda: box.layout.phonehome_enrolled.mkdir(),
    }[marker]()
    why = {
        "other-key": f"enrolled as {SERIAL} with another key",
        "other-serial": f"enrolled as J30OLD99, not as {SERIAL}",
        "plain-text": f"{box.layout.phonehome_enrolled} names no serial and unit key",
        "folder": f"{box.layout.phonehome_enrolled} names no serial and unit key",
    }[marker]
    line = box.run(service.url).line()
    needs = "needs re-registration (no enrolment token on this box); the reports are kept"
    assert line == f"phone home: delivered 0, spooled 1 ({why}: {needs})"
    assert service.requests == []
    if marker == "folder":
        return
    box.layout.enrol_token.write_text(TOKEN + "\n")  # the new serial's token, or the old one copied again
    assert box.run(service.url).line() == "phone home: enrolled, delivered 1, spooled 0"
    assert json.loads(box.layout.phonehome_enrolled.read_text()) == {
        "serial": SERIAL,
        "public_key": unitkey.public_b64(box.seed()),
    }
    assert not box.layout.enrol_token.exists() and any(why in said for said in box.said)


# ----------------------------------------------------------------------------------------------------- delivery
def _enrolled(tmp_path: Path, service: Service, n: int = 1) -> Box:
    box = Box(tmp_path)
    service.keys[SERIAL] = unitkey.public_key(box.seed())
    box.mark_enrolled()
    box.add(n=n)
    return box


def _until_the_deadline(box: Box, why: str) -> str:
    return f"{why}; {len(box.slept) + 1} tries until the deadline"


def test_the_sequence_is_written_before_the_report_is_sent(tmp_path: Path, service: Service) -> None:
    box = _enrolled(tmp_path, service, 3)
    seen: list[tuple[int, int]] = []
    service.on_request = lambda path, body: seen.append(
        (json.loads(body)["seq"], int(box.layout.phonehome_seq.read_text()))
    )
    box.run(service.url)
    assert seen == [(1, 1), (2, 2), (3, 3)]


def test_a_retry_sends_the_same_bytes_in_this_boot_and_the_next(tmp_path: Path, service: Service) -> None:
    box = _enrolled(tmp_path, service)
    service.script = ["drop", "store-drop"] + [(503, {}, {})] * 30  # this boot: never a definite answer
    line = box.run(service.url).line()
    assert line == f"phone home: delivered 0, spooled 1 ({_until_the_deadline(box, 'HTTP 503 from the service')})"
    tries, service.script = len(service.reports()), []
    entry = box.entries()[0]
    assert entry.seq == 1 and entry.body is not None  # numbered and signed at its first send, kept so
    assert box.run(service.url).line() == "phone home: delivered 1, spooled 0"  # next boot: 409 duplicate
    bodies = {(raw, headers["X-Oemkit-Signature"]) for _, headers, raw in service.reports()}
    assert (
        len(service.reports()) == tries + 1
        and len(bodies) == 1
        and bodies == {(entry.body.encode(), f"ed25519={entry.signature}")}
    )
    assert len(service.stored) == 1 and int(box.layout.phonehome_seq.read_text()) == 1


ANOTHER_KEY = f"the service knows another key for {SERIAL}: the unit needs re-registration; the reports are kept"


@pytest.mark.parametrize(
    ("answer", "line", "rejected"),
    [
        ((201, {"stored": True}, {}), "phone home: delivered 1, spooled 0", None),
        ((409, {"code": "duplicate", "detail": "seen"}, {}), "phone home: delivered 1, spooled 0", None),
        ((409, {"code": "replay", "detail": "old", "last_seq": 7}, {}), "phone home: delivered 1, spooled 0", None),
        ((422, {"code": "bad_report", "detail": "serial is not the path's"}, {}),
         "phone home: delivered 0, rejected 1, spooled 0", "422 bad_report: serial is not the path's"),
        ((413, {}, {}), "phone home: delivered 0, rejected 1, spooled 0", "413: HTTP 413"),
        ((401, {"code": "bad_signature", "detail": "bad signature"}, {}),
         f"phone home: delivered 0, spooled 1 (401 bad_signature: {ANOTHER_KEY})", None),
        ((403, {"code": "not_enrolled", "detail": "unit not enrolled"}, {}),
         "phone home: delivered 0, spooled 1 (403 not_enrolled: unit not enrolled)", None),
        ((302, {}, {"Location": "http://elsewhere/"}),
         "phone home: delivered 0, spooled 1 (unexpected answer HTTP 302)", None),
    ],
)  # fmt: skip
def test_each_answer_to_a_report(
    tmp_path: Path, service: Service, answer: Script, line: str, rejected: str | None
) -> None:
    box = _enrolled(tmp_path, service)
    name = box.entries()[0].name
    service.script = [answer]
    assert box.run(service.url).line() == line
    assert box.rejected() == ({name: rejected} if rejected else {})
    assert box.slept == []


def test_a_replayed_report_is_numbered_above_the_services_signed_again_and_delivered(
    tmp_path: Path, service: Service
) -> None:
    """409 replay: the id is new to the service, its number is not (the state was restored from an older copy)."""
    box = _enrolled(tmp_path, service)
    entry = box.entries()[0]
    service.script = [(409, {"code": "replay", "detail": "old", "last_seq": 7}, {})]
    on_disk: list[int] = []  # the entry's number when each request arrives: the new one kept before it is sent
    service.on_request = lambda path, body: on_disk.append(json.loads(entry.path.read_text())["seq"])
    assert box.run(service.url).line() == "phone home: delivered 1, spooled 0"
    (_, _, first), (_, headers, second) = service.reports()
    assert (json.loads(first)["seq"], json.loads(second)["seq"]) == (1, 8) and on_disk == [1, 8]
    assert json.loads(first)["id"] == json.loads(second)["id"] == entry.id  # the same report, numbered again
    assert verifies(unitkey.public_key(box.seed()), second, headers["X-Oemkit-Signature"].removeprefix("ed25519="))
    assert box.layout.phonehome_seq.read_text() == "8\n" and [d["seq"] for d in service.stored] == [8]


def test_a_report_replayed_again_after_catching_up_is_set_aside(tmp_path: Path, service: Service) -> None:
    box = _enrolled(tmp_path, service, 2)
    name = box.entries()[0].name
    service.script = [(409, {"code": "replay", "detail": "old", "last_seq": n}, {}) for n in (7, 9)]
    assert box.run(service.url).line() == "phone home: delivered 1, rejected 1, spooled 0"
    assert box.rejected() == {name: "replay: the service has seen sequence 9; this report is 8"}
    assert [d["seq"] for d in service.stored] == [9] and len(service.reports()) == 3  # once again, not more


def test_delivery_stops_at_the_first_report_it_cannot_deliver_keeping_the_order(
    tmp_path: Path, service: Service
) -> None:
    box = _enrolled(tmp_path, service, 3)
    service.script = [(201, {}, {})] + ["drop"] * 30
    line = box.run(service.url).line()
    closed = _until_the_deadline(box, "the connection was closed without an answer")
    assert line == f"phone home: delivered 1, spooled 2 ({closed})"
    service.script = []
    left = box.entries()
    assert left[0].seq == 2 and left[1].seq is None  # the third was never numbered: it waits behind the second
    assert box.run(service.url).line() == "phone home: delivered 2, spooled 0"
    assert [d["seq"] for d in service.stored] == [2, 3]


def test_a_report_whose_entry_was_tampered_with_is_set_aside_unsent(tmp_path: Path, service: Service) -> None:
    box = _enrolled(tmp_path, service)
    service.script = ["drop"] * 30
    box.run(service.url)
    service.script = []
    entry = box.entries()[0]
    assert entry.body is not None
    entry.body = entry.body.replace('"FAILED"', '"READY"')
    box.spool().save(entry)
    sent = len(service.requests)
    assert box.run(service.url).line() == "phone home: delivered 0, rejected 1, spooled 0"
    assert "does not verify" in box.rejected()[entry.name] and len(service.requests) == sent


def test_backoff_doubles_to_8_seconds_with_jitter_and_goes_on_until_the_deadline(
    tmp_path: Path, service: Service
) -> None:
    box = _enrolled(tmp_path, service)
    service.script = [(500, {}, {})] * 30
    line = box.run(service.url).line()
    assert line == f"phone home: delivered 0, spooled 1 ({_until_the_deadline(box, 'HTTP 500 from the service')})"
    assert len(service.reports()) == len(box.slept) + 1 and len(service.script) > 0
    bases = [1, 2, 4] + [8] * (len(box.slept) - 3)
    assert all(base <= w <= base * 1.25 for base, w in zip(bases[:-1], box.slept[:-1], strict=True))
    assert 0 < box.slept[-1] <= 10  # the last wait shortened: the last try 1 s before the deadline
    assert box.now == pytest.approx(phonerun.DEADLINE_S - phonerun.MIN_TRY_S)


def test_the_deadline_bounds_the_retries(tmp_path: Path, service: Service) -> None:
    box = _enrolled(tmp_path, service)
    service.script = [(503, {}, {})] * 10
    outcome = box.run(service.url, deadline_s=5)
    assert outcome.why == _until_the_deadline(box, "HTTP 503 from the service") and len(service.reports()) == 4
    assert box.now == pytest.approx(4) and box.slept[-1] == pytest.approx(4 - sum(box.slept[:-1]))


def test_a_service_reachable_only_after_spanning_tree_opened_the_port_still_gets_the_report(
    tmp_path: Path, service: Service
) -> None:
    """The init raises the link and DHCP just before phone home; classic spanning tree holds a port ~30 s."""
    box = _enrolled(tmp_path, service)
    service.on_request = lambda path, body: service.script.append("drop") if box.now < 30 else None
    assert box.run(service.url).line() == "phone home: delivered 1, spooled 0"
    assert 30 <= box.now < 45 and len(service.reports()) == len(box.slept) + 1


def test_429_waits_what_retry_after_says_within_the_deadline(tmp_path: Path, service: Service) -> None:
    box = _enrolled(tmp_path, service)
    service.script = [(429, {"detail": "slow down"}, {"Retry-After": "3"})]
    assert box.run(service.url).line() == "phone home: delivered 1, spooled 0"
    assert box.slept == [3.0]
    service.script = [(429, {"detail": "slow down"}, {"Retry-After": "3600"})]
    box.add()
    line = box.run(service.url).line()
    assert (
        line == "phone home: delivered 0, spooled 1 (rate limited (429); retrying after 3600 s would pass the deadline)"
    )
    assert box.slept == [3.0] and len(service.reports()) == 3  # this boot stops there


def test_connection_refused_is_retried_until_the_deadline_and_leaves_the_reports_spooled(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.mark_enrolled()
    box.add(n=2)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # a port nobody listens on
    line = box.run(f"http://127.0.0.1:{port}").line()
    assert line == f"phone home: delivered 0, spooled 2 ({_until_the_deadline(box, 'connection refused')})"
    assert len(box.slept) >= 9 and box.now == pytest.approx(phonerun.DEADLINE_S - phonerun.MIN_TRY_S)


# ---------------------------------------------------------------------------------------------------------- CLI
def test_the_cli_spools_this_boots_report_once_enrols_and_delivers(
    tmp_path: Path, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    box = Box(tmp_path)
    cfg = seal(service.url)
    assert box.cli(capsys, cfg)[:2] == (0, "phone home: enrolled, delivered 1, spooled 0\n")
    (doc,) = service.stored
    assert doc["made_at"] == AGENT_REPORT["finished"] and doc["failed_step"] == "storage.pool"
    assert doc["content_id"] == AGENT_REPORT["content_id"] and doc["reason"] == AGENT_REPORT["reason"]
    assert box.cli(capsys, cfg)[:2] == (0, "phone home: delivered 0, spooled 0\n")  # the next boot: not again
    report = json.loads(box.layout.report.read_text())
    box.layout.report.write_text(json.dumps({**report, "status": "READY", "finished": 1796000100.0}))  # --force run
    assert box.cli(capsys, cfg)[:2] == (0, "phone home: delivered 1, spooled 0\n")
    assert [d["status"] for d in service.stored] == ["FAILED", "READY"]


def test_the_cli_records_an_init_failure_with_any_reason(
    tmp_path: Path, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    box = Box(tmp_path, report=None)
    reason = 'the agent stopped without a status: "x" \\ \n $(reboot) `id` ü'
    code, out, _ = box.cli(capsys, seal(service.url), "--init-failure", reason)
    assert (code, out) == (0, "phone home: enrolled, delivered 1, spooled 0\n")
    (doc,) = service.stored
    assert (doc["status"], doc["fault"], doc["origin"], doc["reason"], doc["steps"]) == (
        "FAILED",
        "core",
        "init",
        reason,
        [],
    )


def test_a_report_spooled_again_after_a_crash_is_one_entry_and_one_report(
    tmp_path: Path, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash after report.json was spooled and before its digest was kept: the next run spools it again. Its id
    comes from its digest, so the spool holds it once (and the service would answer 409 duplicate)."""
    box = Box(tmp_path)
    report = phonereport.read_agent_report(box.layout, None, box.said.append)
    assert report is not None
    first = box.spool().add(report.record, report.made_at, report.id)  # what the crashed run left
    assert box.cli(capsys, seal(service.url), "--spool-only")[:2] == (
        0,
        "phone home: spooled 1 (not sent: --spool-only)\n",
    )
    assert [e.id for e in box.entries()] == [first.id] and len(first.id) == 32
    assert box.cli(capsys, seal(service.url))[:2] == (0, "phone home: enrolled, delivered 1, spooled 0\n")
    assert [d["id"] for d in service.stored] == [first.id]


def test_spool_only_spools_this_boots_records_and_sends_nothing(
    tmp_path: Path, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """The init spools its failure record so before it reboots into the other bank: no network, no key made."""
    box = Box(tmp_path)
    code, out, _ = box.cli(capsys, seal(service.url), "--init-failure", "core on trial (b) failed", "--spool-only")
    assert (code, out) == (0, "phone home: spooled 2 (not sent: --spool-only)\n")
    assert service.requests == [] and not box.layout.unit_key.exists() and box.slept == []
    assert box.cli(capsys, seal(service.url))[:2] == (0, "phone home: enrolled, delivered 2, spooled 0\n")
    assert [(d["origin"], d["reason"]) for d in service.stored] == [
        ("agent", AGENT_REPORT["reason"]),
        ("init", "core on trial (b) failed"),
    ]


def test_the_cli_keeps_reports_when_the_service_is_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box(tmp_path)
    code, out, _ = box.cli(capsys, seal("http://127.0.0.1:9"), "--deadline", "5")
    assert (code, out) == (0, "phone home: delivered 0, spooled 1 (enrolment: connection refused; 4 tries until the "
                              "deadline)\n")  # fmt: skip
    assert box.layout.enrol_token.exists() and len(box.entries()) == 1


def test_the_cli_without_phone_home_says_so_and_makes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = Box(tmp_path)
    doc = json.loads(UNIT.read_text())
    doc["phone_home"] = None
    for k in config.signing.SEAL_KEYS:
        doc.pop(k)
    key = load_private_key(KEY)
    doc |= {"content_id": config.content_id(doc), "signed_by": config.key_id(raw_public(key))}
    doc["signature"] = "ed25519:" + base64.b64encode(key.sign(config.signed_bytes(doc))).decode()
    assert box.cli(capsys, json.dumps(doc).encode())[:2] == (0, "phone home: not configured\n")
    assert not box.layout.unit_key.exists() and not box.layout.phonehome.exists()


@pytest.mark.parametrize(
    ("cfg", "says"),
    [
        (lambda url: seal(url, sign=False), "REFUSED: unit config refused: unit config signature does not verify"),
        (lambda url: seal(url.replace("http:", "https:")), "is https but the unit config pins no CA"),
        (lambda url: seal(url, ca_pem="-----BEGIN CERTIFICATE-----\n"), "is plain http but the unit config pins a CA"),
        (lambda url: seal("ftp://example.com/"), "neither http:// nor https://"),
        (lambda url: seal("http://user:pw@example.com/"), "credentials"),
    ],
)
def test_the_cli_never_talks_on_an_unusable_config(
    tmp_path: Path, service: Service, capsys: pytest.CaptureFixture[str], cfg: Callable[[str], bytes], says: str
) -> None:
    box = Box(tmp_path)
    code, out, _ = box.cli(capsys, cfg(service.url))
    assert code == 1 and out.startswith("phone home: REFUSED: ") and says in out and out.count("\n") == 1
    assert "pw" not in out
    assert service.requests == [] and not box.layout.unit_key.exists()


def test_the_cli_refuses_a_foreign_factory_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box(tmp_path)
    other = tmp_path / "other.pub"
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    other.write_bytes(pem)
    unit = tmp_path / "u.json"
    unit.write_bytes(seal("http://127.0.0.1:9"))
    code = phonehome.main(["--root", str(tmp_path), "--config", str(unit), "--pubkey", str(other)])
    out = capsys.readouterr().out
    assert code == 1 and "not by this factory key" in out and not box.layout.unit_key.exists()


def test_a_wrong_box_never_enrols_when_the_config_says_halt(
    tmp_path: Path, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "wrong unit: this config is for serial J30ABC12, the box is serial J30ZZZ99"
    box = Box(tmp_path, report={**AGENT_REPORT, "fault": "refusal", "reason": wrong, "steps": []})
    code, out, _ = box.cli(capsys, seal(service.url, mismatch="halt"))
    assert (code, out) == (0, f"phone home: not sent: {wrong} (firstboot.on_hardware_mismatch: halt)\n")
    assert service.requests == [] and box.layout.enrol_token.exists() and not box.layout.unit_key.exists()
    code, out, _ = box.cli(capsys, seal(service.url, mismatch="report"))
    assert (code, out) == (0, "phone home: enrolled, delivered 1, spooled 0\n")
    assert service.stored[0]["reason"] == wrong


def test_the_cli_refuses_a_linked_state_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    box.layout.phonehome.symlink_to(outside)
    code, out, _ = box.cli(capsys, seal("http://127.0.0.1:9"))
    assert code == 1 and "is a symbolic link" in out and list(outside.iterdir()) == []


def test_the_core_id_comes_from_the_signed_command_line_first(tmp_path: Path) -> None:
    """The UKI's command line names the core (oemkit/image/appliance/uki.py); an os-release only as a fallback."""
    from oemkit.image.appliance import uki

    (tmp_path / "proc").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("OEMKIT_CORE_ID=fallback1\n")
    (tmp_path / "proc" / "cmdline").write_text(uki.command_line({"core_id": "4816c89cf085efb0840a"}) + "\n")
    assert phonereport.read_core_id(tmp_path) == "4816c89cf085efb0840a"
    (tmp_path / "proc" / "cmdline").write_text("console=ttyS0 oemkit.core=../../etc\n")
    assert phonereport.read_core_id(tmp_path) is None  # not an id: never passed on
    (tmp_path / "proc" / "cmdline").write_text("console=ttyS0 quiet\n")
    assert phonereport.read_core_id(tmp_path) == "fallback1"
