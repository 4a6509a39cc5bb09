"""What the box reports (docs/zero-touch.md, the report body): the agent's report.json made into the contract's
fields, bounded to the contract's 64 KiB; the init's record when the agent could not run; and report.json spooled
once, however often the box boots with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypervisor_core import __version__
from hypervisor_core.fsutil import read_regular, write_atomic
from hypervisor_core.layout import Layout
from hypervisor_core.spool import MAX_BODY_BYTES

REASON_MAX = 2000
STEPS_MAX = 200
MAX_REPORT_BYTES = 1 << 20  # report.json: steps with their detail, a few KiB
OS_RELEASE = "etc/os-release"  # OEMKIT_CORE_ID=<core id>, when the core's os-release carries it
CMDLINE = "proc/cmdline"  # oemkit.core=<core id>: the signed UKI's command line
_CORE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
FAULTS = ("refusal", "step", "core")
# match.py's refusals of a box that is not the one the config was sealed for: such a box enrols and reports only
# when the config says so (firstboot.on_hardware_mismatch: report), else it would bind its own key to another
# unit's serial and burn that unit's token.
WRONG_BOX = ("wrong unit:", "wrong hardware:")
# The report body's fields (the contract's), in the order a reader meets them; the JSON is sorted anyway.
REPORT_KEYS = ("status", "reason", "fault", "failed_step", "steps", "bank", "pcr15", "core_id", "content_id",
               "agent", "origin")  # fmt: skip


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _line(value: Any, limit: int) -> str | None:
    """One line of text the service stores as it is: no control characters, no lone surrogates (a report.json
    damaged or hand-edited must not cost the report a 422)."""
    if not isinstance(value, str) or not value:
        return None
    return "".join("?" if c < " " or "\x7f" <= c < "\xa0" or "\ud800" <= c <= "\udfff" else c for c in value[:limit])


def _epoch(value: Any) -> float:
    """A time in seconds as the service takes it (0 to 1e11); now when the report holds none."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1e11
    return float(value) if ok else time.time()


def report_record(doc: Mapping[str, Any], core_id: str | None) -> dict[str, Any]:
    """The spooled report (REPORT_KEYS) from the agent's report.json, bounded: its body stays within 64 KiB."""
    status = "READY" if doc.get("status") == "READY" else "FAILED"
    steps: list[dict[str, Any]] = []
    raw_steps = doc.get("steps")
    for step in raw_steps if isinstance(raw_steps, list) else []:
        if isinstance(step, dict):
            seconds = step.get("seconds")
            ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
            status_of = "ok" if step.get("status") == "ok" else "failed"
            took = min(max(round(float(seconds), 3), 0.0), 1e7) if ok and seconds is not None else 0.0
            steps.append({"id": _line(step.get("id"), 200) or "?", "status": status_of, "seconds": took})
    failed = next((s["id"] for s in steps if s["status"] == "failed"), None)
    pcr15 = doc.get("pcr15")
    record: dict[str, Any] = {
        "status": status,
        "reason": _text(doc.get("reason"), REASON_MAX),
        "fault": None if status == "READY" else (doc.get("fault") if doc.get("fault") in FAULTS else "core"),
        "failed_step": failed,
        "steps": steps[:STEPS_MAX],
        "bank": doc.get("bank") if doc.get("bank") in ("a", "b") else None,
        "pcr15": pcr15 if isinstance(pcr15, str) and re.fullmatch("[0-9a-f]{64}", pcr15) else None,
        "core_id": core_id,
        "content_id": _line(doc.get("content_id"), 200),
        "agent": _line(doc.get("agent"), 64) or __version__,
        "origin": "agent",
    }
    while len(json.dumps(record)) > MAX_BODY_BYTES - 1024 and record["steps"]:  # room for serial, seq, id...
        record["steps"] = record["steps"][: len(record["steps"]) // 2]  # escaped non-ASCII ids can be 6x longer
    return record


def init_failure_record(reason: str, boot: Mapping[str, Any], core_id: str | None, content_id: str) -> dict[str, Any]:
    """The init's record of a core failure: the agent could not run, or stopped without a status."""
    return {"status": "FAILED", "reason": reason[:REASON_MAX] or "the agent could not run", "fault": "core",
            "failed_step": None, "steps": [], "bank": boot.get("boot_bank"), "pcr15": boot.get("pcr15"),
            "core_id": core_id, "content_id": content_id, "agent": __version__, "origin": "init"}  # fmt: skip


def read_core_id(root: Path) -> str | None:
    """The running core's id: `oemkit.core=` on the kernel command line, which the signed UKI carries (the id hashes
    the initrd, so the initrd cannot hold it; oemkit/image/appliance/uki.py); else OEMKIT_CORE_ID from an
    os-release; else None (a core booted directly, without a UKI: developer mode)."""
    try:
        words = read_regular(root / CMDLINE, 64 << 10).decode(errors="replace").split()
    except OSError:
        words = []
    for word in words:
        if word.startswith("oemkit.core="):
            value = word.partition("=")[2]
            return value if _CORE_ID.fullmatch(value) else None
    try:
        text = read_regular(root / OS_RELEASE, 16 << 10).decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "OEMKIT_CORE_ID":
            value = value.strip().strip("\"'")
            return value if _CORE_ID.fullmatch(value) else None
    return None


def wrong_box(record: Mapping[str, Any]) -> str | None:
    reason = record.get("reason")
    if record.get("fault") == "refusal" and isinstance(reason, str) and reason.startswith(WRONG_BOX):
        return reason
    return None


@dataclass(frozen=True)
class AgentReport:
    record: dict[str, Any]  # as spooled (report_record)
    made_at: float  # when the agent finished it
    digest: str  # of report.json's bytes: the same report is spooled once, whatever the boots

    @property
    def id(self) -> str:
        """Its idempotency key, from its digest: spooled twice (a crash before the digest was kept), it is still
        one entry in the spool and one report at the service (409 duplicate)."""
        return hashlib.sha256(b"oemkit-report-id\n" + self.digest.encode()).hexdigest()[:32]


def read_agent_report(state: Layout, core_id: str | None, say: Callable[[str], None]) -> AgentReport | None:
    """The agent's last report.json, or None (none yet, unreadable, not a first-boot report: said why)."""
    try:
        raw = read_regular(state.report, MAX_REPORT_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        say(f"phone home: cannot read {state.report}: {exc.strerror or exc}")
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or doc.get("status") not in ("READY", "FAILED"):
        say(f"phone home: {state.report} is not a first-boot report: not spooled")
        return None
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    return AgentReport(report_record(doc, core_id), _epoch(doc.get("finished")), digest)


def spooled_before(state: Layout, report: AgentReport) -> bool:
    """Whether this very report was spooled (or sent) by an earlier run. A digest file that cannot be read counts
    as no: spooling it again is harmless, its id being the same."""
    try:
        return read_regular(state.phonehome_last_report, 128).decode(errors="replace").strip() == report.digest
    except OSError:
        return False


def remember(state: Layout, report: AgentReport) -> None:
    """Keep the report's digest: later runs spool it no more. Raises OSError."""
    write_atomic(state.phonehome_last_report, report.digest + "\n", 0o644, mkdir=True)
