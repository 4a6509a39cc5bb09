"""The provisioning service's HTTP contract (docs/zero-touch.md, "HTTP contract (v1)"): each endpoint's answer and
each refusal the contract names, on SQLite and PostgreSQL, with the rows the database holds afterwards."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypervisor_core import ed25519
from oemkit.serve.models import Report, Unit
from tests.serve_support import ADMIN, Service, encode, public_b64, registration, report_body, sign

pytest_plugins = ["tests.serve_fixtures"]


# --------------------------------------------------------------------------------------------- register


def test_register_new_then_again_replaces_until_enrolled(service: Service) -> None:
    token, body = registration("J30BRN01")
    first = service.client.post("/v1/units", json=body, headers=ADMIN)
    assert first.status_code == 201
    out = first.json()
    assert out["serial"] == "J30BRN01" and out["state"] == "registered" and out["enrolled"] is False
    assert out["branding"] == body["branding"] and out["pcr15_expected"] == body["pcr15_expected"]
    assert service.unit("J30BRN01").token_sha256 == hashlib.sha256(token.encode()).digest()

    token2, body2 = registration("J30BRN01", site="munich", model="hpe-proliant-dl360-gen10")
    again = service.client.post("/v1/units", json=body2, headers=ADMIN)
    assert again.status_code == 200, again.text
    unit = service.unit("J30BRN01")
    assert (unit.site, unit.model) == ("munich", "hpe-proliant-dl360-gen10")
    assert unit.token_sha256 == hashlib.sha256(token2.encode()).digest()  # the old token no longer enrols
    assert service.count(Unit) == 1

    refused = service.client.post(
        "/v1/units/J30BRN01/enrol", json={"token": token, "public_key": public_b64(Ed25519PrivateKey.generate())}
    )
    assert refused.status_code == 403 and refused.json()["code"] == "bad_token"


def test_register_an_enrolled_unit_is_409(service: Service) -> None:
    service.enrol("J30BRN01")
    before = service.snapshot()
    _, body = registration("J30BRN01")
    answer = service.client.post("/v1/units", json=body, headers=ADMIN)
    assert answer.status_code == 409 and answer.json()["code"] == "already_enrolled"
    assert service.snapshot() == before


def test_register_refuses_bad_fields_with_the_error_shape(service: Service) -> None:
    _, body = registration("J30BRN01", pcr15_expected="zz", branding={"oem_name": "", "product": "x"})
    answer = service.client.post("/v1/units", json=body, headers=ADMIN)
    assert answer.status_code == 422
    doc = answer.json()
    assert doc["code"] == "invalid" and doc["detail"].startswith("body.")
    assert {tuple(e["loc"]) for e in doc["errors"]} >= {("body", "pcr15_expected"), ("body", "branding", "oem_name")}
    assert service.count(Unit) == 0


# --------------------------------------------------------------------------------------------- enrol


def test_enrol_binds_the_key_and_burns_the_token(service: Service) -> None:
    token = service.register("J30BRN01")
    key = Ed25519PrivateKey.generate()
    answer = service.client.post("/v1/units/J30BRN01/enrol", json={"token": token, "public_key": public_b64(key)})
    assert answer.status_code == 200 and answer.json() == {"serial": "J30BRN01", "enrolled": True}
    unit = service.unit("J30BRN01")
    assert unit.token_sha256 is None  # burned
    assert unit.public_key == base64.b64decode(public_b64(key)) and len(unit.public_key) == 32
    assert unit.enrolled_at is not None and unit.state == "enrolled"


def test_enrol_retry_with_the_same_key_changes_nothing(service: Service) -> None:
    token = service.register("J30BRN01")
    body = {"token": token, "public_key": public_b64(Ed25519PrivateKey.generate())}
    assert service.client.post("/v1/units/J30BRN01/enrol", json=body).status_code == 200
    before = service.snapshot()
    again = service.client.post("/v1/units/J30BRN01/enrol", json=body)
    assert again.status_code == 200 and again.json() == {"serial": "J30BRN01", "enrolled": True}
    assert service.snapshot() == before


def test_enrol_same_token_other_key_is_409_and_the_first_key_stays(service: Service) -> None:
    token = service.register("J30BRN01")
    first = public_b64(Ed25519PrivateKey.generate())
    assert (
        service.client.post("/v1/units/J30BRN01/enrol", json={"token": token, "public_key": first}).status_code == 200
    )
    before = service.snapshot()
    other = {"token": token, "public_key": public_b64(Ed25519PrivateKey.generate())}
    answer = service.client.post("/v1/units/J30BRN01/enrol", json=other)
    assert answer.status_code == 409 and answer.json()["code"] == "already_enrolled"
    assert service.snapshot() == before
    assert service.unit("J30BRN01").public_key == base64.b64decode(first)


def test_enrol_accepts_a_token_registered_by_the_hash_of_its_bytes(service: Service) -> None:
    """The contract says "the token's SHA-256": of the 43 characters (what `oemkit register` sends) or of the 32 bytes
    they encode. Both are hashes of the same secret; the service takes either."""
    token, body = registration("J30BRN01")
    raw = base64.urlsafe_b64decode(token + "=")
    body["token_sha256"] = hashlib.sha256(raw).hexdigest()
    assert service.client.post("/v1/units", json=body, headers=ADMIN).status_code == 201
    key = public_b64(Ed25519PrivateKey.generate())
    assert service.client.post("/v1/units/J30BRN01/enrol", json={"token": token, "public_key": key}).status_code == 200


def test_enrol_refusals_are_one_answer(service: Service) -> None:
    """A wrong token, another unit's token, an unknown serial: the same 403 bad_token, byte for byte."""
    service.register("J30BRN01")
    other_token = service.register("J30BRN02")
    key = public_b64(Ed25519PrivateKey.generate())
    before = service.snapshot()
    answers = [
        service.client.post("/v1/units/J30BRN01/enrol", json={"token": "A" * 43, "public_key": key}),
        service.client.post("/v1/units/J30BRN01/enrol", json={"token": other_token, "public_key": key}),
        service.client.post("/v1/units/J30NOPE1/enrol", json={"token": other_token, "public_key": key}),
    ]
    assert {a.status_code for a in answers} == {403}
    assert len({a.content for a in answers}) == 1 and answers[0].json()["code"] == "bad_token"
    assert service.snapshot() == before


