"""The line's last step: every unit that built (or verified on a rerun) registered with the provisioning service and
given its enrolment token (oemkit/registration.py) — after burn-in, so a line that burns in runs twice: build, burn
in, then the same command with `--register`, whose rerun skips the built units and registers them.

A unit whose registration fails becomes a failed unit of the run, with the service's answer as its reason; the
others are registered all the same. Each outcome goes to the unit's audit log (line.log)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oemkit import registration
from oemkit.errors import OemkitError
from oemkit.line import audit
from oemkit.line.report import Report, UnitResult


def register_units(
    report: Report,
    out: Path,
    admin_token: str,
    server: str | None,
    ca_pem: str | None,
    workers: int,
    on_result: Callable[[UnitResult], None] | None = None,
) -> None:
    """Register every ok/skipped unit of `report` (in place: `registered`, or failed with the reason)."""
    todo = [r for r in report.units if r.status in ("ok", "skipped")]

    def one(result: UnitResult) -> UnitResult:
        unit_dir = out / result.serial
        try:
            done = registration.register(unit_dir, admin_token, server, ca_pem)
        except Exception as exc:  # any unit's failure is that unit's: the run goes on and its report is written
            why = exc.message if isinstance(exc, OemkitError) else f"{type(exc).__name__}: {exc}"
            result.status, result.reason, result.registered = "failed", f"registration: {why}", False
            audit.record(unit_dir, "failed", result.line, {"reason": result.reason})
        else:
            result.registered = True
            audit.record(unit_dir, "registered", result.line,
                         {"server": done.server, "token_file_sha256": done.token_file_sha256})  # fmt: skip
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # mostly qemu-img, mtools and the network
        for result in pool.map(one, todo):
            if on_result is not None:
                on_result(result)
