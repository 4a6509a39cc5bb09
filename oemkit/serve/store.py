"""What each box or factory request does to the database: register, enrol, store reports. Each is one transaction; a
transaction of enrolments or reports holds a batch of them (batch.py, intake.py), each enrolment in a savepoint; the
reports go in whole or, when one is a duplicate or an old sequence number, again one by one in savepoints.

Races are settled by the database, not by reading first: a report is inserted and the unit's sequence moved forward
only if it is still below the report's (`UPDATE … WHERE last_seq < seq`); a duplicate id or sequence number fails on
its unique constraint (IntegrityError), and is then told apart by reading what is there. So two copies of one
report sent at once store one row and answer the other 409, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from oemkit.serve.db import Database
from oemkit.serve.errors import ApiError
from oemkit.serve.models import Report, Unit, utcnow
from oemkit.serve.schemas import Enrolment, Registration, b64decode
from oemkit.serve.schemas import Report as ReportIn

_NO_TOKEN = bytes(32)  # compared against when there is no token, so an unknown serial costs the same work

# The box's requests (enrol, report) run on SQLAlchemy Core with statements built once: through ORM sessions a report
# cost the service 2.5-3.7 ms of CPU against 1.5 (docs/benchmarks.md, "Provisioning service"). The admin side keeps
# the ORM.
UNITS, REPORTS = cast(Table, Unit.__table__), cast(Table, Report.__table__)
_UNIT_KEYS = select(UNITS.c.id, UNITS.c.serial, UNITS.c.public_key).where(
    UNITS.c.serial.in_(bindparam("serials", expanding=True))
)
_UNIT_TOKENS = select(UNITS.c.id, UNITS.c.token_sha256, UNITS.c.burned_token_sha256, UNITS.c.public_key).where(
    UNITS.c.serial == bindparam("serial")
)
_INSERT_REPORT = insert(REPORTS)
_MOVE_UNIT = (
    update(UNITS)
    .where(UNITS.c.id == bindparam("unit"), UNITS.c.last_seq < bindparam("seq"))
    .values(last_seq=bindparam("seq"), state=bindparam("status"), last_seen_at=bindparam("now"))
)
_SEEN = select(REPORTS.c.id).where(REPORTS.c.unit_id == bindparam("unit"), REPORTS.c.report_id == bindparam("id"))
_LAST_SEQ = select(UNITS.c.last_seq).where(UNITS.c.id == bindparam("unit"))

# A unit keeps its last KEEP_REPORTS reports (pruned every PRUNE_EVERY): far more than any box retries or the fleet
# shows, and a bound on what one enrolled key can make the service store.
KEEP_REPORTS, PRUNE_EVERY = 1000, 100


def _bad_token() -> ApiError:
    # one answer for a wrong token, another unit's token and an unknown serial: serials cannot be probed
    return ApiError(403, "bad_token", "the enrolment token is not valid for this unit")


def _already_enrolled() -> ApiError:
    return ApiError(409, "already_enrolled", "the unit is enrolled with another key")


def token_matches(stored: bytes | None, token: str) -> bool:
    """Constant-time: the token's SHA-256 against the stored one. The contract leaves open whether the factory hashed
    the 43-character token or the 32 bytes it encodes; both are accepted (both are hashes of the same secret)."""
    reference = stored or _NO_TOKEN
    as_text = hmac.compare_digest(hashlib.sha256(token.encode("ascii")).digest(), reference)
    as_bytes = hmac.compare_digest(hashlib.sha256(b64decode(token)).digest(), reference)
    return (as_text | as_bytes) and stored is not None


# --------------------------------------------------------------------------------------------- register


def register(db: Database, reg: Registration) -> tuple[Unit, bool]:
    """The unit registered (True) or, while it has not enrolled, registered again (False); 409 once enrolled."""
    now = utcnow()
    values = {
        "model": reg.model,
        "site": reg.site,
        "profile": reg.profile,
        "content_id": reg.content_id,
        "core_id": reg.core_id,
        "pcr15_expected": reg.pcr15_expected,
        "oem_name": reg.branding.oem_name,
        "product": reg.branding.product,
        "support_url": reg.branding.support_url,
        "token_sha256": bytes.fromhex(reg.token_sha256),
        "registered_at": now,
    }
    for _attempt in range(2):  # a second try when another registration of the serial won the insert
        try:
            with db.write() as session:
                unit = session.scalar(select(Unit).where(Unit.serial == reg.serial))
                if unit is None:
                    unit = Unit(serial=reg.serial, state="registered", last_seq=0, **values)
                    session.add(unit)
                    session.flush()
                    return unit, True
                if unit.public_key is not None:
                    raise ApiError(409, "already_enrolled", "the unit has enrolled: it cannot be registered again")
                replaced = session.execute(
                    update(Unit).where(Unit.id == unit.id, Unit.public_key.is_(None)).values(**values)
                )
                if replaced.rowcount != 1:  # type: ignore[attr-defined]
                    raise ApiError(409, "already_enrolled", "the unit has enrolled: it cannot be registered again")
                session.refresh(unit)
                return unit, False
        except IntegrityError:
            continue
    raise ApiError(409, "conflict", "the unit was registered by another request at the same time; try again")


# --------------------------------------------------------------------------------------------- enrol


def enrol(db: Database, serial: str, body: Enrolment) -> bool:
    """One enrolment, a batch of one (enrolments): bind the unit key and burn the token (True); the same key again:
    nothing changes (False); or the refusal raised."""
    with enrolments(db) as enrol_one:
        return enrol_one(serial, body)


@contextmanager
def enrolments(db: Database) -> Iterator[Callable[[str, Enrolment], bool]]:
    """One transaction for a batch of enrolments (intake.py). The function it gives enrols one — True: bound now,
    False: the same key again — in a savepoint of its own, so a refusal (the ApiError it raises: 403, 409) undoes
    only itself. The caller goes in serial order, so that two processes' batches lock units' rows in one order."""
    with db.connection(write=True) as connection:

        def enrol_one(serial: str, body: Enrolment) -> bool:
            with connection.begin_nested():
                return _enrol(connection, serial, body)

        yield enrol_one


def _enrol(connection: Connection, serial: str, body: Enrolment) -> bool:
    key = b64decode(body.public_key)
    unit = connection.execute(_UNIT_TOKENS, {"serial": serial}).first()
    if unit is None:
        token_matches(None, body.token)  # the same work as for a known serial
        raise _bad_token()
    if unit.public_key is None:
        if not token_matches(unit.token_sha256, body.token):
            raise _bad_token()
        now = utcnow()
        bound = connection.execute(
            update(UNITS)
            .where(UNITS.c.id == unit.id, UNITS.c.public_key.is_(None), UNITS.c.token_sha256 == unit.token_sha256)
            .values(
                public_key=key,
                token_sha256=None,
                burned_token_sha256=unit.token_sha256,
                enrolled_at=now,
                last_seen_at=now,
                state="enrolled",
            )
        )
        if bound.rowcount == 1:
            return True
        unit = connection.execute(_UNIT_TOKENS, {"serial": serial}).first()  # another enrolment won: judge
        if unit is None:  # this one against it (the row cannot go away: there is no endpoint that deletes)
            raise _bad_token()
    if not token_matches(unit.burned_token_sha256, body.token):
        raise _bad_token()
    if unit.public_key == key:
        return False
    raise _already_enrolled()


# --------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Enrolled:
    unit_id: int
    public_key: bytes


def _keys(connection: Connection, serials: Collection[str]) -> dict[str, Enrolled]:
    rows = connection.execute(_UNIT_KEYS, {"serials": list(serials)}).all()
    return {row.serial: Enrolled(row.id, row.public_key) for row in rows if row.public_key is not None}


class _Replay(Exception):
    pass


def submit(db: Database, unit_id: int, report: ReportIn) -> int:
    """One verified report, a batch of one (receive_many): stored and its status made the unit's; or 409 duplicate
    or replay raised, and nothing stored."""
    outcome = receive_many(db, (), lambda _keys: [(unit_id, report)])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


Accept = Callable[[dict[str, Enrolled]], Sequence[tuple[int, ReportIn]]]


def receive_many(db: Database, serials: Collection[str], accept: Accept) -> list[int | Exception]:
    """A batch of reports for `serials`. `accept` gets the keys of those that have enrolled (a serial unknown or not
    enrolled is absent: 403, either way), checks each report and returns those it accepted, (unit id, report); they
    are stored in one transaction, and their answers returned in that order: each one's sequence number, or its 409.
    Retries and replays are rare, so the batch is written whole first (one INSERT, one UPDATE); when any of it is a
    duplicate or an old sequence number, that rolls back and the batch is written again report by report, each in a
    savepoint (still one transaction), so only those are refused. A unit's reports go in by sequence number.

    On PostgreSQL the keys are read in the same transaction (a connection, a ping and a commit fewer); on SQLite
    before it, so the write lock is held for the writes only. A bound key never changes: either is as good."""
    accepted: Sequence[tuple[int, ReportIn]] = []
    try:
        if db.backend == "sqlite":
            with db.connection() as connection:
                keys = _keys(connection, serials)
            accepted = accept(keys)
            if accepted:
                with db.connection(write=True) as connection:
                    _store(connection, accepted, utcnow())
        else:
            with db.connection(write=True) as connection:
                accepted = accept(_keys(connection, serials))
                if accepted:
                    _store(connection, accepted, utcnow())
    except (IntegrityError, _Replay):
        return _one_by_one(db, accepted)
    return [report.seq for _unit_id, report in accepted]


def _one_by_one(db: Database, accepted: Sequence[tuple[int, ReportIn]]) -> list[int | Exception]:
    outcomes: list[int | Exception] = [report.seq for _unit_id, report in accepted]
    refused = []
    now = utcnow()
    with db.connection(write=True) as connection:
        for at in sorted(range(len(accepted)), key=lambda i: _lock_order(accepted[i])):
            try:
                with connection.begin_nested():
                    _store(connection, [accepted[at]], now)
            except (IntegrityError, _Replay):
                refused.append(at)
    for at in refused:  # after the commit: told apart by what is stored now
        try:
            _refused(db, *accepted[at])
        except ApiError as exc:
            outcomes[at] = exc
        except SQLAlchemyError as exc:  # it could not be read: this one answers 503 (it is not stored, the box sends
            outcomes[at] = exc  # it again), the others of the batch are stored and keep their answers
    return outcomes


def _lock_order(item: tuple[int, ReportIn]) -> tuple[int, int]:
    # by unit, then sequence number: every batch, in every process, takes the units' row locks and the unique index
    # entries in one order, so batches written at once on PostgreSQL wait for each other instead of deadlocking
    return item[0], item[1].seq


def _row(unit_id: int, report: ReportIn, now: dt.datetime) -> dict[str, object]:
    return {
        "unit_id": unit_id,
        "seq": report.seq,
        "report_id": report.id,
        "status": report.status,
        "reason": report.reason,
        "fault": report.fault,
        "failed_step": report.failed_step,
        "steps": [step.model_dump() for step in report.steps],
        "bank": report.bank,
        "pcr15": report.pcr15,
        "core_id": report.core_id,
        "content_id": report.content_id,
        "agent": report.agent,
        "origin": report.origin,
        "made_at": report.made_at,
        "received_at": now,
    }


def _store(connection: Connection, reports: Sequence[tuple[int, ReportIn]], now: dt.datetime) -> None:
    # one INSERT and one UPDATE for the lot (executemany); a duplicate id, or a sequence number already stored, fails
    # the INSERT; a unit whose last sequence is not below a report's moves one row fewer than there are reports.
    reports = sorted(reports, key=_lock_order)
    connection.execute(_INSERT_REPORT, [_row(unit_id, report, now) for unit_id, report in reports])
    moves = [{"unit": unit_id, "seq": r.seq, "status": r.status, "now": now} for unit_id, r in reports]
    moved = connection.execute(_MOVE_UNIT, moves)
    if moved.rowcount != len(moves):
        raise _Replay
    for unit_id, report in reports:
        if report.seq % PRUNE_EVERY == 0:  # bounded: an enrolled key cannot grow the table without end
            connection.execute(
                delete(REPORTS).where(REPORTS.c.unit_id == unit_id, REPORTS.c.seq <= report.seq - KEEP_REPORTS)
            )


def _refused(db: Database, unit_id: int, report: ReportIn) -> NoReturn:
    """Refused: was it this very report again (the box retrying after a lost answer), or an old sequence number?"""
    with db.connection() as connection:
        seen = connection.execute(_SEEN, {"unit": unit_id, "id": report.id}).scalar()
        last_seq = connection.execute(_LAST_SEQ, {"unit": unit_id}).scalar() or 0
    if seen is not None:
        raise ApiError(409, "duplicate", "this report was already received; it counts as delivered")
    raise ApiError(
        409, "replay", f"sequence {report.seq} is not above the unit's last ({last_seq})", extra={"last_seq": last_seq}
    )
