"""Running oemkit so that a hang or a read without end fails the test instead of blocking or starving the suite: in
this process under an alarm, or as a real process with a timeout and a capped address space. Shared by the hostile
input, output and fuzz tests."""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app

from .conftest import REPO

MEMORY_CAP = 4 << 30  # a command that reads /dev/zero without end dies of MemoryError, not the test machine


class Hung(BaseException):  # not an Exception: no `except Exception` in the product may swallow it
    """An in-process command outlived its alarm: it hung (on a FIFO, a device...)."""


@contextlib.contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Fail (raise Hung) instead of blocking when the body runs longer than `seconds`."""

    def _ring(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds} s: it hung")

    previous = signal.signal(signal.SIGALRM, _ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Run:
    code: int
    out: str  # stdout and stderr together
    err: str  # stderr only


def _cap_memory() -> None:  # in the child, before it runs oemkit
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def oemkit_subprocess(
    args: list[str], *, timeout: int, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> Run:
    """`python -m oemkit ARGS` for real, bounded in time and memory."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "oemkit", *args],
            cwd=cwd or REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            preexec_fn=_cap_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"oemkit {' '.join(args)} did not finish within {timeout} s: it hung")
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    return Run(proc.returncode, out + err, err)


def oemkit_inprocess(args: list[str], *, timeout: int) -> Run:
    """The CLI in this process (typer's CliRunner), under an alarm; a traceback fails the test with it."""
    with alarm(timeout):
        result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"oemkit {' '.join(args)} raised {result.exception!r}:\n{tb}")
    return Run(result.exit_code, result.output, result.stderr)
