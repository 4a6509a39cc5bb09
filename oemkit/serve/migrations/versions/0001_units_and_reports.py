"""Units and their reports: the first schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen: a migration spells its types out instead of importing the models, which will have moved on.
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("content_id", sa.String(length=80), nullable=False),
        sa.Column("core_id", sa.String(length=128), nullable=False),
        sa.Column("pcr15_expected", sa.String(length=64), nullable=False),
        sa.Column("oem_name", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=64), nullable=False),
        sa.Column("support_url", sa.String(length=512), nullable=True),
        sa.Column("registered_at", UTC, nullable=False),
        sa.Column("token_sha256", sa.LargeBinary(length=32), nullable=True),
        sa.Column("burned_token_sha256", sa.LargeBinary(length=32), nullable=True),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("enrolled_at", UTC, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", UTC, nullable=True),
        sa.CheckConstraint("state IN ('registered', 'enrolled', 'READY', 'FAILED')", name=op.f("ck_units_state")),
        sa.CheckConstraint("last_seq >= 0", name=op.f("ck_units_last_seq")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
        sa.UniqueConstraint("serial", name=op.f("uq_units_serial")),
    )
    with op.batch_alter_table("units") as batch_op:
        batch_op.create_index(batch_op.f("ix_units_site"), ["site"], unique=False)

    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("report_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("fault", sa.String(length=16), nullable=True),
        sa.Column("failed_step", sa.String(length=200), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("bank", sa.String(length=1), nullable=True),
        sa.Column("pcr15", sa.String(length=64), nullable=True),
        sa.Column("core_id", sa.String(length=128), nullable=True),
        sa.Column("content_id", sa.String(length=200), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("made_at", sa.Double(), nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.CheckConstraint("status IN ('READY', 'FAILED')", name=op.f("ck_reports_status")),
        sa.CheckConstraint("seq > 0", name=op.f("ck_reports_seq")),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name=op.f("fk_reports_unit_id_units"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("unit_id", "report_id", name=op.f("uq_reports_unit_id_report_id")),
        sa.UniqueConstraint("unit_id", "seq", name=op.f("uq_reports_unit_id_seq")),
    )


def downgrade() -> None:
    op.drop_table("reports")
    with op.batch_alter_table("units") as batch_op:
        batch_op.drop_index(batch_op.f("ix_units_site"))
    op.drop_table("units")
