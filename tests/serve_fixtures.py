"""The provisioning service's fixtures (tests/test_serve_*.py load them with `pytest_plugins`): every service test
runs on a SQLite file and on PostgreSQL, each test on a database of its own (tests/serve_support.py says how the
PostgreSQL server is found or started)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_support import PG_VARS, PgServer, Service, reset, running, start_pg_virtualenv, stop


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    if all(os.environ.get(v) for v in PG_VARS[:3]):
        yield PgServer({k: v for k, v in os.environ.items() if k.startswith("PG")})
        return
    if shutil.which("pg_virtualenv") is None:
        pytest.skip("PostgreSQL half of the service tests: no pg_virtualenv (install postgresql-common and "
                    "postgresql-15: bash scripts/setup.sh --dev), and PGHOST/PGPORT/PGUSER are not set")  # fmt: skip
    server = start_pg_virtualenv(tmp_path_factory.mktemp("pg"))
    try:
        yield server
    finally:
        assert server.process is not None
        stop(server.process)


@pytest.fixture(scope="module")
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A PostgreSQL database of this test module's, dropped after it."""
    with pg_server.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp_path, or the module's PostgreSQL database emptied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serve.db'}"
        return
    url: str = request.getfixturevalue("pg_database")
    reset(url)
    yield url


@pytest.fixture
def service(db_url: str) -> Iterator[Service]:
    """The service on a migrated, empty database, through starlette's TestClient (the real app, in process)."""
    with running(db_url) as svc:
        yield svc
