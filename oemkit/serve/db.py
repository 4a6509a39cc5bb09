"""The database engine: SQLite by default, PostgreSQL through psycopg 3.

SQLite gets WAL (readers never wait for the writer), a busy timeout and foreign keys on every connection — they
are per-connection settings, so a pooled connection without them would silently skip the checks. A write on SQLite
takes the write lock when it begins (BEGIN IMMEDIATE): two writers then queue on the busy timeout, where a
deferred transaction that read first would fail when it tries to upgrade its lock. Within one process the writers
also take turns on a lock of ours first: SQLite's busy handler polls with sleeps of up to 100 ms, so threads that
queued on it were served out of order, seconds late, and past the busy timeout (503) under load; a Python lock wakes
the next writer as the last one commits; processes sharing the file (--workers N) take turns on a file lock beside it
(_Writers). The busy timeout still settles anything else that writes to the file.
PostgreSQL keeps READ COMMITTED; there the unique constraints and conditional updates in store.py decide races.

The hot paths (store.py: a report, an enrolment) use SQLAlchemy Core on connection(); the admin side uses ORM
sessions, read() and write(). The pool keeps as many connections as the service runs threads at once, so a busy
service reuses connections instead of opening one per request (PostgreSQL: a new server process each).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any, ClassVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 5000  # how long a SQLite writer waits for another before "database is locked"
CONNECT_TIMEOUT_S = 5  # PostgreSQL: a database that does not answer fails /healthz quickly instead of hanging it
WRITE = "oemkit_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
# PostgreSQL, the service's connections (not migrations): a statement stuck on a lock or a sick server fails (503)
# instead of holding its batch, and with it every report of that worker process, for ever. SQLite: BUSY_TIMEOUT_MS.
STATEMENT_TIMEOUT_MS = 30_000
POOL_SIZE = 8  # connections kept per worker process: one per admin thread (app.THREADS), shared with batch.py's
POOL_OVERFLOW = 10  # more, opened for a burst and closed after it (SQLAlchemy's default): a thread holds one at a time


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


def make_engine(url: str, *, statement_timeout_ms: int | None = None, **options: Any) -> Engine:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, **options)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "oemkit-serve"}
    engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, **options)
    if statement_timeout_ms is not None:
        # a SET on each new connection, not `options` in connect_args: that would replace an `options=` the --db URL
        # carries (a search_path, say) and PGOPTIONS, and a pooler may refuse the startup parameter
        event.listen(engine, "connect", partial(_pg_statement_timeout, statement_timeout_ms))
    return engine


def _pg_statement_timeout(ms: int, dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {int(ms)}")
    dbapi_connection.commit()  # psycopg opened a transaction for the SET: a session setting, kept past it


class _Writers:
    """SQLite: one writer at a time, in line (the module's docstring says why). Threads of this process wait on a
    lock, one per database file whichever Database opened it; processes sharing the file (--workers N) on an
    flock(2) of `<database>-writer` beside it, taken for each write, which the kernel hands on as it is released,
    where SQLite's busy handler polls. Reentrant: a write nested in another (none is today) would wait on SQLite's
    busy timeout, not deadlock here. When that file cannot be opened (no such folder, read-only) processes queue on
    SQLite's busy timeout alone, as they did, and SQLite says what is wrong."""

    _by_path: ClassVar[dict[str, _Writers]] = {}
    _made = threading.Lock()

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @classmethod
    def of(cls, database: str) -> _Writers:
        path = os.path.abspath(database) + "-writer"
        with cls._made:
            return cls._by_path.setdefault(path, cls(path))

    def __enter__(self) -> None:
        self._lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._depth == 1 and self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)  # releases the flock
        finally:
            self._depth -= 1
            self._lock.release()


class Database:
    """The engine and two kinds of transaction: read() and write(). Each commits at the end of its block, or rolls
    back when the block raises."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(
            url, statement_timeout_ms=STATEMENT_TIMEOUT_MS, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
        )
        self._write_engine = self.engine.execution_options(**{WRITE: True})
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(self._write_engine, expire_on_commit=False)
        self._writer = _Writers.of(self.engine.url.database or "") if self.backend == "sqlite" else None

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reads() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._turn(), self._writes() as session, session.begin():
            yield session

    @contextmanager
    def connection(self, *, write: bool = False) -> Iterator[Connection]:
        """A Core connection in one transaction (a write one when `write`), committed at the end of the block."""
        if write:
            with self._turn(), self._write_engine.begin() as connection:
                yield connection
        else:
            with self.engine.begin() as connection:
                yield connection

    def _turn(self) -> AbstractContextManager[Any]:
        return self._writer if self._writer is not None else nullcontext()

    def ping(self) -> None:
        """Raises when the database does not answer."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
