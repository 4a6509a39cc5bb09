"""Reports go in by batch (oemkit/serve/batch.py, intake.py): one thread per process writes whatever queued while it
wrote the last batch, in one transaction. These tests hand ReportIntake.process whole batches (so what is in one batch
is certain, not a matter of timing) on SQLite and PostgreSQL, with real signatures: each report gets its own answer,
a refused one costs the others nothing, and a duplicate or an old sequence number inside a batch is told apart exactly
as it is when reports come one by one. Then the Batcher's own contract, and many reports at once through the app."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from oemkit.serve import store
from oemkit.serve.batch import MAX_BATCH, Batcher
from oemkit.serve.errors import ApiError
from oemkit.serve.intake import EnrolIntake, Enrolling, Incoming, ReportIntake
from oemkit.serve.models import Report, Unit
from oemkit.serve.ratelimit import UnitLimits
from oemkit.serve.schemas import Enrolment
from oemkit.serve.schemas import Report as ReportIn
from tests.serve_support import GENEROUS, Service, encode, public_b64, report_body, sign

pytest_plugins = ["tests.serve_fixtures"]


def _intake(service: Service) -> ReportIntake:
    return ReportIntake(service.db, UnitLimits(enrol=GENEROUS, report=GENEROUS))


def _signed(service: Service, path: str, seq: int, *, signer: str | None = None, about: str | None = None) -> Incoming:
    """A report posted to `path`'s serial, about `about` (that same unit by default), signed by `signer`'s key."""
    raw = encode(report_body(about or path, seq))
    return Incoming(path, raw, sign(service.keys[signer or path], raw), "127.0.0.1")


def _answers(outcomes: Sequence[object]) -> list[object]:
    return [o.code if isinstance(o, ApiError) else o for o in outcomes]  # type: ignore[misc]


def test_a_batch_is_written_in_one_transaction(service: Service) -> None:
    serials = [f"J30BAT{n:02d}" for n in range(6)]
    for serial in serials:
        service.enrol(serial)
    commits: list[int] = []
    event.listen(service.db.engine, "commit", lambda _conn: commits.append(1))
    outcomes = _intake(service).process([_signed(service, s, 1) for s in serials])
    assert outcomes == [1] * 6
    # PostgreSQL: one transaction; SQLite: the batch's keys read in one, before the write lock, the reports in another
    assert len(commits) == (2 if service.db.backend == "sqlite" else 1)
    assert all(service.unit(s).last_seq == 1 and service.unit(s).state == "READY" for s in serials)
    assert service.count(Report) == 6


def test_a_refused_report_is_answered_alone_and_costs_the_others_nothing(service: Service) -> None:
    for serial in ("J30BAT01", "J30BAT02", "J30BAT03"):
        service.enrol(serial)
    service.register("J30BAT04")  # registered, never enrolled
    not_json = Incoming("J30BAT03", b"{not json", sign(service.keys["J30BAT03"], b"{not json"), "127.0.0.1")
    batch = [
        _signed(service, "J30BAT01", 1),
        _signed(service, "J30BAT02", 1, signer="J30BAT01"),  # another unit's key
        Incoming("J30BAT02", encode(report_body("J30BAT02", 1)), None, "127.0.0.1"),  # no signature
        _signed(service, "J30BAT04", 1, signer="J30BAT01"),  # not enrolled
        not_json,
        _signed(service, "J30BAT03", 1, about="J30BAT01"),  # signed by J30BAT03, about J30BAT01
        _signed(service, "J30BAT02", 1),
    ]
    outcomes = _intake(service).process(batch)
    assert _answers(outcomes) == [1, "bad_signature", "bad_signature", "not_enrolled", "invalid", "serial_mismatch", 1]
    assert [(r.seq, r.status) for r in service.reports("J30BAT01")] == [(1, "READY")]
    assert [r.seq for r in service.reports("J30BAT02")] == [1]
    assert service.reports("J30BAT03") == [] and service.unit("J30BAT03").last_seq == 0


def test_a_duplicate_in_a_batch_is_told_apart_as_if_it_came_alone(service: Service) -> None:
    for serial in ("J30BAT01", "J30BAT02"):
        service.enrol(serial)
    first = _signed(service, "J30BAT01", 1)
    outcomes = _intake(service).process([first, first, _signed(service, "J30BAT02", 1)])  # a box's retry, at once
    assert _answers(outcomes) == [1, "duplicate", 1]
    assert service.count(Report) == 2


def test_a_units_reports_in_one_batch_go_in_by_sequence_and_only_the_old_ones_are_refused(service: Service) -> None:
    for serial in ("J30BAT01", "J30BAT02"):
        service.enrol(serial)
    intake = _intake(service)
    ascending = [_signed(service, "J30BAT01", seq) for seq in (1, 2, 3)]
    assert intake.process(ascending) == [1, 2, 3]  # a spool sent at once: all of it, one transaction
    # reports that arrive together have no order of their own: each unit's go in by sequence number
    assert intake.process([_signed(service, "J30BAT01", 5), _signed(service, "J30BAT01", 4)]) == [5, 4]
    batch = [_signed(service, "J30BAT01", 6), _signed(service, "J30BAT01", 2), _signed(service, "J30BAT02", 1)]
    outcomes = intake.process(batch)
    assert _answers(outcomes) == [6, "replay", 1]  # 2 is not above the unit's last: refused, the rest stored
    assert isinstance(outcomes[1], ApiError) and outcomes[1].extra == {"last_seq": 6}
    assert [r.seq for r in service.reports("J30BAT01")] == [1, 2, 3, 4, 5, 6]
    assert service.unit("J30BAT01").last_seq == 6 and service.unit("J30BAT02").last_seq == 1


def test_a_refused_report_costs_its_batch_one_transaction_not_one_each(service: Service) -> None:
    serials = [f"J30BAT{n:02d}" for n in range(20)]
    for serial in serials:
        service.enrol(serial)
    intake = _intake(service)
    retried = _signed(service, serials[0], 1)
    assert intake.process([retried]) == [1]
    commits: list[int] = []
    event.listen(service.db.engine, "commit", lambda _conn: commits.append(1))
    outcomes = intake.process([retried] + [_signed(service, s, 1) for s in serials[1:]])  # a retry among 19 new
    assert _answers(outcomes) == ["duplicate"] + [1] * 19
    # the batch rolled back, written again in savepoints (one commit), the duplicate told apart after (one read);
    # SQLite reads the keys in a transaction of their own
    assert len(commits) == (3 if service.db.backend == "sqlite" else 2)
    assert service.count(Report) == 20


def test_many_reports_at_once_through_the_app_each_get_their_answer(service: Service) -> None:
    serials = [f"J30BAT{n:02d}" for n in range(24)]
    for serial in serials:
        service.enrol(serial)
    # 24 units at once, half of them twice (the second a duplicate): the route queues them into whatever batches form
    jobs = [(s, encode(report_body(s, 1))) for s in serials]
    jobs += jobs[::2]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda j: service.post_report(j[0], j[1], sign(service.keys[j[0]], j[1])), jobs))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 24 + [409] * 12
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"duplicate"}
    assert service.count(Report) == 24


def test_a_report_when_the_database_is_gone_is_503(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from oemkit.serve.app import create_app
    from oemkit.serve.settings import Settings

    gone = f"sqlite:///{tmp_path / 'no-such-folder' / 'serve.db'}"
    raw = encode(report_body("J30BAT01", 1))
    with TestClient(create_app(Settings.with_token(gone, "x" * 32)), raise_server_exceptions=False) as client:
        answer = client.post("/v1/units/J30BAT01/reports", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 503 and answer.json()["code"] == "db_unavailable"


def _write_at_once(service: Service, barrier: threading.Barrier, batch: list[tuple[int, ReportIn]]) -> list[object]:
    barrier.wait()
    return list(store.receive_many(service.db, (), lambda _keys: batch))  # a deadlock raises here


def test_batches_written_at_once_in_any_order_never_deadlock(service: Service) -> None:
    """With --workers N, N processes write batches at once (one batch thread each): batches holding the same units,
    and the same unit's sequence numbers, in other orders must not take their row locks and index entries in other
    orders (on PostgreSQL, a deadlock: every report of both batches 503). The writes start together at a barrier
    (the reports are checked before it); without the ordering it failed 4 runs in 4 on PostgreSQL."""
    serials = [f"J30BAT{n:03d}" for n in range(MAX_BATCH)]
    for serial in serials:
        service.enrol(serial)
    with service.db.read() as session:
        ids = dict(session.execute(select(Unit.serial, Unit.id)).all())
    for round_ in range(3):
        batches: list[list[tuple[int, ReportIn]]] = []
        for k in range(2):
            batch = [(ids[s], ReportIn.model_validate(report_body(s, 2 * round_ + k + 1))) for s in serials]
            batch += [(ids[serials[0]], ReportIn.model_validate(report_body(serials[0], 100 + 10 * round_ + n)))
                      for n in range(8)]  # fmt: skip
            batches.append(batch if k == 0 else batch[::-1])
        with ThreadPoolExecutor(len(batches)) as pool:
            results = list(pool.map(partial(_write_at_once, service, threading.Barrier(len(batches))), batches))
        answers = [a for outcomes in results for a in _answers(outcomes)]
        assert {a for a in answers if isinstance(a, str)} <= {"replay", "duplicate"}
    for serial in serials:
        stored = [r.seq for r in service.reports(serial)]
        assert stored and service.unit(serial).last_seq == max(stored)


def test_enrolments_in_one_batch_each_get_their_answer_and_a_refusal_undoes_only_itself(service: Service) -> None:
    tokens = {serial: service.register(serial) for serial in ("J30BAT01", "J30BAT02", "J30BAT03")}
    keys = [public_b64(Ed25519PrivateKey.generate()) for _ in range(3)]
    batch = [
        Enrolling("J30BAT01", Enrolment(token=tokens["J30BAT01"], public_key=keys[0]), "10.0.0.1"),
        Enrolling("J30BAT02", Enrolment(token=tokens["J30BAT03"], public_key=keys[1]), "10.0.0.2"),  # another's token
        Enrolling("J30BAT01", Enrolment(token=tokens["J30BAT01"], public_key=keys[0]), "10.0.0.1"),  # a retry
        Enrolling("J30BAT01", Enrolment(token=tokens["J30BAT01"], public_key=keys[2]), "10.0.0.3"),  # another key
        Enrolling("J30BATXX", Enrolment(token=tokens["J30BAT01"], public_key=keys[2]), "10.0.0.3"),  # no such unit
        Enrolling("J30BAT03", Enrolment(token=tokens["J30BAT03"], public_key=keys[1]), "10.0.0.4"),
    ]
    before = service.unit("J30BAT02")
    outcomes = EnrolIntake(service.db, UnitLimits(enrol=GENEROUS, report=GENEROUS)).process(batch)
    assert _answers(outcomes) == [True, "bad_token", False, "already_enrolled", "bad_token", True]  # type: ignore[arg-type]
    assert service.unit("J30BAT01").public_key == base64.b64decode(keys[0])
    assert service.unit("J30BAT03").public_key == base64.b64decode(keys[1])
    after = service.unit("J30BAT02")
    assert (after.public_key, after.token_sha256, after.state) == (None, before.token_sha256, "registered")


def test_refused_requests_queued_together_are_limited_per_address_all_the_same(service: Service) -> None:
    """Requests that arrive together all pass the check on arrival before any is judged: the batch thread checks
    again, counting each refusal before the next. 3/minute: a flood of 10 from one address gets 3 refusals of its
    own and then 429s; the unit itself, from its own address, is not held back."""
    key_of = service.enrol("J30BAT01")
    token = service.register("J30BAT02")
    limits = UnitLimits(enrol="3/minute", report="3/minute")
    forged = [_signed(service, "J30BAT01", 1, signer="J30BAT01") for _ in range(10)]
    forged = [Incoming(i.serial, i.body + b" ", i.signature, "192.0.2.9") for i in forged]  # the bytes changed
    assert _answers(ReportIntake(service.db, limits).process(forged)) == ["bad_signature"] * 3 + ["rate_limited"] * 7
    raw = encode(report_body("J30BAT01", 1))
    good = Incoming("J30BAT01", raw, sign(key_of, raw), "198.51.100.1")
    assert ReportIntake(service.db, limits).process([good]) == [1]

    wrong = Enrolment(token=service.tokens["J30BAT01"], public_key=public_b64(Ed25519PrivateKey.generate()))
    guesses = [Enrolling("J30BAT02", wrong, "192.0.2.9") for _ in range(10)]
    right = Enrolling("J30BAT02", Enrolment(token=token, public_key=public_b64(Ed25519PrivateKey.generate())), "x")
    outcomes = EnrolIntake(service.db, limits).process([*guesses, right])
    assert _answers(outcomes) == ["bad_token"] * 3 + ["rate_limited"] * 7 + [True]  # type: ignore[arg-type]


def test_a_database_failure_fails_the_batchs_accepted_reports_and_leaves_its_refusals(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure a running database cannot be made to produce on cue (a mock, for the failure path only): the
    write fails; the accepted reports get the error (503), the refused ones keep their own answer, nothing stored."""
    service.enrol("J30BAT01")

    def fail(*_args: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(store, "_store", fail)
    batch = [_signed(service, "J30BAT01", 1), Incoming("J30BAT01", b"{}", None, "127.0.0.1")]
    outcomes = _intake(service).process(batch)
    assert isinstance(outcomes[0], OperationalError) and _answers(outcomes)[1] == "bad_signature"
    assert service.count(Report) == 0


def test_the_services_postgresql_connections_carry_a_statement_timeout(service: Service) -> None:
    """So a statement stuck on a lock or a sick server fails its batch (503) instead of holding it for ever."""
    if service.db.backend != "postgresql":
        pytest.skip("PostgreSQL's statement_timeout; SQLite writers wait on its busy timeout")
    with service.db.connection() as connection:
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "30s"


def test_a_failed_enrolment_batch_answers_nothing_it_judged_against_its_own_rolled_back_writes(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mock for the failure path only: the batch's commit fails. Its second enrolment was refused (409) against the
    key its first bound; both rolled back, so neither answer may stand: both 503, nothing bound, and the 409's box
    can enrol after."""
    token = service.register("J30BAT01")
    real = store.enrolments

    @contextlib.contextmanager
    def failing_commit(db: object) -> Iterator[object]:
        with real(service.db) as enrol:
            yield enrol
            raise OperationalError("COMMIT", {}, Exception("disk full"))

    monkeypatch.setattr(store, "enrolments", failing_commit)
    keys = [public_b64(Ed25519PrivateKey.generate()) for _ in range(2)]
    batch = [Enrolling("J30BAT01", Enrolment(token=token, public_key=key), "x") for key in keys]
    outcomes = EnrolIntake(service.db, UnitLimits(enrol=GENEROUS, report=GENEROUS)).process(batch)
    assert all(isinstance(outcome, OperationalError) for outcome in outcomes)
    assert service.unit("J30BAT01").public_key is None
    monkeypatch.setattr(store, "enrolments", real)
    assert EnrolIntake(service.db, UnitLimits(enrol=GENEROUS, report=GENEROUS)).process(batch[1:]) == [True]


def test_a_refusal_that_cannot_be_told_apart_costs_only_itself(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mock for the failure path only: after the batch is committed, reading whether a refused report was a
    duplicate or a replay fails. That one answers 503 (it is not stored; the box sends it again); the others are
    stored and answered 201."""
    for serial in ("J30BAT01", "J30BAT02"):
        service.enrol(serial)
    intake = _intake(service)
    retried = _signed(service, "J30BAT01", 1)
    assert intake.process([retried]) == [1]

    def unreadable(*_args: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection lost"))

    monkeypatch.setattr(store, "_refused", unreadable)
    outcomes = intake.process([retried, _signed(service, "J30BAT02", 1)])
    assert isinstance(outcomes[0], OperationalError) and outcomes[1] == 1
    assert service.unit("J30BAT02").last_seq == 1


# --------------------------------------------------------------------------------------------- the Batcher


def test_batcher_answers_each_item_and_batches_what_queued() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def process(items: list[int]) -> list[int | BaseException]:
        gate.wait(5)  # the first batch waits until everything is queued: the rest must come as one batch
        sizes.append(len(items))
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(process, "test")

    async def main() -> list[object]:
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(10)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0, "odd 1", 20, "odd 3", 40, "odd 5", 60, "odd 7", 80, "odd 9"]  # fmt: skip
    assert sum(sizes) == 10 and len(sizes) <= 2 and sizes[-1] >= 9


def test_batcher_a_failing_batch_fails_each_of_its_items_and_the_thread_goes_on() -> None:
    calls = 0

    def process(items: list[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database gone")
        return [item.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(process, "test")

    async def main() -> tuple[object, str]:
        failed = await asyncio.gather(batcher.submit("a"), return_exceptions=True)
        return failed[0], await batcher.submit("b")

    try:
        failed, later = asyncio.run(main())
    finally:
        batcher.close()
    assert isinstance(failed, OSError) and later == "B"


def test_batcher_a_waiter_that_went_away_does_not_stop_the_others() -> None:
    gate = threading.Event()
    written: list[str] = []

    def process(items: list[str]) -> list[str]:
        gate.wait(5)
        written.extend(items)
        return items

    batcher: Batcher[str, str] = Batcher(process, "test")

    async def main() -> str:
        gone = asyncio.ensure_future(batcher.submit("gone"))  # its client disconnects while the batch is written
        await asyncio.sleep(0.05)
        gone.cancel()
        kept = asyncio.ensure_future(batcher.submit("kept"))
        await asyncio.sleep(0.05)
        gate.set()
        return await kept

    try:
        assert asyncio.run(main()) == "kept"
    finally:
        batcher.close()
    assert written == ["gone", "kept"]  # a write that began is not undone: the box's retry gets "duplicate"


def test_batcher_close_writes_what_is_queued_first() -> None:
    written: list[int] = []

    def process(items: list[int]) -> list[int]:
        written.extend(items)
        return items

    batcher: Batcher[int, int] = Batcher(process, "test")

    async def main() -> None:
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)  # all five queued
        await asyncio.to_thread(batcher.close)
        assert await asyncio.gather(*tasks) == [0, 1, 2, 3, 4]

    asyncio.run(main())
    assert written == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("wrong", [[], [1, 2, 3]])
def test_batcher_a_process_that_miscounts_fails_the_batch(wrong: list[int]) -> None:
    batcher: Batcher[int, int] = Batcher(lambda _items: list(wrong), "test")  # type: ignore[arg-type]
    try:
        result = asyncio.run(asyncio.wait_for(batcher.submit(1), 5))
    except RuntimeError as exc:
        result = exc  # type: ignore[assignment]
    finally:
        batcher.close()
    assert isinstance(result, RuntimeError) and "outcomes for 1 items" in str(result)
