"""What the admin endpoints and the fleet page read: a unit with its last reports, and the fleet per site. A unit's
last report is the one whose sequence is the unit's last_seq (stored in the same transaction), so the fleet is one
query, however many reports there are."""

from __future__ import annotations

import base64
from collections import Counter

from sqlalchemy import and_, select

from hypervisor_core.config.signing import key_id
from oemkit.serve.db import Database
from oemkit.serve.models import STATES, Report, Unit
from oemkit.serve.schemas import BrandingOut, Fleet, ReportOut, Site, Step, UnitDetail, UnitOut


def report_out(row: Report) -> ReportOut:
    return ReportOut(
        seq=row.seq,
        id=row.report_id,
        status=row.status,
        reason=row.reason,
        fault=row.fault,
        failed_step=row.failed_step,
        steps=[Step.model_validate(step) for step in row.steps],
        bank=row.bank,
        pcr15=row.pcr15,
        core_id=row.core_id,
        content_id=row.content_id,
        agent=row.agent,
        origin=row.origin,
        made_at=row.made_at,
        received_at=row.received_at,
    )


def unit_out(unit: Unit, last: Report | None) -> UnitOut:
    mismatch = None if last is None or last.pcr15 is None else last.pcr15 != unit.pcr15_expected
    return UnitOut(
        serial=unit.serial,
        model=unit.model,
        site=unit.site,
        profile=unit.profile,
        content_id=unit.content_id,
        core_id=unit.core_id,
        pcr15_expected=unit.pcr15_expected,
        branding=BrandingOut(oem_name=unit.oem_name, product=unit.product, support_url=unit.support_url),
        registered_at=unit.registered_at,
        enrolled=unit.public_key is not None,
        enrolled_at=unit.enrolled_at,
        key_id=key_id(unit.public_key) if unit.public_key is not None else None,
        public_key=base64.b64encode(unit.public_key).decode() if unit.public_key is not None else None,
        state=unit.state,  # the column's CHECK constraint holds it to STATES
        last_seq=unit.last_seq,
        last_seen_at=unit.last_seen_at,
        last_report=report_out(last) if last is not None else None,
        pcr15_mismatch=mismatch,
    )


def unit_detail(db: Database, serial: str, limit: int) -> UnitDetail | None:
    with db.read() as session:
        unit = session.scalar(select(Unit).where(Unit.serial == serial))
        if unit is None:
            return None
        reports = session.scalars(
            select(Report).where(Report.unit_id == unit.id).order_by(Report.seq.desc()).limit(limit)
        ).all()
    last = reports[0] if reports and reports[0].seq == unit.last_seq else None
    summary = unit_out(unit, last)
    return UnitDetail(**summary.model_dump(), reports=[report_out(r) for r in reports])


def _counts(units: list[UnitOut]) -> dict[str, int]:
    counted = Counter[str](u.state for u in units)
    return {state: counted[state] for state in STATES}


def fleet(db: Database) -> Fleet:
    last = and_(Report.unit_id == Unit.id, Report.seq == Unit.last_seq)
    with db.read() as session:
        rows = session.execute(select(Unit, Report).outerjoin(Report, last).order_by(Unit.site, Unit.serial)).all()
    by_site: dict[str, list[UnitOut]] = {}
    for unit, report in rows:
        by_site.setdefault(unit.site, []).append(unit_out(unit, report))
    sites = [Site(site=site, counts=_counts(units), units=units) for site, units in by_site.items()]
    return Fleet(counts=_counts([u for s in sites for u in s.units]), sites=sites)
