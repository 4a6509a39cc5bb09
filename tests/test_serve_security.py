"""The provisioning service under attack: stolen or guessed tokens, replayed and forged reports, oversized and
malformed bodies, hostile serials. Every one a 4xx in the error shape — never a 500 — and nothing stored: each test
compares every row of the database before and after."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oemkit.serve.models import Report
from tests.serve_support import (
    ADMIN,
    ADMIN_TOKEN,
    Service,
    encode,
    public_b64,
    registration,
    report_body,
    running,
    sign,
)

pytest_plugins = ["tests.serve_fixtures"]

# JSON documents shaped like the contract's bodies, with wrong and hostile values mixed in
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
JSON_VALUES = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "serial": st.sampled_from(["J30BRN01", "J30BRN02", "", "../x"]) | st.text(max_size=40),
            "seq": st.integers(min_value=-2, max_value=2**64),
            "id": st.text(alphabet="0123456789abcdef", min_size=30, max_size=34),
            "token": st.text(max_size=50),
            "public_key": st.text(max_size=50),
            "status": st.sampled_from(["READY", "FAILED", "ready", None]),
            "made_at": _SCALARS,
            "steps": st.lists(st.dictionaries(st.text(max_size=10), _SCALARS, max_size=4), max_size=4),
            "branding": st.dictionaries(st.text(max_size=10), _SCALARS, max_size=3),
        },
    )
    | _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

BAD_SERIALS = [
    "..%2F..",  # traversal, the slash escaped
    "a%2Fb",
    "J30%00BRN01",  # NUL
    "J30BRN01%0A",  # a trailing newline: `$` in a regex must not let it through
    "X" * 200,
    "J30BRÖN1",  # not ASCII
    "%C3%A9%C3%A9%C3%A9",
    "-J30BRN01",
    "ab",
]


def _shape(answer, status: int, code: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    doc = answer.json()
    assert isinstance(doc["detail"], str) and isinstance(doc["code"], str)
    if code is not None:
        assert doc["code"] == code, doc
    return doc


# --------------------------------------------------------------------------------------------- enrolment


def test_stolen_token_of_another_unit_and_guessed_tokens_enrol_nothing(service: Service) -> None:
    service.register("J30BRN01")
    other = service.register("J30BRN02")
    before = service.snapshot()
    key = public_b64(Ed25519PrivateKey.generate())
    for token in (other, "A" * 43, "_" * 43, service.tokens["J30BRN01"][:-1] + "A"):
        if token == service.tokens["J30BRN01"]:
            continue
        _shape(service.client.post("/v1/units/J30BRN01/enrol", json={"token": token, "public_key": key}), 403,
               "bad_token")  # fmt: skip
    assert service.snapshot() == before


def test_replayed_enrolment_with_another_key_cannot_take_the_unit_over(service: Service) -> None:
    key = service.enrol("J30BRN01")
    token = service.tokens["J30BRN01"]
    before = service.snapshot()
    thief = Ed25519PrivateKey.generate()
    _shape(service.client.post("/v1/units/J30BRN01/enrol", json={"token": token, "public_key": public_b64(thief)}),
           409, "already_enrolled")  # fmt: skip
    assert service.snapshot() == before
    raw = encode(report_body("J30BRN01", 1))
    _shape(service.post_report("J30BRN01", raw, sign(thief, raw)), 401, "bad_signature")
    assert service.post_report("J30BRN01", raw, sign(key, raw)).status_code == 201  # the box is still the box


def test_enrolment_errors_never_echo_the_token(service: Service) -> None:
    token = service.register("J30BRN01")
    before = service.snapshot()
    bodies = [
        {"token": token, "public_key": "not a key"},
        {"token": token + "x", "public_key": public_b64(Ed25519PrivateKey.generate())},
        {"token": token, "public_key": public_b64(Ed25519PrivateKey.generate()), "extra": token},
        {"token": [token], "public_key": 5},
        {"token": token},
    ]
    for body in bodies:
        answer = service.client.post("/v1/units/J30BRN01/enrol", json=body)
        _shape(answer, 422, "invalid")
        assert token not in answer.text and token[:20] not in answer.text
    assert service.snapshot() == before


def test_registration_errors_never_echo_the_admin_token_or_the_token_hash(service: Service) -> None:
    _, body = registration("J30BRN01", token_sha256="g" * 64, note=ADMIN_TOKEN)
    answer = service.client.post("/v1/units", json=body, headers=ADMIN)
    _shape(answer, 422, "invalid")
    assert ADMIN_TOKEN not in answer.text and "g" * 64 not in answer.text
    assert service.snapshot() == []


# --------------------------------------------------------------------------------------------- reports


def test_replayed_report_same_bytes_is_stored_once(service: Service) -> None:
    key = service.enrol("J30BRN01")
    raw = encode(report_body("J30BRN01", 1))
    assert service.post_report("J30BRN01", raw, sign(key, raw)).status_code == 201
    before = service.snapshot()
    for _ in range(3):
        _shape(service.post_report("J30BRN01", raw, sign(key, raw)), 409, "duplicate")
    assert service.snapshot() == before


def test_old_seq_resigned_by_the_unit_key_is_a_replay(service: Service) -> None:
    key = service.enrol("J30BRN01")
    assert service.report("J30BRN01", 1).status_code == 201
    assert service.report("J30BRN01", 2).status_code == 201
    before = service.snapshot()
    raw = encode(report_body("J30BRN01", 1, status="FAILED", reason="rewritten history"))
    doc = _shape(service.post_report("J30BRN01", raw, sign(key, raw)), 409, "replay")
    assert doc["last_seq"] == 2
    assert service.snapshot() == before


def test_report_signed_by_another_units_key_is_401(service: Service) -> None:
    service.enrol("J30BRN01")
    other = service.enrol("J30BRN02")
    before = service.snapshot()
    raw = encode(report_body("J30BRN01", 1))
    _shape(service.post_report("J30BRN01", raw, sign(other, raw)), 401, "bad_signature")
    assert service.snapshot() == before


def test_body_changed_after_signing_is_401(service: Service) -> None:
    key = service.enrol("J30BRN01")
    before = service.snapshot()
    raw = encode(report_body("J30BRN01", 1, status="FAILED", reason="disk gone"))
    signature = sign(key, raw)
    for changed in (
        raw.replace(b'"FAILED"', b'"READY"'),
        raw + b" ",
        raw[:-1],
        raw.replace(b'"seq":1', b'"seq":9'),
    ):
        _shape(service.post_report("J30BRN01", changed, signature), 401, "bad_signature")
    wrong_context = "ed25519=" + base64.b64encode(key.sign(raw)).decode()  # no "oemkit-report-v1\n" prefix
    _shape(service.post_report("J30BRN01", raw, wrong_context), 401, "bad_signature")
    assert service.snapshot() == before


def test_unsigned_garbage_is_never_parsed(service: Service) -> None:
    """The signature is checked first: an unsigned body is 401 whatever it holds, malformed JSON included."""
    service.enrol("J30BRN01")
    before = service.snapshot()
    for raw in (b"{", b"\xff\xfe", b'{"serial": "\\ud800"}', b"[" * 5000):
        _shape(service.post_report("J30BRN01", raw, None), 401, "bad_signature")
    assert service.snapshot() == before


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b"null",
        b"[]",
        b"\xff\xfe{}",
        b"[" * 20000 + b"]" * 20000,
        b'{"serial": "J30BRN01", "\\ud800": 1}',
    ],
    ids=["truncated", "empty", "null", "list", "not-utf8", "deep", "surrogate-key"],
)
def test_signed_malformed_json_is_422(service: Service, raw: bytes) -> None:
    key = service.enrol("J30BRN01")
    before = service.snapshot()
    _shape(service.post_report("J30BRN01", raw, sign(key, raw)), 422, "invalid")
    assert service.snapshot() == before


@pytest.mark.parametrize(
    "change",
    [
        {"seq": "3"},
        {"seq": 3.0},
        {"seq": True},
        {"seq": 0},
        {"seq": 2**63},
        {"made_at": "yesterday"},
        {"status": "ready"},
        {"fault": "cosmic rays"},
        {"steps": [{"id": "x", "status": "ok", "seconds": -1}]},
        {"steps": [{"id": "x", "status": "ok"}]},
        {"steps": "host.hostname"},
        {"steps": [{"id": "x", "status": "ok", "seconds": 1}] * 1001},
        {"bank": "c"},
        {"pcr15": "0" * 63},
        {"id": "not-hex" * 5},
        {"reason": "x" * 5000},
        {"agent": "0.1\n0"},
        {"origin": None},
        {"unknown": 1},
    ],
)
def test_signed_report_with_wrong_types_or_bounds_is_422(service: Service, change: dict) -> None:
    key = service.enrol("J30BRN01")
    before = service.snapshot()
    raw = encode({**report_body("J30BRN01", 1), **change})
    if len(raw) > 64 * 1024:
        pytest.skip("over the body bound: the 413 tests cover it")
    doc = _shape(service.post_report("J30BRN01", raw, sign(key, raw)), 422, "invalid")
    assert all("input" not in e for e in doc["errors"])
    assert service.snapshot() == before


def test_a_reason_a_database_could_not_store_is_salvaged(service: Service) -> None:
    """NUL (PostgreSQL text cannot hold it) and a lone surrogate become U+FFFD: a failing box's report still counts."""
    key = service.enrol("J30BRN01")
    raw = encode(report_body("J30BRN01", 1, status="FAILED", reason="tool said \x00\x01 and \ud800", fault="core"))
    assert service.post_report("J30BRN01", raw, sign(key, raw)).status_code == 201
    assert service.reports("J30BRN01")[0].reason == "tool said \ufffd\x01 and \ufffd"


