"""Load test of the provisioning service (issue 14): N simulated units register, enrol and report to a real
`oemkit serve` on 127.0.0.1, with every signature checked and the service's default per-unit rate limits on.

For each database (--db) and uvicorn worker count (--workers) the script starts `oemkit serve` as a subprocess of its
own (its PID, stopped at the end, on Ctrl-C and on any error too) on a free 127.0.0.1 port, with a fresh SQLite file,
or a fresh database in a throw-away PostgreSQL cluster it starts itself with `pg_virtualenv -t` (as
tests/serve_support.py does; `fsync` is turned back on there, pg_virtualenv turns it off). Then, with --concurrency
keep-alive connections from one asyncio load generator (a minimal HTTP/1.1 client on raw asyncio streams), phases
in order, each over every unit:

  register   POST /v1/units (admin token)                  untimed goal, its rate is shown
  floor      GET /healthz (HTTP stack, FastAPI, one threadpool hop and a pooled `SELECT 1`), and GET of a path
             no route has (HTTP stack and FastAPI routing to the 404 answer: no thread, no database)
  enrol      POST /v1/units/{serial}/enrol: the unit's token and its own Ed25519 public key
  report 1   POST /v1/units/{serial}/reports, seq 1, signed by the unit's key
  report 2   the same with seq 2 (--reports 2, the default): the steady state, every unit already has a report

Every body is built and signed before the first timer starts: the generator only writes bytes and reads answers.
Each phase expects one status (201, 200, 404) and counts every other as an error (there must be none). After the
timed phases, controls check that nothing was switched off: a report with another unit's signature (401), and one
unit's reports on one connection until its rate limit answers 429 (61st with the default 60/minute). Then the
service is stopped and the database counted (one row per unit and report).

Per phase: requests, seconds, requests/s, p50/p90/p99/max latency (from writing the request to the last byte of the
answer, as the generator sees it: its own scheduling delay is included), errors by status, and CPU per request of
the service's processes, PostgreSQL's and the generator itself (from /proc and process_time()).

Bounded: fixed counts, and --time-limit seconds (default 300) for each service run; a phase still running then is
abandoned, the service stopped and the script exits 1. A SIGALRM over the whole script backs that up.

    .venv/bin/python scripts/bench_serve.py [--db sqlite,postgresql] [--workers 1,2] [--units 10000]
        [--concurrency 32[,8…]] [--reports 2] [--floor N] [--time-limit 300] [--write]

--db, --workers and --concurrency take comma-separated lists: one service run for each combination.

--write puts the Markdown into docs/benchmarks.md ("Provisioning service (bench:serve)").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import REPO, write_section

BEGIN, END = "<!-- bench:serve:begin -->", "<!-- bench:serve:end -->"
START_TIMEOUT = 60.0  # seconds for `oemkit serve` to migrate and answer /healthz
PG_START_TIMEOUT = 120.0
CONTEXT = b"oemkit-report-v1\n"
HZ = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------- the units


@dataclass
class Requests:
    """Every request of the run, as the bytes that go on the wire."""

    register: list[bytes] = field(default_factory=list)
    enrol: list[bytes] = field(default_factory=list)
    reports: list[list[bytes]] = field(default_factory=list)  # one list per round (seq 1, seq 2, …)
    healthz: bytes = b""
    unrouted: bytes = b""
    bad_signature: bytes = b""  # unit 1's report signed by unit 0's key
    rate_unit: tuple[bytes, bytes, list[bytes]] = (b"", b"", [])  # register, enrol, reports of the control unit


def _request(
    method: str, path: str, port: int, body: bytes | None = None, headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _registration(serial: str, token: str) -> bytes:
    site = int(hashlib.sha256(serial.encode()).hexdigest()[:4], 16) % 100  # 100 sites, as a fleet page would have
    return _json({
        "serial": serial, "model": "dell-poweredge-r650", "site": f"site-{site:03d}",
        "profile": "retail-branch", "content_id": "sha256:" + hashlib.sha256(serial.encode()).hexdigest(),
        "core_id": "0123456789abcdef0123", "pcr15_expected": hashlib.sha256(b"pcr15 " + serial.encode()).hexdigest(),
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "branding": {"oem_name": "ACME Systems", "product": "Edge Box", "support_url": "https://acme.example/support"},
    })  # fmt: skip


def _report(serial: str, seq: int) -> bytes:
    """A report as the box sends one (hypervisor_core/phonereport.py's shape): READY, a few steps."""
    names = ("host.machine-id", "host.hostname", "host.management-network", "libvirt.network.pos", "verify", "report")
    steps = [{"id": s, "status": "ok", "seconds": 0.05 * (i + 1)} for i, s in enumerate(names)]
    return _json({
        "serial": serial, "seq": seq, "id": secrets.token_hex(16), "made_at": 1796000000.25 + seq, "status": "READY",
        "reason": None, "fault": None, "failed_step": None, "steps": steps, "bank": "a",
        "pcr15": hashlib.sha256(b"pcr15 " + serial.encode()).hexdigest(), "core_id": "0123456789abcdef0123",
        "content_id": "sha256:" + hashlib.sha256(serial.encode()).hexdigest(), "agent": "0.1.0", "origin": "agent",
    })  # fmt: skip


def build_requests(units: int, rounds: int, port: int, admin_token: str) -> Requests:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    admin = {"Authorization": f"Bearer {admin_token}"}
    out = Requests(reports=[[] for _ in range(rounds)])
    keys = []

    def unit(serial: str) -> tuple[bytes, bytes, Any]:
        token, key = secrets.token_urlsafe(32), Ed25519PrivateKey.generate()
        public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        register = _request("POST", "/v1/units", port, _registration(serial, token), admin)
        enrol = _request("POST", f"/v1/units/{serial}/enrol", port, _json({"token": token, "public_key": public}))
        return register, enrol, key

    def signed(serial: str, body: bytes, key: Any) -> bytes:
        signature = "ed25519=" + base64.b64encode(key.sign(CONTEXT + body)).decode()
        return _request("POST", f"/v1/units/{serial}/reports", port, body, {"X-Oemkit-Signature": signature})

    for n in range(units):
        serial = f"BS{n:06d}"
        register, enrol, key = unit(serial)
        keys.append(key)
        out.register.append(register)
        out.enrol.append(enrol)
        for r in range(rounds):
            out.reports[r].append(signed(serial, _report(serial, r + 1), key))
    out.healthz = _request("GET", "/healthz", port)
    out.unrouted = _request("GET", "/v1/no-such-route", port)
    # controls, after the timed phases: another unit's signature, and one unit over its report rate
    out.bad_signature = signed("BS000001", _report("BS000001", rounds + 1), keys[0])
    register, enrol, key = unit("BSRATE01")
    out.rate_unit = (register, enrol, [signed("BSRATE01", _report("BSRATE01", s), key) for s in range(1, 101)])
    return out


# --------------------------------------------------------------------------------------------- the client


class Connection:
    """One keep-alive HTTP/1.1 connection: write a pre-built request, read the answer (Content-Length framed, as
    uvicorn frames every answer of this service)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
        length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
        body = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


# --------------------------------------------------------------------------------------------- CPU of processes


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime + stime + cutime + cstime (fields 14 to 17 of stat): with the children it has reaped, so a PostgreSQL
    # backend that ended during a phase still counts (a live child is counted as itself, never twice)
    return sum(int(f) for f in fields[11:15]) / HZ


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def cpu_seconds(roots: list[int]) -> float:
    """User + system CPU of these processes and their descendants (live ones: the service's and the database's
    processes live through a whole phase)."""
    return sum(_proc_cpu(pid) for root in roots for pid in _tree(root))


# --------------------------------------------------------------------------------------------- phases


@dataclass
class Phase:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    statuses: Counter[int]
    expect: int
    cpu: dict[str, float]  # "service", "postgresql", "generator": CPU seconds during the phase
    samples: list[str] = field(default_factory=list)  # the first unexpected answers

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != self.expect)

    def error_text(self) -> str:
        wrong = {s: n for s, n in sorted(self.statuses.items()) if s != self.expect}
        return ", ".join(f"{n} × {s}" for s, n in wrong.items()) if wrong else "0"


class OutOfTime(Exception):
    pass


async def run_phase(
    name: str,
    port: int,
    requests: list[bytes],
    expect: int,
    concurrency: int,
    deadline: float,
    watch: dict[str, list[int]],
) -> Phase:
    """Every request once, over `concurrency` keep-alive connections (opened before the timer), each connection
    taking the next request as soon as its answer is in."""
    connections = [Connection(port) for _ in range(min(concurrency, len(requests)))]
    await asyncio.gather(*(c.open() for c in connections))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    samples: list[str] = []
    index = 0
    clock = time.perf_counter

    async def drive(connection: Connection) -> None:
        nonlocal index
        while index < len(requests):
            raw = requests[index]
            index += 1
            started = clock()
            status, body = await connection.send(raw)
            latencies.append(clock() - started)
            statuses[status] += 1
            if status != expect and len(samples) < 3:
                samples.append(f"{status} {body[:200].decode(errors='replace')}")

    before = {who: cpu_seconds(pids) for who, pids in watch.items()}
    own = time.process_time()
    started = clock()
    try:
        await asyncio.wait_for(asyncio.gather(*(drive(c) for c in connections)), deadline - time.monotonic())
    except TimeoutError:
        done = f"{len(latencies)} of {len(requests)} requests"
        raise OutOfTime(f"{name}: {done} done when the time limit ran out") from None
    seconds = clock() - started
    cpu = {who: cpu_seconds(watch[who]) - before[who] for who in watch}
    cpu["generator"] = time.process_time() - own
    await asyncio.gather(*(c.close() for c in connections))
    return Phase(name, len(requests), seconds, latencies, statuses, expect, cpu, samples)


async def one_connection(port: int, requests: list[bytes]) -> list[int]:
    connection = Connection(port)
    try:
        return [(await connection.send(raw))[0] for raw in requests]
    finally:
        await connection.close()


async def controls(port: int, req: Requests) -> dict[str, Any]:
    """Signatures and rate limits are on: another unit's signature is refused; one unit's reports on one connection
    (one worker's limiter) are refused with 429 once past its rate."""
    bad = await one_connection(port, [req.bad_signature])
    register, enrol, reports = req.rate_unit
    setup = await one_connection(port, [register, enrol])
    statuses = await one_connection(port, reports)
    first_429 = statuses.index(429) + 1 if 429 in statuses else None
    return {"bad_signature": bad[0], "setup": setup, "accepted": statuses.count(201), "first_429": first_429}


# --------------------------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    postmaster: int

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(host=self.env["PGHOST"], port=int(self.env["PGPORT"]), user=self.env["PGUSER"],
                               password=self.env.get("PGPASSWORD"), dbname=dbname, autocommit=True)  # fmt: skip

    def url(self, dbname: str) -> str:
        from sqlalchemy import URL

        return URL.create("postgresql+psycopg", username=self.env["PGUSER"], password=self.env.get("PGPASSWORD"),
                          host=self.env["PGHOST"], port=int(self.env["PGPORT"]), database=dbname,
                          ).render_as_string(hide_password=False)  # fmt: skip

    def settings(self) -> dict[str, str]:
        with self.connect() as conn:
            names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_level")
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the shell's `read` ends: pg_virtualenv stops and drops the cluster
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.terminate()  # the one process we started, by its PID
            self.process.wait(timeout=30)


def start_postgres(folder: Path) -> Postgres:
    """A throw-away cluster (tests/serve_support.py's way): pg_virtualenv -t runs a shell that writes its environment
    to a file and waits on its standard input; closing that ends it, and pg_virtualenv drops the cluster. pg_virtualenv
    starts the cluster with fsync off (a test speed-up): it is turned on again, a database that does not flush its
    commits would not be one to measure."""
    if shutil.which("pg_virtualenv") is None:
        sys.exit("no pg_virtualenv: install postgresql-common and postgresql-15 (bash scripts/setup.sh --dev)")
    env_file, log_file = folder / "pg.env", folder / "pg_virtualenv.log"
    script = 'env > "$1.part" && mv "$1.part" "$1"; read _ignored || true'
    with log_file.open("wb") as log:
        process = subprocess.Popen(["pg_virtualenv", "-t", "sh", "-c", script, "sh", str(env_file)],
                                   stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=folder)  # fmt: skip
    deadline = time.monotonic() + PG_START_TIMEOUT
    while not env_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            Postgres(process, {}, 0).stop()
            sys.exit(f"pg_virtualenv did not start a cluster:\n{log_file.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    pg = Postgres(process, {k: v for k, v in env.items() if k.startswith("PG")}, 0)
    try:
        with pg.connect() as conn:
            conn.execute("ALTER SYSTEM SET fsync = on")
            conn.execute("SELECT pg_reload_conf()")
            data = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
        pg.postmaster = int(Path(data, "postmaster.pid").read_text().split()[0])
        for _ in range(50):
            if pg.settings()["fsync"] == "on":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("PostgreSQL did not take fsync = on")
    except BaseException:
        pg.stop()
        raise
    return pg


# --------------------------------------------------------------------------------------------- the service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(url: str, port: int, workers: int, admin_token: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, OEMKIT_ADMIN_TOKEN=admin_token)
    cmd = [sys.executable, "-m", "oemkit", "serve", "--db", url, "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=REPO)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"oemkit serve did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
                if asyncio.run(one_connection(port, [_request("GET", "/healthz", port)])) == [200]:
                    break
            time.sleep(0.1)
        if workers > 1:  # every worker up: uvicorn's supervisor has them as children
            while len(_tree(process.pid)) < workers + 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()  # by its PID: the process this script started (uvicorn stops its workers)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def count_rows(url: str) -> tuple[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            units = conn.execute(text("SELECT count(*) FROM units WHERE public_key IS NOT NULL")).scalar_one()
            reports = conn.execute(text("SELECT count(*) FROM reports")).scalar_one()
    finally:
        engine.dispose()
    return int(units), int(reports)


def sqlite_settings(path: Path) -> dict[str, str]:
    import sqlite3

    from oemkit.serve.db import make_engine

    engine = make_engine(f"sqlite:///{path}")  # the service's own connection settings
    try:
        with engine.connect() as conn:
            out = {p: str(conn.exec_driver_sql(f"PRAGMA {p}").scalar()) for p in ("journal_mode", "synchronous")}
    finally:
        engine.dispose()
    out["sqlite"] = sqlite3.sqlite_version
    return out


# --------------------------------------------------------------------------------------------- one run


@dataclass
class Run:
    db: str
    workers: int
    concurrency: int
    units: int
    register: Phase
    phases: list[Phase]
    floors: list[Phase]
    controls: dict[str, Any]
    stored: tuple[int, int]
    db_settings: dict[str, str]


async def _timed(
    port: int, req: Requests, args: argparse.Namespace, c: int, deadline: float, watch: dict[str, list[int]]
) -> tuple[Phase, list[Phase], list[Phase], dict[str, Any]]:
    register = await run_phase("register (admin)", port, req.register, 201, c, deadline, watch)
    floors = [
        await run_phase("floor: GET /healthz", port, [req.healthz] * args.floor, 200, c, deadline, watch),
        await run_phase("floor: GET of an unrouted path (404)", port, [req.unrouted] * args.floor, 404, c, deadline,
                        watch),
    ]  # fmt: skip
    phases = [await run_phase("enrol", port, req.enrol, 200, c, deadline, watch)]
    for r, reports in enumerate(req.reports):
        label = "report (seq 1)" if r == 0 else f"report (seq {r + 1}, steady state)"
        phases.append(await run_phase(label, port, reports, 201, c, deadline, watch))
    return register, floors, phases, await controls(port, req)


def one_run(db: str, workers: int, concurrency: int, args: argparse.Namespace, tmp: Path, pg: Postgres | None) -> Run:
    started = time.monotonic()
    deadline = started + args.time_limit
    port = _free_port()
    admin_token = secrets.token_urlsafe(32)
    req = build_requests(args.units, args.reports, port, admin_token)
    log = tmp / f"serve-{db}-{workers}.log"
    dbname = ""
    if db == "sqlite":
        path = tmp / f"serve-{workers}-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
    else:
        assert pg is not None
        dbname = "oemkit_bench_" + uuid.uuid4().hex[:12]
        with pg.connect() as conn:
            conn.execute(f"CREATE DATABASE {dbname} ENCODING 'UTF8' TEMPLATE template0")
        url = pg.url(dbname)
    try:
        with serving(url, port, workers, admin_token, log) as process:
            watch = {"service": [process.pid]}
            if pg is not None:
                watch["postgresql"] = [pg.postmaster]
            try:
                register, floors, phases, checks = asyncio.run(_timed(port, req, args, concurrency, deadline, watch))
            except OutOfTime as exc:
                sys.exit(f"bench_serve: {db}, {workers} worker(s): {exc} ({args.time_limit:.0f} s)")
        stored = count_rows(url)
        settings = sqlite_settings(path) if db == "sqlite" else pg.settings()  # type: ignore[union-attr]
    finally:
        if pg is not None and dbname:
            with pg.connect() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    return Run(db, workers, concurrency, args.units, register, phases, floors, checks, stored, settings)


# --------------------------------------------------------------------------------------------- Markdown

NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


GOAL_RATE, GOAL_P99 = 2000.0, 50.0  # issue 14: reports/s, with p99 at most this many ms


def _cpu(phase: Phase) -> str:
    per = {who: f"{cpu / phase.requests * 1000:.2f}" for who, cpu in phase.cpu.items()}
    service = per["service"] + (f" + {per['postgresql']}" if "postgresql" in per else "")
    return f"{service} / {per['generator']}"


def _row(phase: Phase, bold: bool = False) -> str:
    rate, p99 = f"{phase.rate:,.0f}", f"{phase.pct(0.99):.1f}"
    if bold:
        rate, p99 = f"**{rate}**", f"**{p99}**"
    cells = [phase.name, f"{phase.requests:,}", f"{phase.seconds:.2f}", rate, f"{phase.pct(0.5):.1f}",
             f"{phase.pct(0.9):.1f}", p99, f"{phase.pct(1.0):.1f}", phase.error_text(), _cpu(phase)]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _goal(runs: list[Run]) -> str:
    """Per database: the runs whose report phases all met the goal, or the best report phase when none did."""
    lines = []
    for db in dict.fromkeys(r.db for r in runs):
        mine = [r for r in runs if r.db == db]
        reports = {id(r): [p for p in r.phases if p.name.startswith("report")] for r in mine}
        met = [r for r in mine if all(p.rate >= GOAL_RATE and p.pct(0.99) <= GOAL_P99 for p in reports[id(r)])]
        if met:
            which = "; ".join(
                f"{r.workers} worker(s), {r.concurrency} connections: "
                + " and ".join(f"{p.rate:,.0f}/s p99 {p.pct(0.99):.1f} ms" for p in reports[id(r)])
                for r in met
            )
            lines.append(f"- {NAMES[db]}: **met** by {which}.")
        else:
            best = max((p for r in mine for p in reports[id(r)]), key=lambda p: p.rate)
            lines.append(f"- {NAMES[db]}: **not met**: the best report phase is {best.rate:,.0f} reports/s "
                         f"(p99 {best.pct(0.99):.1f} ms).")  # fmt: skip
    return f"Goal ({GOAL_RATE:,.0f} reports/s, p99 ≤ {GOAL_P99:.0f} ms), every report phase of a run:\n\n" + "\n".join(
        lines
    )


def markdown(runs: list[Run], args: argparse.Namespace, load: tuple[float, float]) -> str:
    import cryptography
    import fastapi
    import httptools
    import sqlalchemy
    import uvicorn
    import uvloop

    day = datetime.date.today().isoformat()
    lines = [
        BEGIN, "",
        f"Measured {day} on this project's machine ({os.cpu_count()} cores, shared by the service, the database and "
        f"the load generator; load average {load[0]:.1f} before, {load[1]:.1f} after); Python "
        f"{sys.version.split()[0]}, uvicorn {uvicorn.__version__} (httptools "
        f"{httptools.__version__}, uvloop {uvloop.__version__}), FastAPI {fastapi.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}, cryptography {cryptography.__version__}. {args.units:,} units, each "
        f"enrolling once and sending {args.reports} report(s); keep-alive connections from one asyncio generator; "
        "default per-unit rate limits (enrol 10/minute, report 60/minute); every report signature checked. "
        "Latency in ms, from the generator's write to the answer's last byte. CPU: ms per request of the service's "
        "processes (+ PostgreSQL's) / of the generator.",
        "",
        "| DB | workers | connections | phase | req/s | p50 ms | p99 ms | errors | CPU ms/req |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for run in runs:
        for phase in [*run.floors, *run.phases]:
            rate = f"**{phase.rate:,.0f}**" if phase.name.startswith("report") else f"{phase.rate:,.0f}"
            cells = [NAMES[run.db], str(run.workers), str(run.concurrency), phase.name, rate,
                     f"{phase.pct(0.5):.1f}", f"{phase.pct(0.99):.1f}", phase.error_text(), _cpu(phase)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _goal(runs), "", "Each run in detail:"]
    for run in runs:
        settings = ", ".join(f"{k} {v}" for k, v in run.db_settings.items())
        c = run.controls
        rate_note = (f"the rate-limit unit's 61st report answered 429 after {c['accepted']} accepted"
                     if c["first_429"] == 61 else f"rate-limit control: {c}")  # fmt: skip
        reg = run.register
        lines += [
            "",
            f"**{NAMES[run.db]}, {run.workers} worker(s), {run.concurrency} connections** ({settings}). Registration "
            f"(admin, not timed against the goal): {reg.rate:,.0f} units/s, p99 {reg.pct(0.99):.1f} ms, errors "
            f"{reg.error_text()}. Stored afterwards: {run.stored[0]:,} enrolled units, {run.stored[1]:,} reports. "
            f"Controls: another unit's signature answered {c['bad_signature']}; {rate_note}.",
            "",
            "| phase | requests | s | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | CPU ms/req |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            *(_row(p) for p in run.floors),
            *(_row(p, bold=p.name.startswith("report")) for p in run.phases),
        ]  # fmt: skip
    lines += ["", END]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(f"bench_serve: stopped by signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="The module docstring says what each phase does."
    )
    ap.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both (comma-separated)")
    ap.add_argument("--workers", default="1,2", help="uvicorn worker counts, comma-separated (default 1,2)")
    ap.add_argument("--units", type=int, default=10_000, help="simulated units (default 10000)")
    ap.add_argument("--concurrency", default="32", help="keep-alive connections, comma-separated (default 32)")
    ap.add_argument("--reports", type=int, default=2, choices=range(1, 11), help="reports per unit (default 2)")
    ap.add_argument("--floor", type=int, default=0, help="requests of each floor phase (default: --units)")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds for each service run (default 300)")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md (bench:serve)")
    args = ap.parse_args()
    dbs = [d for d in args.db.split(",") if d]
    if not dbs or any(d not in NAMES for d in dbs):
        ap.error("--db: sqlite, postgresql or both")
    workers = [int(w) for w in args.workers.split(",") if w]
    conns = [int(c) for c in args.concurrency.split(",") if c]
    if args.units < 2 or not conns or min(conns) < 1 or not workers or min(workers) < 1:
        ap.error("--units ≥ 2, --concurrency ≥ 1, --workers ≥ 1")
    args.floor = args.floor or args.units
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGALRM, _stop)  # the backstop: every run's limit, PostgreSQL's start and a margin
    signal.alarm(int(args.time_limit * len(dbs) * len(workers) * len(conns) + PG_START_TIMEOUT + 120))
    load_before = os.getloadavg()[0]
    runs: list[Run] = []
    pg: Postgres | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        if "postgresql" in dbs:
            pg = start_postgres(tmp)
        for db, w, c in itertools.product(dbs, workers, conns):
            print(f"bench_serve: {NAMES[db]}, {w} worker(s), {c} connections, {args.units:,} units …",
                  file=sys.stderr, flush=True)  # fmt: skip
            run = one_run(db, w, c, args, tmp, pg if db == "postgresql" else None)
            for p in [run.register, *run.floors, *run.phases]:
                print("  " + _row(p), file=sys.stderr, flush=True)
                for sample in p.samples:
                    print(f"    unexpected: {sample}", file=sys.stderr)
            runs.append(run)
    finally:
        signal.alarm(0)
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = markdown(runs, args, (load_before, os.getloadavg()[0]))
    print(text)
    bad = [f"{r.db}/{r.workers}: {p.name}" for r in runs for p in [r.register, *r.floors, *r.phases] if p.errors]
    expected = (args.units + 1, args.units * args.reports + 60)  # the rate-limit unit: enrolled, 60 reports
    bad += [f"{r.db}/{r.workers}: stored {r.stored}, expected {expected}" for r in runs if r.stored != expected]
    bad += [f"{r.db}/{r.workers}: controls {r.controls}" for r in runs
            if r.controls["bad_signature"] != 401 or r.controls["first_429"] != 61]  # fmt: skip
    if bad:
        sys.exit("bench_serve: " + "; ".join(bad))
    if args.write:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
