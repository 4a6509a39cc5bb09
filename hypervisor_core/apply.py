"""Run a plan's actions through the backends, journaling each one, so that a crash anywhere converges on rerun.

Correctness does not depend on the journal: every action is idempotent (look up, then define), so a rerun simply
runs the whole plan again and finds most things already there. The journal is the audit trail — which actions
ran, when, what each found — and tells the report when this run picks up after an interrupted one.
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

from hypervisor_core.backends import Backends
from hypervisor_core.config import parse_json
from hypervisor_core.fsutil import append_line, read_regular
from hypervisor_core.plan import Plan

CRASH_ENV = "OEMKIT_CRASH_AT"  # fault injection for the crash tests: "<step id>" or "<step id>+"
RUN = "run"  # the journal's marker for one run of the plan: "begin" and, when it got to the end, "end"


@dataclass
class StepResult:
    id: str
    status: str  # ok | failed
    seconds: float
    detail: str


MAX_JOURNAL_BYTES = 16 << 20  # a run writes ~200 bytes a step; thousands of reruns stay far below


class Journal:
    """journal.jsonl: one fsync'd JSON line per event, {"step", "event", "at", ...}; a torn last line is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, step: str, event: str, **extra: Any) -> None:
        append_line(self.path, json.dumps({"step": step, "event": event, "at": round(time.time(), 3), **extra}))

    def _entries(self) -> list[dict[str, Any]]:
        try:  # bounded, and never waiting on a FIFO planted in its place (append_line then refuses it)
            lines = read_regular(self.path, MAX_JOURNAL_BYTES).decode(errors="replace").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                entry = parse_json(line.encode())  # strict and depth-bounded: the state disk is not trusted
            except ValueError:
                continue  # a line torn by a crash (or not ours): skipped
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def interrupted(self) -> list[str]:
        """The steps the last run completed when it did not get to its end (killed, power lost); [] otherwise."""
        done: list[str] | None = None
        for entry in self._entries():
            if entry.get("step") == RUN:
                done = [] if entry.get("event") == "begin" else None
            elif done is not None and entry.get("event") == "done":
                done.append(str(entry.get("step")))
        return done or []


def _crash_point(step_id: str, after_journal: bool) -> None:
    if os.environ.get(CRASH_ENV) == step_id + ("+" if after_journal else ""):
        os.kill(os.getpid(), signal.SIGKILL)


def apply_plan(
    plan: Plan,
    backends: Backends,
    journal: Journal,
    on_step: Callable[[StepResult], None],
    deadline: float | None = None,
) -> tuple[list[StepResult], str | None]:
    """Run every action; stop at the first failure. Returns the results and the failure reason (None: success)."""
    results: list[StepResult] = []
    journal.append(RUN, "begin", steps=len(plan))
    for action in plan:
        if deadline is not None and time.monotonic() > deadline:
            journal.append(RUN, "end", status="timeout")
            return results, f"first boot timed out before {action.id}"
        journal.append(action.id, "start")
        t = time.monotonic()
        try:
            detail = action.run(backends)
        except Exception as exc:  # a backend failure is data for the report, not a traceback on the console
            result = StepResult(action.id, "failed", round(time.monotonic() - t, 3), f"{type(exc).__name__}: {exc}")
            journal.append(action.id, "failed", error=result.detail)
            journal.append(RUN, "end", status="failed")
            results.append(result)
            on_step(result)
            return results, f"{action.id}: {result.detail}"
        _crash_point(action.id, after_journal=False)
        result = StepResult(action.id, "ok", round(time.monotonic() - t, 3), detail)
        journal.append(action.id, "done", detail=detail)
        _crash_point(action.id, after_journal=True)
        results.append(result)
        on_step(result)
    journal.append(RUN, "end", status="ok")
    return results, None
