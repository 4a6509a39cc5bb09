"""Requests racing each other, on SQLite and PostgreSQL: the same report sent by several threads at once is stored
once (the others 409, never a 500 from a unique constraint); one sequence number claimed by two reports is stored
once; an enrolment raced with two keys binds one. The threads start together at a barrier, each with its own
database connection, through the same code the routes call (oemkit.serve.store)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from oemkit.serve import store
from oemkit.serve.errors import ApiError
from oemkit.serve.models import Report, Unit
from oemkit.serve.schemas import Enrolment, Registration
from oemkit.serve.schemas import Report as ReportIn
from tests.serve_support import Service, public_b64, registration, report_body

pytest_plugins = ["tests.serve_fixtures"]

THREADS = 8


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once; each one's result, or the ApiError it raised (anything else fails the test)."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except ApiError as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _codes(results: list[Any]) -> list[str]:
    return sorted(r.code if isinstance(r, ApiError) else "ok" for r in results)


def _unit_id(service: Service, serial: str) -> int:
    with service.db.read() as session:
        unit_id = session.scalar(select(Unit.id).where(Unit.serial == serial))
    assert unit_id is not None
    return unit_id


def test_the_same_report_at_once_is_stored_once(service: Service) -> None:
    service.enrol("J30BRN01")
    unit_id = _unit_id(service, "J30BRN01")
    report = ReportIn.model_validate(report_body("J30BRN01", 1))
    for _round in range(3):
        results = race([partial(store.submit, service.db, unit_id, report)] * THREADS)
        assert _codes(results) == ["duplicate"] * (THREADS - 1) + ["ok"]
        report = ReportIn.model_validate(report_body("J30BRN01", report.seq + 1))
    assert [r.seq for r in service.reports("J30BRN01")] == [1, 2, 3]
    assert service.unit("J30BRN01").last_seq == 3


def test_one_sequence_number_claimed_twice_is_stored_once(service: Service) -> None:
    service.enrol("J30BRN01")
    unit_id = _unit_id(service, "J30BRN01")
    reports = [ReportIn.model_validate(report_body("J30BRN01", 1)) for _ in range(THREADS)]  # THREADS distinct ids
    results = race([partial(store.submit, service.db, unit_id, r) for r in reports])
    assert _codes(results) == ["ok"] + ["replay"] * (THREADS - 1)
    assert service.count(Report) == 1


def test_racing_sequence_numbers_leave_the_unit_at_the_highest_stored(service: Service) -> None:
    service.enrol("J30BRN01")
    unit_id = _unit_id(service, "J30BRN01")
    reports = [
        ReportIn.model_validate(report_body("J30BRN01", seq, status="FAILED" if seq % 2 else "READY"))
        for seq in range(1, THREADS + 1)
    ]
    results = race([partial(store.submit, service.db, unit_id, r) for r in reports])
    stored = [r for r in results if not isinstance(r, ApiError)]
    assert {r.code for r in results if isinstance(r, ApiError)} <= {"replay"}
    rows = service.reports("J30BRN01")
    assert sorted(stored) == [r.seq for r in rows]
    unit = service.unit("J30BRN01")
    assert unit.last_seq == max(stored) == THREADS  # the highest number always wins: nothing can be above it
    assert unit.state == rows[-1].status


def test_one_token_raced_with_many_keys_binds_one(service: Service) -> None:
    token = service.register("J30BRN01")
    keys = [public_b64(Ed25519PrivateKey.generate()) for _ in range(THREADS)]
    bodies = [Enrolment(token=token, public_key=k) for k in keys]
    results = race([partial(store.enrol, service.db, "J30BRN01", b) for b in bodies])
    assert _codes(results) == ["already_enrolled"] * (THREADS - 1) + ["ok"]
    winner = keys[results.index(True)]
    unit = service.unit("J30BRN01")
    assert unit.public_key == base64.b64decode(winner) and unit.token_sha256 is None


def test_one_serial_registered_at_once_is_one_row(service: Service) -> None:
    bodies = [Registration.model_validate(registration("J30BRN01")[1]) for _ in range(THREADS)]
    results = race([partial(store.register, service.db, b) for b in bodies])
    created = [r for r in results if not isinstance(r, ApiError) and r[1]]
    assert len(created) == 1
    assert {r.code for r in results if isinstance(r, ApiError)} <= {"conflict"}
    assert service.count(Unit) == 1