# --------------------------------------------------------------------------------------------- bodies


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413(service: Service, streamed: bool) -> None:
    key = service.enrol("J30BRN01")
    before = service.snapshot()
    raw = encode(report_body("J30BRN01", 1, reason="x" * (70 * 1024)))
    content = _chunks(raw) if streamed else raw
    headers = {"Content-Type": "application/json", "X-Oemkit-Signature": sign(key, raw)}
    for path in ("/v1/units/J30BRN01/reports", "/v1/units/J30BRN01/enrol", "/v1/units"):
        answer = service.client.post(path, content=content, headers={**headers, **ADMIN})
        _shape(answer, 413, "too_large")
        content = _chunks(raw) if streamed else raw
    assert service.snapshot() == before


def test_a_body_of_exactly_64_kib_is_read(service: Service) -> None:
    key = service.enrol("J30BRN01")
    body = report_body("J30BRN01", 1)
    body["steps"] = [{"id": "s" * 150, "status": "ok", "seconds": 1.0}] * 300
    raw = encode(body)
    raw = raw[:-1] + b" " * (64 * 1024 - len(raw)) + b"}"
    assert len(raw) == 64 * 1024
    assert service.post_report("J30BRN01", raw, sign(key, raw)).status_code == 201


def test_not_json_content_type_is_415(service: Service) -> None:
    token = service.register("J30BRN01")
    before = service.snapshot()
    body = json.dumps({"token": token, "public_key": public_b64(Ed25519PrivateKey.generate())})
    answer = service.client.post("/v1/units/J30BRN01/enrol", content=body, headers={"Content-Type": "text/plain"})
    _shape(answer, 415, "unsupported_media_type")
    assert service.snapshot() == before


