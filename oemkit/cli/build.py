"""`oemkit keys init` and `oemkit compile`: seal unit configs at the factory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.output import EXIT_NO, EXIT_OK, EXIT_UNREADABLE, emit_json, fail

keys_app = typer.Typer(help="The factory's Ed25519 signing key.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


@keys_app.command("init")
def keys_init(
    folder: Annotated[Path, typer.Option("--dir", help="Where to write signing.key (0600) and signing.pub.")],
) -> None:
    """Create the factory signing key. It never overwrites an existing key."""
    from oemkit.errors import OemkitError
    from oemkit.keys import init_keys

    try:
        key, pub = init_keys(folder)
    except OemkitError as exc:
        fail(exc, as_json=False, code=EXIT_NO)
    except OSError as exc:
        fail(OemkitError(f"cannot create keys: {exc.strerror}", file=str(folder)), as_json=False)
    sys.stdout.write(f"{key}\n{pub}\n")


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
    as_json: JsonOpt = False,
) -> None:
    """Seal unit configs: one (PROFILE --site --serial -o UNIT.json) or a whole order (--orders CSV -o DIR).

    Exit 0: all sealed; 1: a unit's profile is invalid (problems listed per unit/row); 2: unreadable input.
    """
    from oemkit.catalog.store import load_catalog
    from oemkit.errors import OemkitError
    from oemkit.keys import load_private_key

    try:
        signing_key = load_private_key(key)
        catalog = load_catalog((ctx.obj or {}).get("catalog_dir"))
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    if orders is not None:
        _compile_orders(orders, signing_key, catalog, output, as_json)
        return
    if profile is None or site is None or serial is None:
        fail(OemkitError("give PROFILE --site SITE --serial SERIAL, or --orders ORDERS.csv"), as_json=as_json)
    from oemkit.compile import compile_unit
    from oemkit.orders import SERIAL

    if not SERIAL.match(serial):
        fail(
            OemkitError(f"serial {serial!r} is not 3-32 letters, digits and '-' (not at either end)"),
            as_json=as_json,
            code=EXIT_NO,
        )
    compiled = compile_unit(profile, site, serial, signing_key, catalog, model, unit)
    if compiled.problems or compiled.document is None:
        if as_json:
            emit_json({"serial": serial, "status": "error", "problems": [p.to_dict() for p in compiled.problems]})
        for p in compiled.problems:
            sys.stderr.write(f"{p}\n")
        unreadable = any(p.path == "(document)" for p in compiled.problems)
        raise typer.Exit(EXIT_UNREADABLE if unreadable else EXIT_NO)
    from oemkit.orders import _write

    try:
        _write(output, compiled.text())
    except OSError as exc:
        fail(OemkitError(f"cannot write: {exc.strerror}", file=str(output)), as_json=as_json)
    doc = compiled.document
    if as_json:
        emit_json({k: doc[k] for k in ("schema", "serial", "model", "site", "content_id")} | {"file": str(output)})
    else:
        sys.stdout.write(f"{output}: {doc['serial']} {doc['model']} {doc['site']} {doc['content_id']}\n")


def _compile_orders(orders: Path, key, catalog, out_dir: Path, as_json: bool) -> None:
    from oemkit.errors import OemkitError
    from oemkit.orders import compile_orders

    failed = total = 0
    try:
        for row in compile_orders(orders, key, catalog, out_dir):
            total += 1
            failed += bool(row.problems)
            if as_json:
                sys.stdout.write(__import__("json").dumps(row.to_dict()) + "\n")  # JSON lines: one per row
            elif row.problems:
                for p in row.problems:
                    sys.stderr.write(f"{row.serial}: {p}\n")
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"cannot write: {exc.strerror}", file=str(exc.filename or out_dir)), as_json=as_json)
    if not as_json:
        sys.stdout.write(f"{total - failed} of {total} units sealed into {out_dir}\n")
    raise typer.Exit(EXIT_NO if failed else EXIT_OK)
