"""`oemkit compile`: seal unit configs at the factory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from oemkit.cli.common import (
    EXIT_NO,
    EXIT_OK,
    EXIT_UNREADABLE,
    JsonOpt,
    app_state,
    emit_json,
    emit_json_line,
    fail,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from oemkit.catalog.store import Catalog


def compile_command(
    ctx: typer.Context,
    profile: Annotated[Path | None, typer.Argument(help="The profile (not with --orders).")] = None,
    site: Annotated[Path | None, typer.Option("--site", "-s", help="The unit's site overlay.")] = None,
    serial: Annotated[str | None, typer.Option("--serial", help="The unit's serial number.")] = None,
    unit: Annotated[Path | None, typer.Option("--unit", help="Per-unit overrides (UnitOverlay).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Catalog model, when the profile has several.")] = None,
    orders: Annotated[Path | None, typer.Option("--orders", help="CSV: serial,profile,site[,model].")] = None,
    key: Annotated[Path, typer.Option("--key", help="The factory's signing.key.")] = Path("signing.key"),
    output: Annotated[Path, typer.Option("--output", "-o", help="UNIT.json, or a folder with --orders.")] = Path(
        "unit.json"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace existing unit configs.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Seal unit configs: one (PROFILE --site --serial -o UNIT.json) or a whole order (--orders CSV -o DIR).

    Exit 0: all sealed; 1: a unit's profile is invalid (problems listed per unit/row); 2: unreadable input (for an
    order: the CSV, or any row's files), or an
    output that exists (without --force) or is not a regular file — then nothing is written.
    """
    from oemkit.catalog.store import load_catalog
    from oemkit.errors import OemkitError
    from oemkit.outputs import check_new, write_output
    from oemkit.problems import ProblemsError, unreadable
    from oemkit.profile.schema import serial_problem
    from oemkit.seal.compile import compile_unit
    from oemkit.seal.keys import load_private_key

    try:
        if orders is None:
            check_new(output, force)  # before any work: an output that will be refused anyway
        signing_key = load_private_key(key)
        catalog = load_catalog(app_state(ctx).catalog_dir)
    except (OemkitError, ProblemsError) as exc:
        fail(exc, as_json=as_json)
    if orders is not None:
        _compile_orders(orders, signing_key, catalog, output, force, as_json)
    if profile is None or site is None or serial is None:
        fail(OemkitError("give PROFILE --site SITE --serial SERIAL, or --orders ORDERS.csv"), as_json=as_json)
    why = serial_problem(serial)
    if why:
        fail(OemkitError(why), as_json=as_json, code=EXIT_NO)
    compiled = compile_unit(profile, site, serial, signing_key, catalog, model, unit)
    if compiled.problems or compiled.config is None:
        if as_json:
            emit_json({"serial": serial, "status": "error", "problems": [p.to_dict() for p in compiled.problems]})
        for p in compiled.problems:
            sys.stderr.write(f"{p}\n")
        raise typer.Exit(EXIT_UNREADABLE if unreadable(compiled.problems) else EXIT_NO)
    try:
        write_output(output, compiled.text(), force=force)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    cfg = compiled.config
    if as_json:
        emit_json(
            {"schema": cfg.schema, "serial": cfg.serial, "model": cfg.model, "site": cfg.site,
             "content_id": cfg.content_id, "file": str(output)}
        )  # fmt: skip
    else:
        sys.stdout.write(f"{output}: {cfg.serial} {cfg.model} {cfg.site} {cfg.content_id}\n")


def _compile_orders(
    orders: Path, key: Ed25519PrivateKey, catalog: Catalog, out_dir: Path, force: bool, as_json: bool
) -> None:
    from oemkit.errors import OemkitError
    from oemkit.seal.orders import compile_orders

    failed = total = unreadable_rows = 0
    try:
        for row in compile_orders(orders, key, catalog, out_dir, force=force):
            total += 1
            failed += bool(row.problems)
            unreadable_rows += any(p.unreadable for p in row.problems)
            if as_json:
                emit_json_line(row.to_dict())  # JSON lines: one per row, as they are sealed
            elif row.problems:
                for p in row.problems:
                    sys.stderr.write(f"{row.serial}: {p}\n")
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"cannot write: {exc.strerror}", file=str(exc.filename or out_dir)), as_json=as_json)
    if not as_json:
        sys.stdout.write(f"{total - failed} of {total} units sealed into {out_dir}\n")
    # as for one unit: a row whose files could not be read is exit 2, one that was read and is wrong exit 1
    raise typer.Exit(EXIT_UNREADABLE if unreadable_rows else EXIT_NO if failed else EXIT_OK)