def test_enrol_with_malformed_json_or_wrong_types_is_4xx(service: Service) -> None:
    service.register("J30BRN01")
    before = service.snapshot()
    for raw in (b"{", b"[]", b'{"token": 1, "public_key": 2}', b"[" * 20000 + b"]" * 20000, b'{"\\ud800": 1}'):
        answer = service.client.post(
            "/v1/units/J30BRN01/enrol", content=raw, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code in (400, 422), answer.text
        _shape(answer, answer.status_code)
    assert service.snapshot() == before


# --------------------------------------------------------------------------------------------- serials in paths


@pytest.mark.parametrize("serial", BAD_SERIALS)
def test_bad_serials_in_paths_are_422_before_any_lookup(service: Service, serial: str) -> None:
    key = service.enrol("J30BRN01")
    token = service.tokens["J30BRN01"]
    before = service.snapshot()
    raw = encode(report_body("J30BRN01", 1))
    answers = [
        service.client.post(f"/v1/units/{serial}/enrol", json={"token": token, "public_key": public_b64(key)}),
        service.post_report("J30BRN01", raw, sign(key, raw), path=f"/v1/units/{serial}/reports"),
        service.client.get(f"/v1/units/{serial}", headers=ADMIN),
    ]
    for answer in answers:
        _shape(answer, 422, "invalid")
        assert answer.json()["errors"][0]["loc"] == ["path", "serial"]
    assert service.snapshot() == before


def test_slash_in_the_serial_is_422_too(service: Service) -> None:
    service.register("J30BRN01")
    before = service.snapshot()
    for path in ("/v1/units/a/b/enrol", "/v1/units/J30BRN01/x/enrol", "/v1/units/J30BRN01/reports/enrol"):
        answer = service.client.post(path, json={"token": "A" * 43, "public_key": "B" * 43 + "="})
        _shape(answer, 422, "invalid")
    assert service.snapshot() == before


# --------------------------------------------------------------------------------------------- admin


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token-wrong"},
        {"Authorization": "Bearer " + ADMIN_TOKEN + "x"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}x".encode()).decode()},
        {"Authorization": "Token " + ADMIN_TOKEN},
        {"Authorization": "Basic !!!"},
    ],
    ids=["none", "wrong", "longer", "empty-bearer", "basic-wrong", "other-scheme", "basic-garbage"],
)
def test_admin_endpoints_without_the_admin_token_are_401(service: Service, headers: dict) -> None:
    _, body = registration("J30BRN01")
    answers = [
        service.client.post("/v1/units", json=body, headers=headers),
        service.client.get("/v1/units/J30BRN01", headers=headers),
        service.client.get("/v1/fleet", headers=headers),
        service.client.get("/", headers=headers),
    ]
    for answer in answers:
        _shape(answer, 401, "unauthorized")
        assert ADMIN_TOKEN not in answer.text
    assert answers[-1].headers["WWW-Authenticate"] == 'Basic realm="oemkit"'
    assert answers[0].headers["WWW-Authenticate"].startswith("Bearer")
    assert service.snapshot() == []


