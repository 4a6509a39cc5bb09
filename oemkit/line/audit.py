"""The audit trail of a serial: OUT/<serial>/line.log, one JSON object a line, appended and fsync'd (a crash loses at
most the line being written), never rewritten — every run of the line that touched the serial leaves its events.

    {"time": "2026-12-01T10:15:02.123Z", "event": "sealed", "line": 4, "detail": {...}}

Events: `sealed` (the config sealed for this run: its content id), `built` (the image: path, sha256, bytes, core),
`skipped` (it verifies and was built from this config and core), `failed` (the reason, located)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from hypervisor_core.fsutil import append_line

LOG = "line.log"
EVENTS = ("sealed", "built", "skipped", "failed", "registered")


def now() -> str:
    """UTC, ISO 8601 with milliseconds and a Z."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(unit_dir: Path, event: str, line: int, detail: dict[str, Any], *, time: str | None = None) -> None:
    """Append one event to UNIT_DIR/line.log (the folder is made if missing; never through a link)."""
    assert event in EVENTS, event
    entry = {"time": time or now(), "event": event, "line": line, "detail": detail}
    append_line(unit_dir / LOG, json.dumps(entry, ensure_ascii=False), mode=0o666)  # a factory output: umask applies
