"""Run a plan through the backends, journaling each step, so that a crash anywhere converges on rerun.

Correctness does not depend on the journal: every step is idempotent (look up, then define), so a rerun simply
runs the whole plan again and finds most things already there. The journal is the audit trail (which steps ran,
when, what each found) and tells the report that this run resumed an interrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypervisor_core.backends.host import HostBackend
from hypervisor_core.plan import STATE_DIR, Step

CRASH_ENV = "OEMKIT_CRASH_AT"  # fault injection for the crash tests: "<step id>" or "<step id>+"


@dataclass
class StepResult:
    id: str
    status: str  # ok | failed
    seconds: float
    detail: str


class Journal:
    def __init__(self, root: Path) -> None:
        self.path = root / STATE_DIR / "journal.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, step: str, event: str, **extra: Any) -> None:
        line = json.dumps({"step": step, "event": event, "at": round(time.time(), 3), **extra}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def completed(self) -> set[str]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return set()
        done = set()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if entry.get("event") == "done":
                done.add(entry.get("step"))
        return done


def _crash_point(step_id: str, after_journal: bool) -> None:
    if os.environ.get(CRASH_ENV) == step_id + ("+" if after_journal else ""):
        os.kill(os.getpid(), signal.SIGKILL)


def _dispatch(step: Step, host: HostBackend, lv: Any) -> str:
    a = step.params
    match step.kind:
        case "host.machine-id":
            return host.machine_id()
        case "host.ssh-host-keys":
            return host.ssh_host_keys(a["enabled"])
        case "host.hostname":
            return host.hostname(a["hostname"])
        case "host.settings":
            return host.settings(**a)
        case "host.network":
            return host.network(**a)
        case "host.users":
            return host.users(**a)
        case "host.datastore":
            return host.datastore(**a)
        case "libvirt.network":
            return lv.network(a["name"], a["xml"])
        case "libvirt.pool":
            return lv.pool(a["name"], a["path"], a["xml"])
        case "libvirt.volume":
            return lv.volume(a["pool"], a["name"], a["xml"], a["source"], a["size_gib"], host.root)
        case "libvirt.domain":
            return lv.domain(a["name"], a["xml"])
        case "libvirt.autostart":
            return lv.autostart(a["name"], a["enabled"])
        case "libvirt.start":
            return lv.start(a["name"])
        case "verify":
            return lv.verify(a["networks"], a["pool"], a["domains"])
    raise ValueError(f"unknown step kind {step.kind}")


def apply_plan(
    plan: tuple[Step, ...],
    root: Path,
    host: HostBackend,
    lv: Any,
    on_step: Callable[[StepResult], None],
    report: Callable[[], str],
    deadline: float | None = None,
) -> tuple[list[StepResult], str | None]:
    """Run every step; stop at the first failure. Returns the results and the failure reason (None: success)."""
    journal = Journal(root)
    results: list[StepResult] = []
    for step in plan:
        if deadline is not None and time.monotonic() > deadline:
            return results, f"first boot timed out before {step.id}"
        journal.append(step.id, "start")
        t = time.monotonic()
        try:
            detail = report() if step.kind == "report" else _dispatch(step, host, lv)
        except Exception as exc:  # a backend failure is data for the report, not a traceback on the console
            result = StepResult(step.id, "failed", round(time.monotonic() - t, 3), f"{type(exc).__name__}: {exc}")
            journal.append(step.id, "failed", error=result.detail)
            results.append(result)
            on_step(result)
            return results, f"{step.id}: {result.detail}"
        _crash_point(step.id, after_journal=False)
        result = StepResult(step.id, "ok", round(time.monotonic() - t, 3), detail)
        journal.append(step.id, "done", detail=detail)
        _crash_point(step.id, after_journal=True)
        results.append(result)
        on_step(result)
    return results, None
