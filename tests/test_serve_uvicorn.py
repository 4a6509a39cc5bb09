"""`oemkit serve` for real: the command started as a process, uvicorn listening on 127.0.0.1, a box's enrolment and
reports over HTTP with urllib and http.client (no test client between), HTTPS with a certificate from the factory's
service CA checked against that CA only, and the command's refusals before it listens."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oemkit.seal.tlsca import init_ca, issue_server
from oemkit.serve.db import Database
from oemkit.serve.models import Report, Unit
from tests.conftest import REPO
from tests.serve_support import ADMIN_TOKEN, encode, public_b64, registration, report_body, sign

pytest_plugins = ["tests.serve_fixtures"]

START_TIMEOUT = 30  # seconds for `oemkit serve` to migrate and answer /healthz


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, token: str | None = ADMIN_TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OEMKIT_ADMIN_TOKEN"}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    if token is not None:
        env["OEMKIT_ADMIN_TOKEN"] = token
    return env


def _oemkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "oemkit", *args]


@dataclass
class Running:
    base: str
    process: subprocess.Popen[bytes]
    log: Path
    context: ssl.SSLContext | None = None

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as answer:
                raw, status = answer.read(), answer.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str, context: ssl.SSLContext | None = None) -> Iterator[Running]:
    port = _free_port()
    scheme = "https" if context else "http"
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _oemkit("serve", "--port", str(port), *args), env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip
    running = Running(f"{scheme}://127.0.0.1:{port}", process, log, context)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"oemkit serve did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(OSError):
                if running.call("GET", "/healthz") == (200, {"status": "ok", "db": "ok"}):
                    break
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()  # by its PID: the process this test started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _post_chunked(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST `body` chunked — no Content-Length for the service to check first — and without the last chunk: the
    service must refuse it while it streams, having read no more than its bound (and everything this sent, so it
    closes cleanly instead of resetting the connection under the answer)."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        for i in range(0, len(body), 8192):
            chunk = body[i : i + 8192]
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def _box_round_trip(server: Running, serial: str) -> Ed25519PrivateKey:
    """The factory registers, the box enrols and reports FAILED then READY; a retry is a duplicate."""
    token, body = registration(serial)
    assert server.call("POST", "/v1/units", body, ADMIN)[0] == 201
    key = Ed25519PrivateKey.generate()
    enrolment = {"token": token, "public_key": public_b64(key)}
    assert server.call("POST", f"/v1/units/{serial}/enrol", enrolment) == (200, {"serial": serial, "enrolled": True})
    assert server.call("POST", f"/v1/units/{serial}/enrol", enrolment)[0] == 200  # the retry after a lost answer
    failed = encode(report_body(serial, 1, status="FAILED", reason="no uplink", fault="step", failed_step="net.up"))
    answer = server.call("POST", f"/v1/units/{serial}/reports", failed, {"X-Oemkit-Signature": sign(key, failed)})
    assert answer == (201, {"stored": True, "seq": 1})
    status, doc = server.call("POST", f"/v1/units/{serial}/reports", failed, {"X-Oemkit-Signature": sign(key, failed)})
    assert (status, doc["code"]) == (409, "duplicate")
    ready = encode(report_body(serial, 2))
    assert server.call("POST", f"/v1/units/{serial}/reports", ready, {"X-Oemkit-Signature": sign(key, ready)})[0] == 201
    return key


def test_serve_over_http_with_sqlite(tmp_path: Path) -> None:
    db_file = tmp_path / "serve.db"
    with serving(tmp_path, "--db", f"sqlite:///{db_file}") as server:
        key = _box_round_trip(server, "J30BRN01")
        status, unit = server.call("GET", "/v1/units/J30BRN01", headers=ADMIN)
        assert status == 200 and unit["state"] == "READY" and [r["seq"] for r in unit["reports"]] == [2, 1]
        basic = "Basic " + base64.b64encode(f"ops:{ADMIN_TOKEN}".encode()).decode()
        status, page = server.call("GET", "/", headers={"Authorization": basic})
        assert status == 200 and "J30BRN01" in page and "READY" in page
        assert server.call("GET", "/")[0] == 401

        # what urllib would tidy away: a raw "..", and a chunked body past the bound
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/v1/units/../reports", body=b"{}", headers={"Content-Type": "application/json"})
        raw_dots = conn.getresponse()
        assert raw_dots.status == 422 and json.loads(raw_dots.read())["code"] == "invalid"
        conn.close()
        big = encode(report_body("J30BRN01", 3, reason="x" * 100_000))
        headers = {"Content-Type": "application/json", "X-Oemkit-Signature": sign(key, big)}
        status, doc = _post_chunked(server.port, "/v1/units/J30BRN01/reports", big[: 66 * 1024], headers)
        assert (status, doc["code"]) == (413, "too_large")

        # the same signed report from many connections at once: stored once, the rest 409, no 500
        third = encode(report_body("J30BRN01", 3))
        headers = {"X-Oemkit-Signature": sign(key, third)}
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: server.call("POST", "/v1/units/J30BRN01/reports", third, headers)[0],
                                     range(16)))  # fmt: skip
        assert sorted(statuses) == [201] + [409] * 15
    assert server.process.returncode in (0, 128 + signal.SIGTERM), server.log.read_text()  # the CLI's SIGTERM exit
    log = server.log.read_text()
    assert f"listening on {server.base}/" in log and ADMIN_TOKEN not in log

    db = Database(f"sqlite:///{db_file}")  # the service is gone; its file holds what it stored
    try:
        with db.read() as session:
            assert session.query(Report).count() == 3 and session.query(Unit).one().last_seq == 3
    finally:
        db.dispose()


def _answer(sock: socket.socket, pieces: list[bytes]) -> tuple[int, bytes]:
    """Send a request as pieces, one write each (stopping if the server closed), then read one answer."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for piece in pieces:
            sock.sendall(piece)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed before an answer: {data[:200]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(
        next(line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length"))
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head[9:12]), body


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_serve_bounds_a_requests_head_and_trailers_and_serves_the_next_client(tmp_path: Path) -> None:
    """httptools has no bound on a request's head (h11 had one): oemkit serve adds it (oemkit/serve/httpproto.py).
    Refused with 431, the connection closed: a head over 64 KiB in one write, a header streamed in 4 KiB pieces, a
    chunked body's trailers streamed the same way. Served: a 48 KiB head in 1 KiB pieces, again as the second request
    of a keep-alive connection, and a 60 KiB body written in pieces after its head."""
    big_header = b"X-Big: " + b"a" * 48 * 1024 + b"\r\n"
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    with serving(tmp_path, "--db", f"sqlite:///{tmp_path / 'serve.db'}") as server:

        def connect() -> socket.socket:
            return socket.create_connection(("127.0.0.1", server.port), timeout=20)

        refusals = {
            "whole": [healthz + b"X-Big: " + b"a" * 100 * 1024 + b"\r\n\r\n"],
            "streamed": [healthz + b"X-Big: ", *[b"a" * 4096] * 256],  # 1 MiB, never ending
            "trailers": [b"POST /v1/units/J30BRN01/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ", *[b"a" * 4096] * 256],
        }  # fmt: skip
        for name, pieces in refusals.items():
            with connect() as sock:
                status, body = _answer(sock, pieces)
                assert (status, json.loads(body)["code"]) == (431, "head_too_large"), name
                assert sock.recv(65536) == b"", name  # closed

        with connect() as sock:
            assert _answer(sock, [healthz + b"\r\n"])[0] == 200
            assert _answer(sock, _split(healthz + big_header + b"\r\n", 1024))[0] == 200  # same connection
            body = encode(report_body("J30BRN01", 1, reason="x" * 60_000))
            head = (f"POST /v1/units/J30BRN01/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
            status, answer = _answer(sock, [head, *_split(body, 4096)])
            assert (status, json.loads(answer)["code"]) == (403, "not_enrolled")  # judged, not refused as a head
            assert _answer(sock, [healthz + b"\r\n"])[0] == 200
    assert "refused a request whose head or trailers passed 65536 bytes (431)" in server.log.read_text()


def test_serve_with_postgresql_and_two_workers(tmp_path: Path, pg_database: str) -> None:
    from tests.serve_support import reset

    reset(pg_database)
    with serving(tmp_path, "--db", pg_database, "--workers", "2") as server:
        _box_round_trip(server, "J30BRN01")
        _box_round_trip(server, "J30BRN02")
        status, fleet = server.call("GET", "/v1/fleet", headers=ADMIN)
        assert status == 200 and fleet["counts"]["READY"] == 2
    assert pg_database.split("@")[0].split(":")[-1] not in server.log.read_text()  # the password is not printed


def test_serve_over_https_pinned_to_the_service_ca(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ca = init_ca(keys, "Test factory")
    issued = issue_server(keys, tmp_path / "tls", ["127.0.0.1", "localhost"])
    pinned = ssl.create_default_context(cafile=str(ca.cert))
    with serving(tmp_path, "--tls-cert", str(issued.cert), "--tls-key", str(issued.key), context=pinned) as server:
        assert server.base.startswith("https://")
        _box_round_trip(server, "J30BRN01")
        with pytest.raises(urllib.error.URLError) as refused:  # the system's CAs do not know the service
            urllib.request.urlopen(server.base + "/healthz", timeout=10, context=ssl.create_default_context())
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


# --------------------------------------------------------------------------------------------- the command


def _run(tmp_path: Path, *args: str, token: str | None = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _oemkit("serve", *args), env=_env(tmp_path, token), capture_output=True, text=True, timeout=60, cwd=REPO
    )


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        ((), None, "no admin token: set $OEMKIT_ADMIN_TOKEN"),
        (("--admin-token-env", "MY_TOKEN"), ADMIN_TOKEN, "no admin token: set $MY_TOKEN"),
        ((), "short", "too short"),
        (("--db", "mysql://u@h/db"), ADMIN_TOKEN, "unsupported database"),
        (("--db", "sqlite://"), ADMIN_TOKEN, "SQLite needs a file"),
        (("--db", "sqlite:////no/such/folder/serve.db"), ADMIN_TOKEN, "no folder"),
        (("--tls-cert", "cert.pem"), ADMIN_TOKEN, "--tls-cert and --tls-key go together"),
        (("--tls-cert", "missing.pem", "--tls-key", "missing.key"), ADMIN_TOKEN, "cannot use missing.pem"),
        (("--report-rate", "lots"), ADMIN_TOKEN, "not a rate"),
    ],
)
def test_serve_refuses_bad_settings_with_exit_2(tmp_path: Path, args: tuple[str, ...], token: str | None,
                                                 message: str) -> None:  # fmt: skip
    run = _run(tmp_path, *args, token=token)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "data").exists()  # nothing made before the settings are right


def test_serve_with_a_database_it_cannot_reach_exits_1_without_the_password(tmp_path: Path) -> None:
    run = _run(tmp_path, "--db", f"postgresql+psycopg://oemkit:s3cret-pw@127.0.0.1:{_free_port()}/fleet")
    assert run.returncode == 1 and "database postgresql+psycopg://oemkit:***@127.0.0.1" in run.stderr
    assert "s3cret-pw" not in run.stderr and "Traceback" not in run.stderr


def test_serve_default_database_is_sqlite_under_xdg_data_home(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        assert server.call("GET", "/healthz")[0] == 200
    assert (tmp_path / "data" / "oemkit" / "serve.db").is_file()
    assert f"database sqlite:///{tmp_path / 'data' / 'oemkit' / 'serve.db'}" in server.log.read_text()


def test_serve_openapi_prints_the_document_without_a_token(tmp_path: Path) -> None:
    run = _run(tmp_path, "--openapi", token=None)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert "/v1/units/{serial}/reports" in doc["paths"] and doc["info"]["title"] == "oemkit provisioning service"


def test_oemkit_help_does_not_load_the_service_stack() -> None:
    code = (
        "import sys\n"
        "from oemkit.cli.app import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'fastapi', 'starlette', 'sqlalchemy', 'alembic', 'uvicorn', 'psycopg', 'jinja2', 'limits'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert "serve" in run.stdout
    assert run.stdout.strip().splitlines()[-1] == "[]"