# --------------------------------------------------------------------------------------------- reports


def test_report_stored_and_becomes_the_units_state(service: Service) -> None:
    service.enrol("J30BRN01")
    answer = service.report("J30BRN01", 1)
    assert answer.status_code == 201 and answer.json() == {"stored": True, "seq": 1}
    failed = service.report(
        "J30BRN01",
        2,
        status="FAILED",
        reason="libvirt: network 'uplink' failed to start",
        fault="step",
        failed_step="net.uplink",
        steps=[
            {"id": "host.hostname", "status": "ok", "seconds": 0.1},
            {"id": "net.uplink", "status": "failed", "seconds": 2.5},
        ],
        bank="b",
        origin="init",
    )
    assert failed.status_code == 201
    unit = service.unit("J30BRN01")
    assert (unit.state, unit.last_seq) == ("FAILED", 2) and unit.last_seen_at is not None
    rows = service.reports("J30BRN01")
    assert [r.seq for r in rows] == [1, 2]
    last = rows[-1]
    stored = (last.status, last.fault, last.failed_step, last.bank, last.origin)
    assert stored == ("FAILED", "step", "net.uplink", "b", "init")
    assert last.steps[1] == {"id": "net.uplink", "status": "failed", "seconds": 2.5}
    assert last.reason == "libvirt: network 'uplink' failed to start" and last.made_at == 1796000002.25
    assert last.received_at.tzinfo is not None


def test_report_signed_by_the_boxs_own_ed25519(service: Service) -> None:
    """The box signs with hypervisor_core.ed25519 (standard library only); the service verifies with cryptography."""
    token = service.register("J30BRN01")
    seed = bytes(range(32))
    public = base64.b64encode(ed25519.public_key(seed)).decode()
    assert (
        service.client.post("/v1/units/J30BRN01/enrol", json={"token": token, "public_key": public}).status_code == 200
    )
    raw = encode(report_body("J30BRN01", 1))
    signature = "ed25519=" + base64.b64encode(ed25519.sign(seed, b"oemkit-report-v1\n" + raw)).decode()
    assert service.post_report("J30BRN01", raw, signature).status_code == 201


def test_report_duplicate_id_is_409_duplicate_and_stored_once(service: Service) -> None:
    key = service.enrol("J30BRN01")
    raw = encode(report_body("J30BRN01", 1))
    assert service.post_report("J30BRN01", raw, sign(key, raw)).status_code == 201
    again = service.post_report("J30BRN01", raw, sign(key, raw))
    assert again.status_code == 409 and again.json()["code"] == "duplicate"
    assert service.count(Report) == 1


