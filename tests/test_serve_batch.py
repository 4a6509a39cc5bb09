"""Reports go in by batch (oemkit/serve/batch.py, intake.py): one thread per process writes whatever queued while it
wrote the last batch, in one transaction. These tests hand ReportIntake.process whole batches (so what is in one batch
is certain, not a matter of timing) on SQLite and PostgreSQL, with real signatures: each report gets its own answer,
a refused one costs the others nothing, and a duplicate or an old sequence number inside a batch is told apart exactly
as it is when reports come one by one. Then the Batcher's own contract, and many reports at once through the app."""

from __future__ import annotations

import asyncio
import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event

from oemkit.serve import store
from oemkit.serve.batch import MAX_BATCH, Batcher
from oemkit.serve.errors import ApiError
from oemkit.serve.intake import Incoming, ReportIntake
from oemkit.serve.models import Report
from oemkit.serve.ratelimit import UnitLimits
from oemkit.serve.schemas import Enrolment
from tests.serve_support import GENEROUS, Service, encode, public_b64, report_body, sign

pytest_plugins = ["tests.serve_fixtures"]


def _intake(service: Service) -> ReportIntake:
    return ReportIntake(service.db, UnitLimits(enrol=GENEROUS, report=GENEROUS))


def _signed(service: Service, path: str, seq: int, *, signer: str | None = None, about: str | None = None) -> Incoming:
    """A report posted to `path`'s serial, about `about` (that same unit by default), signed by `signer`'s key."""
    raw = encode(report_body(about or path, seq))
    return Incoming(path, raw, sign(service.keys[signer or path], raw), "127.0.0.1")


def _answers(outcomes: list[int | BaseException]) -> list[int | bool | str]:
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


def test_sequence_numbers_in_one_batch_follow_the_rules_in_arrival_order(service: Service) -> None:
    for serial in ("J30BAT01", "J30BAT02"):
        service.enrol(serial)
    intake = _intake(service)
    ascending = [_signed(service, "J30BAT01", seq) for seq in (1, 2, 3)]
    assert intake.process(ascending) == [1, 2, 3]  # a spool sent at once: all of it, one transaction
    batch = [_signed(service, "J30BAT01", 5), _signed(service, "J30BAT01", 4), _signed(service, "J30BAT02", 1)]
    outcomes = intake.process(batch)
    assert _answers(outcomes) == [5, "replay", 1]  # 4 came after 5: not above the unit's last
    assert isinstance(outcomes[1], ApiError) and outcomes[1].extra == {"last_seq": 5}
    assert [r.seq for r in service.reports("J30BAT01")] == [1, 2, 3, 5]
    assert service.unit("J30BAT01").last_seq == 5 and service.unit("J30BAT02").last_seq == 1


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


def test_batches_written_at_once_in_any_order_never_deadlock(service: Service) -> None:
    """With --workers N, N processes write batches at once (each has its batch thread): batches holding the same units
    in other orders must not take their row locks in other orders (on PostgreSQL, a deadlock: every report of both
    batches 503). Four threads here, each with a batch of the same 64 units in another order."""
    serials = [f"J30BAT{n:03d}" for n in range(MAX_BATCH)]
    for serial in serials:
        service.enrol(serial)
    intake = _intake(service)
    batches = []
    for k in range(4):
        order = serials[k * 16 :] + serials[: k * 16]
        batches.append([_signed(service, s, k + 1) for s in (order if k % 2 else order[::-1])])
    barrier = threading.Barrier(len(batches))

    def write(batch: list[Incoming]) -> list[int | BaseException]:
        barrier.wait()
        return intake.process(batch)

    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(write, batches))
    answers = [a for outcomes in results for a in _answers(outcomes)]
    assert set(answers) <= {1, 2, 3, 4, "replay"}  # an older sequence may lose to a newer one, nothing else
    for serial in serials:
        stored = [r.seq for r in service.reports(serial)]
        assert stored and service.unit(serial).last_seq == max(stored)


def test_enrolments_in_one_batch_each_get_their_answer_and_a_refusal_undoes_only_itself(service: Service) -> None:
    tokens = {serial: service.register(serial) for serial in ("J30BAT01", "J30BAT02", "J30BAT03")}
    keys = [public_b64(Ed25519PrivateKey.generate()) for _ in range(3)]
    batch = [
        ("J30BAT01", Enrolment(token=tokens["J30BAT01"], public_key=keys[0])),
        ("J30BAT02", Enrolment(token=tokens["J30BAT03"], public_key=keys[1])),  # another unit's token
        ("J30BAT01", Enrolment(token=tokens["J30BAT01"], public_key=keys[0])),  # the box's retry: nothing changes
        ("J30BAT01", Enrolment(token=tokens["J30BAT01"], public_key=keys[2])),  # the same token, another key
        ("J30BATXX", Enrolment(token=tokens["J30BAT01"], public_key=keys[2])),  # no such unit
        ("J30BAT03", Enrolment(token=tokens["J30BAT03"], public_key=keys[1])),
    ]
    before = service.unit("J30BAT02")
    outcomes = store.enrol_many(service.db, batch)
    assert _answers(outcomes) == [True, "bad_token", False, "already_enrolled", "bad_token", True]  # type: ignore[arg-type]
    assert service.unit("J30BAT01").public_key == base64.b64decode(keys[0])
    assert service.unit("J30BAT03").public_key == base64.b64decode(keys[1])
    after = service.unit("J30BAT02")
    assert (after.public_key, after.token_sha256, after.state) == (None, before.token_sha256, "registered")


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
