"""The database engine: SQLite by default, PostgreSQL through psycopg 3.

SQLite gets WAL (readers never wait for the writer), a busy timeout and foreign keys on every connection — they
are per-connection settings, so a pooled connection without them would silently skip the checks. A write on SQLite
takes the write lock when it begins (BEGIN IMMEDIATE): two writers then queue on the busy timeout, where a
deferred transaction that read first would fail when it tries to upgrade its lock. PostgreSQL keeps READ COMMITTED;
there the unique constraints and conditional updates in store.py decide races.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 5000  # how long a SQLite writer waits for another before "database is locked"
CONNECT_TIMEOUT_S = 5  # PostgreSQL: a database that does not answer fails /healthz quickly instead of hanging it
WRITE = "oemkit_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class DatabaseUrlError(ValueError):
    """A --db URL we cannot use; the message says what would work."""


def normalise_url(url: str) -> URL:
    """SQLite (a file) or PostgreSQL, the latter always through psycopg 3 (`postgresql://` means that too)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError("not a database URL: use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and parsed.get_driver_name() == "pysqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise DatabaseUrlError(
                "SQLite needs a file (sqlite:///FILE): an in-memory database vanishes with the process"
            )
        return parsed
    raise DatabaseUrlError(f"unsupported database {parsed.drivername!r}: use sqlite:///FILE or postgresql+psycopg://…")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver's own implicit BEGIN is deferred: we send ours (below)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, **options: Any) -> Engine:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, **options)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "oemkit-serve"}
    return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, **options)


class Database:
    """The engine and two kinds of transaction: read() and write(). Each commits at the end of its block, or rolls
    back when the block raises."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(self.engine.execution_options(**{WRITE: True}), expire_on_commit=False)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reads() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._writes() as session, session.begin():
            yield session

    def ping(self) -> None:
        """Raises when the database does not answer."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
