"""Alembic's environment for the service's own schema. The URL comes from the caller (migrate.py puts it in
config.attributes; an alembic.ini would not interpolate it), and the engine is db.make_engine's, so migrations run
with the same connection settings as the service. Batch mode lets one migration alter tables on SQLite too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from oemkit.serve.db import WRITE, make_engine
from oemkit.serve.models import Base

MIGRATION_LOCK = 0x6F656D6B  # PostgreSQL advisory lock id: two services starting at once migrate one after the other


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
    )


def run_online() -> None:
    config = context.config
    engine = make_engine(config.attributes["url"])
    try:
        with engine.connect().execution_options(**{WRITE: True}) as connection:  # SQLite: BEGIN IMMEDIATE
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # A batch migration copies a table and drops the old one; with foreign keys on, that drop would
                # cascade into the rows referencing it. The pragma is ignored inside a transaction: set it first.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            _configure(connection)
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
                context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                connection.rollback()
                if broken:
                    raise RuntimeError(f"the migration left rows whose foreign key points nowhere: {broken[:5]}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against the database")
run_online()
