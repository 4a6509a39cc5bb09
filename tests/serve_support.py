"""What the provisioning service's tests share: a PostgreSQL server for the session, the service on a database, and
the box's side of the contract (tokens, keys, signed reports). The fixtures are in tests/serve_fixtures.py.

PostgreSQL: the server in PGHOST/PGPORT/PGUSER/PGPASSWORD when they are set (`pg_virtualenv sh -c 'pytest …'`);
otherwise the session starts a throw-away cluster itself with `pg_virtualenv -t` (postgresql-common; -t: in a
temporary folder even as root, so it never touches the machine's clusters). pg_virtualenv runs a shell that writes
its environment to a file and then waits to read its standard input: pytest holds the other end of that pipe, and
closing it — at the end of the session, or by pytest dying — ends the shell, and pg_virtualenv drops the cluster.
Without pg_virtualenv the PostgreSQL half skips, saying why; any other failure to start is an error.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlalchemy import URL, func, make_url, select, text

from oemkit.serve import migrate
from oemkit.serve.app import create_app
from oemkit.serve.db import Database
from oemkit.serve.models import Report, Unit
from oemkit.serve.settings import Settings

PG_VARS = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD")
PG_START_TIMEOUT = 120  # seconds for pg_virtualenv to create and start the cluster (~3 s here)
ADMIN_TOKEN = "test-admin-token-" + "x" * 24
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GENEROUS = "10000/minute"  # the rate every test but the rate-limit tests runs with


# --------------------------------------------------------------------------------------------- PostgreSQL


@dataclass
class PgServer:
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def admin_connection(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.env["PGHOST"],
            port=int(self.env["PGPORT"]),
            user=self.env["PGUSER"],
            password=self.env.get("PGPASSWORD"),
            dbname=self.env.get("PGDATABASE", "postgres"),
            autocommit=True,
        )

    def url(self, database: str) -> str:
        return URL.create(
            "postgresql+psycopg",
            username=self.env["PGUSER"],
            password=self.env.get("PGPASSWORD"),
            host=self.env["PGHOST"],
            port=int(self.env["PGPORT"]),
            database=database,
        ).render_as_string(hide_password=False)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty UTF-8 database, dropped afterwards (connections still open are ended with it)."""
        name = "oemkit_test_" + uuid.uuid4().hex[:12]
        with self.admin_connection() as conn:
            conn.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")  # type: ignore[arg-type]
        try:
            yield self.url(name)
        finally:
            with self.admin_connection() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


def reset(url: str) -> None:
    """Empty a database again — every table, the migrations' bookkeeping too — in a fraction of a new database's
    time (each module gets a new one; each test an emptied one)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def start_pg_virtualenv(folder: Path) -> PgServer:
    env_file, log_file = folder / "pg.env", folder / "pg_virtualenv.log"
    script = 'env > "$1.part" && mv "$1.part" "$1"; read _ignored || true'
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            ["pg_virtualenv", "-t", "sh", "-c", script, "sh", str(env_file)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    deadline = time.monotonic() + PG_START_TIMEOUT
    while not env_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"pg_virtualenv did not start a cluster:\n{log_file.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return PgServer({k: v for k, v in env.items() if k.startswith("PG")}, process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        process.stdin.close()  # the shell's `read` ends: pg_virtualenv stops and drops the cluster
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.terminate()  # the one process we started, by its PID
        process.wait(timeout=30)


# --------------------------------------------------------------------------------------------- the service


def public_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign(key: Ed25519PrivateKey, body: bytes) -> str:
    return "ed25519=" + base64.b64encode(key.sign(b"oemkit-report-v1\n" + body)).decode()


def registration(serial: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """A fresh enrolment token and the registration body of a unit holding it."""
    token = secrets.token_urlsafe(32)
    body: dict[str, Any] = {
        "serial": serial,
        "model": "dell-poweredge-r650",
        "site": "berlin",
        "profile": "retail-edge",
        "content_id": "sha256:" + hashlib.sha256(serial.encode()).hexdigest(),
        "core_id": "0123456789abcdef0123",
        "pcr15_expected": hashlib.sha256(b"pcr15 " + serial.encode()).hexdigest(),
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "branding": {"oem_name": "ACME Systems", "product": "Edge Box", "support_url": "https://acme.example/support"},
    }
    body.update(overrides)
    return token, body


def report_body(serial: str, seq: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "serial": serial,
        "seq": seq,
        "id": secrets.token_hex(16),
        "made_at": 1796000000.25 + seq,
        "status": "READY",
        "reason": None,
        "fault": None,
        "failed_step": None,
        "steps": [{"id": "host.hostname", "status": "ok", "seconds": 0.12}],
        "bank": "a",
        "pcr15": hashlib.sha256(b"pcr15 " + serial.encode()).hexdigest(),
        "core_id": "0123456789abcdef0123",
        "content_id": "sha256:" + hashlib.sha256(serial.encode()).hexdigest(),
        "agent": "0.1.0",
        "origin": "agent",
    }
    body.update(overrides)
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Service:
    client: TestClient
    db: Database
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def register(self, serial: str, **overrides: Any) -> str:
        token, body = registration(serial, **overrides)
        answer = self.client.post("/v1/units", json=body, headers=ADMIN)
        assert answer.status_code == 201, answer.text
        self.tokens[serial] = token
        return token

    def enrol(self, serial: str, **overrides: Any) -> Ed25519PrivateKey:
        token = self.register(serial, **overrides)
        key = Ed25519PrivateKey.generate()
        answer = self.client.post(f"/v1/units/{serial}/enrol", json={"token": token, "public_key": public_b64(key)})
        assert answer.status_code == 200, answer.text
        self.keys[serial] = key
        return key

    def post_report(self, serial: str, raw: bytes, signature: str | None = None, path: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Oemkit-Signature"] = signature
        return self.client.post(path or f"/v1/units/{serial}/reports", content=raw, headers=headers)

    def report(self, serial: str, seq: int, **overrides: Any) -> Any:
        raw = encode(report_body(serial, seq, **overrides))
        return self.post_report(serial, raw, sign(self.keys[serial], raw))

    def count(self, model: type[Unit] | type[Report]) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def unit(self, serial: str) -> Unit:
        with self.db.read() as session:
            unit = session.scalar(select(Unit).where(Unit.serial == serial))
        assert unit is not None
        return unit

    def reports(self, serial: str) -> list[Report]:
        with self.db.read() as session:
            return list(
                session.scalars(
                    select(Report)
                    .join(Unit, Report.unit_id == Unit.id)
                    .where(Unit.serial == serial)
                    .order_by(Report.seq)
                )
            )

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Every row of both tables: equal before and after a refused request means nothing was stored."""
        with self.db.read() as session:
            units = session.execute(text("SELECT * FROM units ORDER BY id")).all()
            reports = session.execute(text("SELECT * FROM reports ORDER BY id")).all()
        return [tuple(r) for r in units] + [tuple(r) for r in reports]


@contextlib.contextmanager
def running(url: str, **settings: Any) -> Iterator[Service]:
    migrate.upgrade(url)
    db = Database(url)
    options = {"enrol_rate": GENEROUS, "report_rate": GENEROUS, **settings}
    app = create_app(Settings.with_token(url, ADMIN_TOKEN, **options), db)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Service(client, db)
    finally:
        db.dispose()
