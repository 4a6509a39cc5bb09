"""A real `oemkit serve` for the zero-touch tests: its own process, SQLite, HTTPS with a certificate from the tests'
service CA (tests/data/keys/service-ca.pem, the CA the zero-touch test profile pins), stopped and started again on
the same port (a service that is down, then back)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from oemkit.cli.app import app

from .conftest import REPO

KEYS = REPO / "tests" / "data" / "keys"
ADMIN = "zero-touch-admin-token-0123456789"
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """`oemkit serve` as a process of its own (SQLite, HTTPS), stopped and started again on the same port."""

    def __init__(self, work: Path) -> None:
        self.work, self.port, self.proc = work, _free_port(), None
        self.url = f"https://127.0.0.1:{self.port}"
        self.ctx = ssl.create_default_context(cafile=str(KEYS / "service-ca.pem"))
        result = runner.invoke(app, ["keys", "service-cert", "--dir", str(KEYS), "-o", str(work / "tls"),
                                     "--host", "10.0.2.100", "--host", "127.0.0.1"])  # fmt: skip
        assert result.exit_code == 0, result.output

    def start(self) -> None:
        env = {**os.environ, "OEMKIT_ADMIN_TOKEN": ADMIN}
        log = (self.work / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oemkit", "serve", "--db", f"sqlite:///{self.work / 'fleet.db'}",
             "--port", str(self.port), "--tls-cert", str(self.work / "tls" / "server.pem"),
             "--tls-key", str(self.work / "tls" / "server.key")],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.get("/healthz")["status"] == "ok":
                    return
            assert self.proc.poll() is None, (self.work / "serve.log").read_text()
            time.sleep(0.3)
        raise AssertionError("the service did not come up: " + (self.work / "serve.log").read_text())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def get(self, path: str) -> dict:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=10, context=self.ctx) as answer:
            return json.loads(answer.read())
