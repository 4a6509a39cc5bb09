"""The tables: a unit (what the factory registered, its enrolment, its current state) and its reports.

The unit row carries the current state, updated in the same transaction that stores a report, so the fleet page
is one scan of `units` joined to each unit's last report by (unit, seq). Uniqueness is the database's job: a serial
once, a report id once per unit, a sequence number once per unit — concurrent duplicates then fail on a constraint
instead of being stored twice. Every length here bounds a field in schemas.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Lengths, shared with the API's bounds (schemas.py)
SERIAL_LEN, NAME_LEN, CONTENT_ID_LEN, CORE_ID_LEN, HEX64 = 32, 64, 80, 128, 64
BRAND_LEN, URL_LEN, STEP_ID_LEN, AGENT_LEN, REPORT_ID_LEN = 64, 512, 200, 64, 32
REASON_LEN = 4096
REPORTED_ID_LEN = 200  # a content id as the box reports it: whatever its report.json said, bounded
STATES = ("registered", "enrolled", "READY", "FAILED")

# Named constraints: Alembic's batch mode on SQLite can only drop or alter a constraint it can name.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out on both databases (SQLite stores no offset: it is always UTC there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the service stores UTC only")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Unit(Base):
    __tablename__ = "units"
    __table_args__ = (
        UniqueConstraint("serial"),
        CheckConstraint("state IN ('registered', 'enrolled', 'READY', 'FAILED')", name="state"),
        CheckConstraint("last_seq >= 0", name="last_seq"),
        Index(None, "site"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(SERIAL_LEN))
    # What the factory registered (POST /v1/units); replaced by a re-registration until the unit enrols
    model: Mapped[str] = mapped_column(String(NAME_LEN))
    site: Mapped[str] = mapped_column(String(NAME_LEN))
    profile: Mapped[str] = mapped_column(String(NAME_LEN))
    content_id: Mapped[str] = mapped_column(String(CONTENT_ID_LEN))
    core_id: Mapped[str] = mapped_column(String(CORE_ID_LEN))
    pcr15_expected: Mapped[str] = mapped_column(String(HEX64))
    oem_name: Mapped[str] = mapped_column(String(BRAND_LEN))
    product: Mapped[str] = mapped_column(String(BRAND_LEN))
    support_url: Mapped[str | None] = mapped_column(String(URL_LEN))
    registered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Enrolment: the token's SHA-256 until it is used; then cleared, the burned one kept only to recognise the box
    # retrying with it, and the unit's Ed25519 public key (32 raw bytes) bound
    token_sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    burned_token_sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    enrolled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Current state: its last report's, written with that report
    state: Mapped[str] = mapped_column(String(16), default="registered")
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("unit_id", "report_id"),  # an idempotency key counts once per unit
        UniqueConstraint("unit_id", "seq"),  # a sequence number counts once per unit
        CheckConstraint("status IN ('READY', 'FAILED')", name="status"),
        CheckConstraint("seq > 0", name="seq"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    report_id: Mapped[str] = mapped_column(String(REPORT_ID_LEN))  # the report's "id", the box's idempotency key
    status: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    fault: Mapped[str | None] = mapped_column(String(16))
    failed_step: Mapped[str | None] = mapped_column(String(STEP_ID_LEN))
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    bank: Mapped[str | None] = mapped_column(String(1))
    pcr15: Mapped[str | None] = mapped_column(String(HEX64))
    core_id: Mapped[str | None] = mapped_column(String(CORE_ID_LEN))
    content_id: Mapped[str | None] = mapped_column(String(REPORTED_ID_LEN))
    agent: Mapped[str] = mapped_column(String(AGENT_LEN))
    origin: Mapped[str] = mapped_column(String(8))
    made_at: Mapped[float] = mapped_column(Double)  # the box's clock, as sent: shown, never trusted for ordering
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