def test_report_seq_not_above_the_last_is_409_replay(service: Service) -> None:
    service.enrol("J30BRN01")
    assert service.report("J30BRN01", 5).status_code == 201
    before = service.snapshot()
    for seq in (5, 4, 1):
        answer = service.report("J30BRN01", seq)  # a new id each time: not a duplicate, an old number
        assert answer.status_code == 409
        assert answer.json() == {"detail": answer.json()["detail"], "code": "replay", "last_seq": 5}
    assert service.snapshot() == before
    assert service.report("J30BRN01", 6).status_code == 201


def test_report_from_an_unknown_or_unenrolled_unit_is_403(service: Service) -> None:
    service.register("J30BRN01")
    key = Ed25519PrivateKey.generate()
    for serial in ("J30BRN01", "J30NOPE1"):
        raw = encode(report_body(serial, 1))
        answer = service.post_report(serial, raw, sign(key, raw))
        assert answer.status_code == 403 and answer.json()["code"] == "not_enrolled"
    assert service.count(Report) == 0


def test_report_serial_not_the_paths_is_422(service: Service) -> None:
    key = service.enrol("J30BRN01")
    raw = encode(report_body("J30BRN02", 1))
    answer = service.post_report("J30BRN01", raw, sign(key, raw))
    assert answer.status_code == 422 and answer.json()["code"] == "serial_mismatch"
    assert service.count(Report) == 0


def test_report_without_or_with_a_malformed_signature_is_401(service: Service) -> None:
    service.enrol("J30BRN01")
    raw = encode(report_body("J30BRN01", 1))
    for signature in (None, "", "ed25519=", "rsa=" + "A" * 86, "ed25519=" + "!" * 86, "ed25519=" + "A" * 86):
        answer = service.post_report("J30BRN01", raw, signature)
        assert answer.status_code == 401 and answer.json()["code"] == "bad_signature", signature
    assert service.count(Report) == 0


# --------------------------------------------------------------------------------------------- reading


def test_unit_detail_lists_its_last_reports_newest_first(service: Service) -> None:
    key = service.enrol("J30BRN01")
    for seq in (1, 2, 3):
        assert service.report("J30BRN01", seq).status_code == 201
    answer = service.client.get("/v1/units/J30BRN01", headers=ADMIN)
    assert answer.status_code == 200
    doc = answer.json()
    assert [r["seq"] for r in doc["reports"]] == [3, 2, 1]
    assert doc["last_report"]["seq"] == 3 and doc["state"] == "READY" and doc["enrolled"] is True
    assert doc["public_key"] == public_b64(key) and doc["key_id"].startswith("ed25519:")
    assert doc["pcr15_mismatch"] is False


def test_unit_detail_of_an_unknown_serial_is_404(service: Service) -> None:
    answer = service.client.get("/v1/units/J30NOPE1", headers=ADMIN)
    assert answer.status_code == 404 and answer.json()["code"] == "unknown_unit"


def test_healthz(service: Service) -> None:
    answer = service.client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "db": "ok"}


def test_healthz_is_503_when_the_database_does_not_answer(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from oemkit.serve.app import create_app
    from oemkit.serve.settings import Settings

    gone = f"sqlite:///{tmp_path / 'no-such-folder' / 'serve.db'}"  # SQLite cannot open it
    with TestClient(create_app(Settings.with_token(gone, "x" * 32)), raise_server_exceptions=False) as client:
        answer = client.get("/healthz")
        assert answer.status_code == 503 and answer.json()["db"] == "error"
        fleet = client.get("/v1/fleet", headers={"Authorization": "Bearer " + "x" * 32})
        assert fleet.status_code == 503 and fleet.json()["code"] == "db_unavailable"


def test_unknown_paths_and_methods_answer_in_the_error_shape(service: Service) -> None:
    missing = service.client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = service.client.put("/v1/fleet", json={}, headers=ADMIN)
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


def test_a_unit_keeps_its_last_reports_only(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """An enrolled key cannot grow the reports table without end: the oldest are pruned as new ones arrive."""
    from oemkit.serve import store

    monkeypatch.setattr(store, "KEEP_REPORTS", 5)
    monkeypatch.setattr(store, "PRUNE_EVERY", 10)
    service.enrol("J30BRN01")
    for seq in range(1, 11):
        assert service.report("J30BRN01", seq).status_code == 201
    assert service.count(Report) == 5
    assert service.report("J30BRN01", 11).status_code == 201  # and the unit goes on reporting
