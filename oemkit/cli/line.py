"""`oemkit line`: the build line — an order sealed and built into signed appliance images (oemkit/line/,
docs/line.md)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from oemkit.cli.common import EXIT_NO, EXIT_OK, JsonOpt, app_state, console, emit_json, fail

if TYPE_CHECKING:
    from rich.console import Console

    from oemkit.line.report import Report, UnitResult


def line_command(
    ctx: typer.Context,
    orders: Annotated[Path, typer.Argument(help="The order: CSV serial,profile,site[,model], as compile --orders.")],
    core: Annotated[Path, typer.Option("--core", help="The core folder (oemkit core build).")],
    key: Annotated[Path, typer.Option("--key", help="The factory's signing.key: seals each unit.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT: each unit goes to OUT/<serial>/.")],
    keys: Annotated[Path, typer.Option("--keys", help="The keys folder with secureboot/ (db signs).")] = Path("keys"),
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Units built at once (default: the CPUs).")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="qcow2 (default): an overlay on OUT/.base/; raw: standalone.")
    ] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML (a test case a unit).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild units built from another config or core; replace --junit.")
    ] = False,
    register: Annotated[
        str | None,
        typer.Option(
            "--register",
            help="Last: register each built unit with this provisioning service URL and write its enrolment token "
            "(after burn-in: rerun the line with it). 'config' uses each unit's own phone_home URL and CA.",
        ),
    ] = None,
    register_ca: Annotated[
        Path | None, typer.Option("--register-ca", help="PEM CA for an https --register URL (default: the system's).")
    ] = None,
    admin_token_env: Annotated[
        str, typer.Option("--admin-token-env", help="With --register: the variable holding the admin token.")
    ] = "OEMKIT_ADMIN_TOKEN",
    as_json: JsonOpt = False,
) -> None:
    """Seal every row of ORDERS and build its image into OUT/<serial>/ (unit.json, appliance.<format>,
    manifest.json, line.log), N units at once; a bad row or a failed build fails alone. A rerun skips the units that
    verify and were built from the same config and core. Report: OUT/line-report.json (--json: also on stdout).

    Exit 0: every unit ok or skipped; 1: a unit failed; 2: the orders, the core or the keys unreadable, or an output
    refused — checked before any unit starts; 130/143: stopped by Ctrl-C/SIGTERM (the report holds what finished).
    """
    from oemkit.errors import OemkitError
    from oemkit.line import run as line_run
    from oemkit.line.report import junit_xml
    from oemkit.outputs import check_new, write_output
    from oemkit.problems import ProblemsError

    admin = ca_pem = None
    if register is not None:
        from oemkit.cli.register import admin_token

        admin = admin_token(admin_token_env, as_json)  # before any work, as every other input
        try:
            ca_pem = register_ca.read_text() if register_ca is not None else None
        except OSError as exc:
            fail(OemkitError(f"cannot read the CA: {exc.strerror}", file=str(register_ca)), as_json=as_json)
    try:
        if junit is not None:
            check_new(junit, force)  # before any work: a JUnit file that would be refused at the end
        checked = line_run.prepare(orders, key=key, catalog_dir=app_state(ctx).catalog_dir, coredir=core,
                                   keys=keys, out=output, fmt=fmt)  # fmt: skip
    except (OemkitError, ProblemsError) as exc:
        fail(exc, as_json=as_json)
    err = console(stderr=True)
    try:
        with _display(err, checked.rows) as show:
            report = line_run.run(checked, workers=workers or line_run.default_workers(), force=force, on_result=show)
    except OemkitError as exc:  # before the first unit: the shared boot files could not be built
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"cannot write: {exc.strerror}", file=str(exc.filename or output)), as_json=as_json)
    if register is not None and admin is not None and report.stop_code is None:
        from oemkit.line.register import register_units

        server = None if register == "config" else register
        register_units(report, output, admin, server, ca_pem, workers or line_run.default_workers())
    document = report.to_dict()
    try:
        write_output(output / line_run.REPORT, json.dumps(document, indent=2, ensure_ascii=False) + "\n", force=True)
        if junit is not None:
            write_output(junit, junit_xml(report, orders.stem), force=force)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    if as_json:
        emit_json(document)
    _summary(err if as_json else console(), report, output / line_run.REPORT, junit)
    if report.error:
        sys.stderr.write(f"oemkit: error: the line stopped: {report.error}\n")
    code = report.stop_code if report.stop_code is not None else EXIT_NO if report.failed else EXIT_OK
    raise typer.Exit(code)


@contextlib.contextmanager
def _display(err: Console, total: int) -> Iterator[Callable[[UnitResult], None]]:
    """Per finished unit: a progress bar on a terminal (done, failed, skipped, units/min, ETA); else one plain line
    a unit on stderr, for the build log."""
    counts = {"ok": 0, "skipped": 0, "failed": 0}

    def tally(unit: UnitResult) -> int:
        counts[unit.status] += 1
        return sum(counts.values())

    if not err.is_terminal:

        def plain(unit: UnitResult) -> None:
            done = tally(unit)
            detail = unit.image if unit.status == "ok" else unit.reason
            sys.stderr.write(f"[{done}/{total}] {unit.serial} {unit.status} {unit.seconds:.1f}s: {detail}\n")
            sys.stderr.flush()

        yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    started = time.monotonic()
    fields = "{task.fields[failed]} failed, {task.fields[skipped]} skipped, {task.fields[rate]} units/min, ETA"
    with Progress(
        TextColumn("line"), BarColumn(), MofNCompleteColumn(), TextColumn(fields), TimeRemainingColumn(), console=err
    ) as progress:
        task = progress.add_task("line", total=total, failed=0, skipped=0, rate="-")

        def bar(unit: UnitResult) -> None:
            done = tally(unit)
            rate = f"{done * 60 / max(time.monotonic() - started, 1e-9):.1f}"
            progress.update(task, advance=1, failed=counts["failed"], skipped=counts["skipped"], rate=rate)
            if unit.status == "failed":
                progress.console.print(f"{unit.serial} failed: {unit.reason}", markup=False, highlight=False)

        yield bar


def _summary(out: Console, report: Report, report_file: Path, junit: Path | None) -> None:
    from rich.table import Table
    from rich.text import Text

    totals = report.totals()
    table = Table(title=Text(f"oemkit line {report.orders}"), title_justify="left")
    for name in ("units", "ok", "skipped", "failed", "not run", "units/min", "seconds", "workers"):
        table.add_column(name, justify="right")
    table.add_row(*(str(totals[k]) for k in ("units", "ok", "skipped", "failed", "not_run")),
                  f"{report.units_per_minute():.1f}", f"{report.seconds:.1f}", str(report.workers))  # fmt: skip
    out.print(table)
    failed = sorted((u for u in report.units if u.status == "failed"), key=lambda u: u.line)
    if failed:
        why = Table(title="failed", title_justify="left")
        for name in ("line", "serial", "reason"):
            why.add_column(name, overflow="fold")
        for u in failed:
            why.add_row(str(u.line), Text(u.serial), Text(u.reason or ""))  # Text: a reason's "[...]" is no markup
        out.print(why)
    where = f"report: {report_file}" + (f", JUnit: {junit}" if junit else "")
    if report.interrupted:
        where = f"interrupted: {totals['not_run']} units not run; {where}"
    out.print(where, markup=False, highlight=False)
