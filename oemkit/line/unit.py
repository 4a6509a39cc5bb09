"""One unit's work on the line, as a worker runs it: decide from what OUT/<serial>/ already holds whether to build,
skip or refuse; put the freshly sealed config at OUT/<serial>/unit.json; build its image. Never raises for a bad
unit: every outcome is a UnitResult, and the serial's audit log has the event.

The rerun rule: a unit is skipped only when its manifest verifies (`image verify`, db signatures included) and it
was built from this very config (content id) and core, in the asked format. A unit whose files are partial or do
not verify is rebuilt. One that verifies but was built from another config or core is refused unless --force:
re-imaging a unit whose config changed is a decision, as re-sealing is."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from oemkit.errors import OemkitError
from oemkit.image.appliance import fit, image, verify
from oemkit.inputs import read_input
from oemkit.line import audit
from oemkit.line.report import UnitResult
from oemkit.outputs import check_new
from oemkit.problems import ProblemsError
from oemkit.seal.secureboot import SecureBootKeys

UNIT_JSON = "unit.json"
OTHER_BUILD = "built from another config/core; --force to rebuild"


@dataclass(frozen=True)
class Task:
    """Everything a worker needs for one unit; plain data, so it crosses to a worker process as well."""

    serial: str
    line: int
    sealed: Path  # the config sealed for this run, staged in OUT; moved to OUT/<serial>/unit.json when used
    sealed_at: str  # when it was sealed (the audit log's `sealed` event)
    seal_seconds: float
    coredir: Path
    core_id: str
    keys: SecureBootKeys
    out: Path
    fmt: str
    force: bool
    catalog_root: Path | None = None  # the catalog the line sealed with (`oemkit --catalog`): the fit check's too


def run(task: Task) -> UnitResult:
    """The unit's outcome; its audit log gets `sealed`, then `built`, `skipped` or `failed`."""
    started = time.perf_counter()
    unit_dir = task.out / task.serial
    result = UnitResult(task.serial, task.line, "failed")
    try:
        content_id = str(json.loads(read_input(task.sealed, "unit config"))["content_id"])  # sealed by this run
        audit.record(unit_dir, "sealed", task.line, {"content_id": content_id}, time=task.sealed_at)
        action, why, manifest = decide(task, content_id)
        if action == "refuse":
            result.reason = why
        else:
            dest = unit_dir / UNIT_JSON
            check_new(dest, force=True)  # never replace a link, a device or a folder
            os.replace(task.sealed, dest)  # same filesystem: whole, and synced with the run's one flush
            if action == "skip":
                result.status, result.reason = "skipped", why
            else:
                catalog = fit.catalog(task.catalog_root)  # loaded once per worker process, like image build's
                manifest = image.build(dest, task.coredir, task.keys, task.out, force=True, fmt=task.fmt,
                                       catalog=catalog)  # fmt: skip
                result.status, result.reason = "ok", why
            _describe(result, unit_dir, manifest, task.fmt)
    except OemkitError as exc:  # located; a tool's failure is located at the unit's folder
        result.reason = str(exc) if exc.location else f"{unit_dir}: {exc}"
    except ProblemsError as exc:  # the catalog the fit check reads, changed under the run into something invalid
        result.reason = "; ".join(str(p) for p in exc.problems)
    except OSError as exc:
        result.reason = f"{exc.filename or unit_dir}: {exc.strerror or exc}"
    except Exception as exc:  # a bug must fail its unit, not the line: the reason says what it was
        result.reason = f"{unit_dir}: internal error: {type(exc).__name__}: {exc}"
    result.seconds = task.seal_seconds + time.perf_counter() - started
    _log(unit_dir, task, result)
    return result


def decide(task: Task, content_id: str) -> tuple[str, str | None, dict]:
    """("build" | "skip" | "refuse", why, the earlier manifest or {}) from what OUT/<serial>/ holds."""
    unit_dir = task.out / task.serial
    if not os.path.lexists(unit_dir / "manifest.json"):
        partial = sorted(p.name for p in unit_dir.glob("appliance.*")) if unit_dir.is_dir() else []
        why = f"rebuilt: {', '.join(partial)} without a manifest (an interrupted build)" if partial else None
        return "build", why, {}
    try:
        manifest, problems = verify.verify(unit_dir, task.keys)
    except OemkitError as exc:
        return "build", f"rebuilt: the earlier build is partial or unreadable ({exc.message})", {}
    except OSError as exc:
        return "build", f"rebuilt: the earlier build is partial or unreadable ({exc.strerror or exc})", {}
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return "build", f"rebuilt: the earlier build does not verify: {problems[0]}{more}", {}
    built_config = (manifest.get("unit_config") or {}).get("content_id")
    built_core = manifest.get("core_id")
    built_formats = sorted(name.removeprefix("appliance.") for name in manifest.get("files") or {})
    changed = []
    if built_config != content_id:
        changed.append(f"config {str(built_config)[:16]}, now {content_id[:16]}")
    if built_core != task.core_id:
        changed.append(f"core {built_core}, now {task.core_id}")
    if changed:
        if task.force:
            return "build", f"rebuilt with --force: {'; '.join(changed)}", {}
        return "refuse", f"{OTHER_BUILD} ({'; '.join(changed)})", {}
    if task.fmt in built_formats:
        return "skip", "verified: built from this config and core", manifest
    if task.force:  # the same unit as another format: the build replaces the other format's image
        return "build", f"rebuilt with --force as {task.fmt} (was {', '.join(built_formats)})", {}
    return "refuse", f"built as {', '.join(built_formats)}; --force to rebuild as {task.fmt}", {}


def _describe(result: UnitResult, unit_dir: Path, manifest: dict, fmt: str) -> None:
    name = f"appliance.{fmt}"
    entry = (manifest.get("files") or {}).get(name) or {}
    result.image = str(unit_dir / name)
    result.sha256, result.bytes = entry.get("sha256"), entry.get("bytes")


def _log(unit_dir: Path, task: Task, result: UnitResult) -> None:
    try:
        if result.status == "ok":
            detail = {"image": result.image, "sha256": result.sha256, "bytes": result.bytes, "core_id": task.core_id,
                      "seconds": round(result.seconds, 3)}  # fmt: skip
            if result.reason:
                detail["reason"] = result.reason
            audit.record(unit_dir, "built", task.line, detail)
        else:
            audit.record(unit_dir, result.status, task.line, {"reason": result.reason})
    except OSError as exc:  # the unit's folder is a link or not writable: its result says so, the line goes on
        if result.status != "failed":
            result.status, result.image, result.sha256, result.bytes = "failed", None, None, None
        result.reason = f"{result.reason + '; ' if result.reason else ''}audit log: {exc.strerror or exc}"
