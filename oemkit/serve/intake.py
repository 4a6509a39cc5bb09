"""The box's two requests' way in, each through a Batcher (batch.py) of its own.

A report: the unit's key, the signature over the raw bytes, the unit's rate, the parsed body, then the database. The
batch thread runs `ReportIntake.process`: the keys of the whole batch in one query, each report checked on its own
(a refusal is that report's answer alone), the accepted ones stored in one transaction (store.receive_many).
An enrolment: its batch in one transaction, each in a savepoint (store.enrolments). The rate limits of refused
requests are checked again in the batch thread, each counted before the next is judged: on arrival alone, every
request queued meanwhile would have passed before any was counted."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from oemkit.serve import errors, signing, store
from oemkit.serve.batch import Batcher
from oemkit.serve.db import Database
from oemkit.serve.errors import ApiError
from oemkit.serve.ratelimit import UnitLimits
from oemkit.serve.schemas import Enrolment, Report


@dataclass(frozen=True)
class Incoming:
    """A report as it arrived: the serial in its path, the raw body, the signature header, the client's address."""

    serial: str
    body: bytes
    signature: str | None
    client: str


def parse_report(body: bytes) -> Report:
    """A verified body as a Report. Python's JSON parser keeps a lone surrogate escape (a box's error message may carry
    one, from an undecodable file name), which the schema then salvages; pydantic's own parser would refuse the whole
    report for it."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise errors.invalid([{"loc": ["body"], "msg": "JSON nested too deeply", "type": "json_invalid"}]) from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer past Python's digit limit
        if isinstance(exc, json.JSONDecodeError):
            msg = f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        elif isinstance(exc, UnicodeDecodeError):
            msg = "the body is not UTF-8"
        else:
            msg = f"Invalid JSON: {exc}"
        raise errors.invalid([{"loc": ["body"], "msg": msg, "type": "json_invalid"}]) from None
    try:
        return Report.model_validate(data)
    except ValidationError as exc:
        raise errors.invalid_body(exc) from None


class ReportIntake:
    def __init__(self, db: Database, limits: UnitLimits) -> None:
        self._db = db
        self._limits = limits
        self._batcher: Batcher[Incoming, int] = Batcher(self.process, "oemkit-reports")

    async def submit(self, incoming: Incoming) -> int:
        """The stored report's sequence number; raises the ApiError the contract answers otherwise."""
        self._limits.refused_before("report", incoming.serial, incoming.client)  # before any work for a prober
        return await self._batcher.submit(incoming)

    def close(self) -> None:
        self._batcher.close()

    def process(self, batch: list[Incoming]) -> list[int | BaseException]:
        outcomes: list[int | BaseException | None] = [None] * len(batch)
        positions: list[int] = []  # where in the batch each accepted report is

        def accept_all(keys: dict[str, store.Enrolled]) -> list[tuple[int, Report]]:
            accepted = []
            for at, incoming in enumerate(batch):
                unit = keys.get(incoming.serial)
                try:
                    report = self.accept(incoming, unit)
                except ApiError as exc:
                    outcomes[at] = exc
                    continue
                assert unit is not None  # accept() refuses a unit that has not enrolled
                accepted.append((unit.unit_id, report))
                positions.append(at)
            return accepted

        try:
            stored = store.receive_many(self._db, {incoming.serial for incoming in batch}, accept_all)
        except Exception as exc:  # the database failed the batch (503): the reports refused before it keep their answer
            return [outcome if outcome is not None else exc for outcome in outcomes]
        for at, outcome in zip(positions, stored, strict=True):
            outcomes[at] = outcome
        return [outcome if outcome is not None else RuntimeError("no outcome") for outcome in outcomes]

    def accept(self, incoming: Incoming, unit: store.Enrolled | None) -> Report:
        """The report, verified and parsed, or the refusal: 403 not enrolled, 401 bad signature, 429 over the unit's
        rate, 422 not a report or not this unit's. Only a verified report counts against the unit's rate; the
        refusals before it count against the sender's address (ratelimit.py)."""
        serial, client, limits = incoming.serial, incoming.client, self._limits
        # again here, not only on arrival: every report queued meanwhile passed that check before any was counted,
        # and the batch thread (one a process) counts each refusal before it judges the next
        limits.refused_before("report", serial, client)
        if unit is None:
            limits.refused("report", serial, client)
            raise ApiError(403, "not_enrolled", "the unit has not enrolled")
        signature = signing.signature(incoming.signature)
        if signature is None or not signing.verify(unit.public_key, signature, incoming.body):
            limits.refused("report", serial, client)
            raise ApiError(401, "bad_signature", f"{signing.HEADER} is missing or does not verify with the unit key")
        limits.hit("report", serial)  # signed by the unit: its own budget
        report = parse_report(incoming.body)
        if report.serial != serial:
            raise ApiError(422, "serial_mismatch", "the report's serial is not the one in the path")
        return report


@dataclass(frozen=True)
class Enrolling:
    serial: str
    body: Enrolment
    client: str


class EnrolIntake:
    def __init__(self, db: Database, limits: UnitLimits) -> None:
        self._db = db
        self._limits = limits
        self._batcher: Batcher[Enrolling, bool] = Batcher(self.process, "oemkit-enrolments")

    async def submit(self, serial: str, body: Enrolment, client: str) -> bool:
        """True: the key is bound now; False: it was already (the same key again). Raises the contract's refusal."""
        self._limits.refused_before("enrol", serial, client)  # before any work for a prober
        return await self._batcher.submit(Enrolling(serial, body, client))

    def close(self) -> None:
        self._batcher.close()

    def process(self, batch: list[Enrolling]) -> list[bool | BaseException]:
        """One transaction, in serial order (store.enrolments). A wrong token or another key (403, 409) counts against
        the sender's address, never the unit's rate, and is counted before the next enrolment is judged; the token
        holder's retries (the same key) are the unit's own."""
        outcomes: list[bool | BaseException | None] = [None] * len(batch)
        limits = self._limits
        try:
            with store.enrolments(self._db) as enrol:
                for at in sorted(range(len(batch)), key=lambda i: batch[i].serial):
                    item = batch[at]
                    try:
                        limits.refused_before("enrol", item.serial, item.client)
                        try:
                            bound = enrol(item.serial, item.body)
                        except ApiError as exc:
                            if exc.status in (403, 409):
                                limits.refused("enrol", item.serial, item.client)
                            raise
                        limits.hit("enrol", item.serial)
                        outcomes[at] = bound
                    except ApiError as exc:
                        outcomes[at] = exc
        except Exception as exc:  # the database failed the batch (503): nothing of it is stored, and its 403s and
            # 409s were judged against what it had bound, now rolled back: only the 429s decided before it stand
            return [outcome if isinstance(outcome, ApiError) and outcome.status == 429 else exc for outcome in outcomes]
        return [outcome if outcome is not None else RuntimeError("no outcome") for outcome in outcomes]
