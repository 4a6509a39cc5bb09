"""`oemkit burnin`: every built unit of an order booted on its twin, N at a time over libvirt hosts (oemkit/burnin/,
docs/burnin.md)."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from oemkit.cli.common import EXIT_NO, EXIT_OK, JsonOpt, console, emit_json, fail, load_catalog_or_fail

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from oemkit.burnin.job import Unit
    from oemkit.burnin.report import Report, UnitResult


def burnin_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="OUT: the built units, OUT/<serial>/ (oemkit line, oemkit image build).")],
    connect: Annotated[
        list[str] | None,
        typer.Option(
            "--connect", "-c", help="A libvirt URI to run twins on (default qemu:///system); repeat for more hosts."
        ),
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", "-j", min=1, help="Twins at once, over all hosts.")] = 1,
    vars_fd: Annotated[
        Path,
        typer.Option("--vars", help="The OVMF variable store with the factory's keys (`oemkit keys enroll-vars`)."),
    ] = Path("keys/VARS.fd"),
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds a unit may take to its status.")] = 900,
    accel: Annotated[str, typer.Option("--accel", help="auto (detect, as oemkit boot), kvm or tcg.")] = "auto",
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML (a test case a unit).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier burn-in's report, console logs and --junit file.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Boot every built unit in OUT on its model's twin through libvirt, N at a time spread over the --connect
    hosts, and report what each unit's first boot said: console logs in OUT/.burnin/<serial>.console.log, the report
    in OUT/.burnin/report.json (--json: also on stdout), --junit for CI.

    Exit 0: every unit READY with the PCR 15 the factory predicted; 1: a unit FAILED, timed out, could not be run
    (libvirt, an unreadable unit folder) or measured another PCR 15; 2: bad input (OUT, no units, --vars, an
    existing output without --force, a host unreachable) — checked before any twin starts; 130/143: stopped by
    Ctrl-C/SIGTERM (every running twin destroyed and cleaned, the rest cancelled; the report holds them all).
    """
    from dataclasses import replace

    from oemkit.burnin import job as burnin_job
    from oemkit.burnin import run as burnin_run
    from oemkit.burnin.report import junit_xml
    from oemkit.errors import OemkitError
    from oemkit.outputs import write_output
    from oemkit.twin import appliance

    catalog = load_catalog_or_fail(ctx, as_json)
    try:
        appliance.require_tools()
        job = burnin_job.prepare(out, connect or [], parallel=parallel, timeout=timeout, vars_fd=vars_fd,
                                 catalog=catalog, force=force, junit=junit, accel=accel)  # fmt: skip
        cleaned = burnin_job.check_hosts(job.uris, [u.serial for u in job.units if u.problem is None])
        job = replace(job, cleaned=cleaned)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    err = console(stderr=True)
    if not as_json:
        err.print(f"oemkit burnin: {len(job.units)} units, {job.parallel} at a time on {', '.join(job.uris)}; "
                  f"{job.accel} ({job.accel_why})", markup=False, highlight=False)  # fmt: skip
    if cleaned and not as_json:
        err.print(
            "oemkit burnin: removed twins an earlier run left: "
            + "; ".join(f"{serial}: {', '.join(what)}" for serial, what in cleaned.items()),
            markup=False,
        )
    board = Board(job.units)
    try:
        with _display(err, board, live=err.is_terminal and not as_json) as show:
            report = burnin_run.burn_in(job, on_start=board.start, on_phase=board.phase, on_result=show)
        code = EXIT_OK if report.ok else EXIT_NO
    except burnin_run.Interrupted as stop:
        report, code = stop.report, stop.code
    except KeyboardInterrupt:  # a second Ctrl-C while the twins were being cleaned: they still are, before exit
        sys.stderr.write("oemkit: interrupted again: no report; the running twins are cleaned before the end\n")
        raise typer.Exit(130) from None
    document = report.to_dict()
    where = job.logs / burnin_job.REPORT
    try:
        job.logs.mkdir(exist_ok=True)  # made by the run, unless it was stopped before its first twin
        write_output(where, json.dumps(document, indent=2, ensure_ascii=False) + "\n", force=force)
        if junit is not None:
            write_output(junit, junit_xml(report, job.out.name), force=force)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"cannot write: {exc.strerror}", file=str(exc.filename or job.logs)), as_json=as_json)
    if as_json:
        emit_json(document)
    _summary(err if as_json else console(), report, where, junit)
    raise typer.Exit(code)


@dataclass
class Row:
    """A unit as the live table shows it."""

    serial: str
    model: str | None
    uri: str | None = None
    state: str = "queued"  # queued, booting, then the unit's status
    phase: str = ""  # the last `oemkit-core:` mark its console showed
    started: float | None = None
    seconds: float | None = None
    passed: bool | None = None