def test_the_page_takes_basic_with_the_token_as_password(service: Service) -> None:
    assert service.client.get("/", auth=("anyone", ADMIN_TOKEN)).status_code == 200
    assert service.client.get("/v1/fleet", auth=("anyone", ADMIN_TOKEN)).status_code == 401  # the API: Bearer only


# --------------------------------------------------------------------------------------------- rate limits


def test_rate_limit_per_unit_not_per_address(db_url: str) -> None:
    with running(db_url, enrol_rate="3/minute", report_rate="3/minute") as service:
        service.enrol("J30BRN02")  # the same client address, another unit: its budget is its own
        service.enrol("J30BRN01")
        for seq in (1, 2, 3):
            assert service.report("J30BRN01", seq).status_code == 201
        before = service.snapshot()
        _shape(service.report("J30BRN01", 4), 429, "rate_limited")
        assert service.snapshot() == before
        assert service.report("J30BRN02", 1).status_code == 201


def test_nobody_spends_a_units_budget_for_it(db_url: str) -> None:
    """Wrong tokens and unsigned reports for a serial count against the sender's address, never the unit's own
    allowance: a flood from elsewhere neither stops the box enrolling nor its reports arriving."""
    with running(db_url, enrol_rate="3/minute", report_rate="3/minute") as service:
        token = service.register("J30BRN01")
        with TestClient(service.client.app, raise_server_exceptions=False, client=("203.0.113.9", 4444)) as attacker:
            for _ in range(3):
                wrong = {"token": "A" * 43, "public_key": public_b64(Ed25519PrivateKey.generate())}
                assert attacker.post("/v1/units/J30BRN01/enrol", json=wrong).status_code == 403
            limited = attacker.post("/v1/units/J30BRN01/enrol", json=wrong)
            _shape(limited, 429, "rate_limited")
            assert 1 <= int(limited.headers["Retry-After"]) <= 60
            key = Ed25519PrivateKey.generate()  # the box, from its own address: enrols
            mine = {"token": token, "public_key": public_b64(key)}
            assert service.client.post("/v1/units/J30BRN01/enrol", json=mine).status_code == 200
            service.keys["J30BRN01"] = key
            junk = json.dumps({"serial": "J30BRN01"}).encode()
            for _ in range(5):
                answer = attacker.post("/v1/units/J30BRN01/reports", content=junk,
                                       headers={"Content-Type": "application/json"})  # fmt: skip
                assert answer.status_code in (401, 429)
        before = service.count(Report)
        for seq in (1, 2, 3):
            assert service.report("J30BRN01", seq).status_code == 201  # the unit's whole budget is still its own
        assert service.count(Report) == before + 3


# --------------------------------------------------------------------------------------------- anything at all


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300), st.builds(lambda d: json.dumps(d).encode(), JSON_VALUES)))
def test_no_body_makes_a_500(service: Service, raw: bytes) -> None:
    """Whatever the box or anyone sends — signed by the unit or not, to enrol or to report — a 4xx in the error shape
    (or, rarely, an accepted report), never a 500."""
    if "J30BRN01" not in service.keys:
        service.enrol("J30BRN01")
    key = service.keys["J30BRN01"]
    headers = {"Content-Type": "application/json"}
    answers = [
        service.post_report("J30BRN01", raw, sign(key, raw)),
        service.post_report("J30BRN01", raw, None),
        service.client.post("/v1/units/J30BRN01/enrol", content=raw, headers=headers),
        service.client.post("/v1/units", content=raw, headers={**headers, **ADMIN}),
    ]
    for answer in answers:
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            _shape(answer, answer.status_code)