class Board:
    """What every unit is doing now: written by the burn-in's worker threads (start, phase) and by this thread (a
    result), read by the live table as it refreshes."""

    def __init__(self, units: Sequence[Unit]) -> None:
        self.lock = threading.Lock()
        self.rows = {u.folder: Row(u.serial, u.model) for u in units}

    def start(self, unit: Unit, uri: str) -> None:
        with self.lock:
            row = self.rows[unit.folder]
            row.uri, row.state, row.started = uri, "booting", time.monotonic()

    def phase(self, unit: Unit, name: str) -> None:
        with self.lock:
            self.rows[unit.folder].phase = name

    def finish(self, result: UnitResult) -> None:
        with self.lock:
            row = self.rows[Path(result.folder or "")]
            row.uri, row.state, row.seconds, row.passed = result.uri, result.status, result.seconds, result.passed
            if result.status == "READY" and not result.passed:
                row.phase = "PCR 15 mismatch"

    def table(self, height: int) -> Table:
        """Every unit while they fit in `height` lines; else the booting ones first, then the ones that did not
        pass, then the rest, cut to fit (the caption counts them all)."""
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            rows = [Row(**vars(r)) for r in self.rows.values()]
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        if len(rows) > height:
            rank = {"booting": 0, "queued": 3}
            rows.sort(key=lambda r: rank.get(r.state, 2 if r.passed else 1))
            rows = rows[: max(height, 1)]
        table = Table(title=Text("oemkit burnin"), title_justify="left", caption_justify="left",
                      caption=", ".join(f"{n} {s}" for s, n in counts.items()))  # fmt: skip
        for name in ("unit", "model", "uri", "state", "phase", "seconds"):
            table.add_column(name, justify="right" if name == "seconds" else "left", overflow="fold")
        now = time.monotonic()
        for r in rows:
            seconds = r.seconds if r.seconds is not None else now - r.started if r.started is not None else None
            style = {"booting": "cyan", "queued": "dim"}.get(r.state, "green" if r.passed else "red")
            table.add_row(Text(r.serial), Text(r.model or "?"), Text(r.uri or ""), Text(r.state, style=style),
                          Text(r.phase), f"{seconds:.0f}" if seconds is not None else "")  # fmt: skip
        return table


@contextlib.contextmanager
def _display(err: Console, board: Board, live: bool) -> Iterator[Callable[[UnitResult], None]]:
    """Per finished unit: the live table on a terminal (refreshed as the twins go); else one plain line a unit on
    stderr, for the burn-in's log."""
    total, done = len(board.rows), [0]

    def plain(result: UnitResult) -> None:
        board.finish(result)
        done[0] += 1
        detail = "" if result.passed else f": {result.why()}"
        sys.stderr.write(f"[{done[0]}/{total}] {result.serial} {result.status} {result.seconds:.0f}s "
                         f"{result.uri or ''}{detail}\n")  # fmt: skip
        sys.stderr.flush()

    if not live:
        yield plain
        return
    from rich.live import Live

    with Live(get_renderable=lambda: board.table(err.height - 8), console=err, refresh_per_second=2,
              redirect_stdout=False, redirect_stderr=False):  # fmt: skip
        yield board.finish


def _summary(out: Console, report: Report, report_file: Path, junit: Path | None) -> None:
    from rich.table import Table
    from rich.text import Text

    totals = report.totals()
    table = Table(title=Text(f"oemkit burnin {report.out}"), title_justify="left")
    for name in ("units", "ready", "failed", "timeout", "errors", "cancelled", "units/hour", "seconds", "parallel"):
        table.add_column(name, justify="right")
    table.add_row(*(str(totals[k]) for k in ("units", "ready", "failed", "timeout", "errors", "cancelled")),
                  f"{report.units_per_hour():.1f}", f"{report.seconds:.0f}", str(report.parallel))  # fmt: skip
    out.print(table)
    bad = [u for u in report.units if not u.passed and u.status != "cancelled"]
    if bad:
        why = Table(title="not ready", title_justify="left")
        for name in ("unit", "model", "uri", "status", "kind", "reason"):
            why.add_column(name, overflow="fold")
        for u in bad:  # Text: a reason's "[...]" is no markup
            why.add_row(Text(u.serial), Text(u.model or "?"), Text(u.uri or ""), u.status, u.kind or "", Text(u.why()))
        out.print(why)
    where = f"report: {report_file}, console logs: {report_file.parent}" + (f", JUnit: {junit}" if junit else "")
    if report.interrupted:
        where = f"interrupted: {totals['cancelled']} units cancelled; {where}"
    out.print(where, markup=False, highlight=False)
