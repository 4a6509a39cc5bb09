"""`oemkit image`: the appliance disk image of a sealed unit (oemkit/image/appliance/, docs/appliance.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from oemkit.cli.common import EXIT_NO, EXIT_UNREADABLE, JsonOpt, app_state, emit_json, fail

app = typer.Typer(help="The appliance: one unit's bootable disk image.", no_args_is_help=True)

KeysOpt = Annotated[Path, typer.Option("--keys", help="The keys folder with secureboot/ (db signs).")]


def _fail(exc: Exception, as_json: bool, refusals: tuple[type, ...] = ()) -> NoReturn:
    """A refusal of input that was read (a box it does not fit, an upgrade that must not happen) exits 1; input
    that cannot be read, an output that may not be written or a tool that failed exits 2."""
    from oemkit.errors import OemkitError

    if isinstance(exc, OSError):
        exc = OemkitError(f"{exc.strerror or exc}", file=exc.filename)
    fail(exc, as_json=as_json, code=EXIT_NO if isinstance(exc, refusals) else EXIT_UNREADABLE)


@app.command("build")
def build_command(
    ctx: typer.Context,
    unit: Annotated[Path, typer.Argument(help="The unit's sealed config (oemkit compile).")],
    core: Annotated[Path, typer.Option("--core", help="The core folder (oemkit core build).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT: the image goes to OUT/<serial>/.")],
    keys: KeysOpt = Path("keys"),
    fmt: Annotated[
        str, typer.Option("--format", help="qcow2: an overlay on the shared base in OUT/.base/; raw: standalone.")
    ] = "qcow2",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing image of this unit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build OUT/<serial>/appliance.qcow2 (or .raw): GPT with an ESP (signed systemd-boot, the core's signed UKI in
    banks A and B) and the config partition, plus manifest.json. Exit 0 built, 1 the image does not fit the model's
    smallest boot device, 2 bad input, an existing image (without --force) or a tool missing."""
    from oemkit.errors import OemkitError
    from oemkit.image.appliance import fit, image
    from oemkit.problems import ProblemsError
    from oemkit.seal import secureboot

    try:
        catalog = fit.catalog(app_state(ctx).catalog_dir)
        manifest = image.build(unit, core, secureboot.load(keys), output, force=force, fmt=fmt, catalog=catalog)
    except (OemkitError, ProblemsError, OSError) as exc:
        _fail(exc, as_json, (fit.DoesNotFit,))
    if as_json:
        emit_json(manifest)
        return
    name = f"appliance.{manifest['format']}"
    record, banks = manifest["files"][name], manifest["banks"]
    if manifest["format"] == "qcow2":
        size = f"{record['bytes']:,} bytes beyond the shared core (over {manifest['base']['path']})"
    else:
        size = f"{record['bytes']:,} bytes, standalone"
    sys.stdout.write(
        f"{output / manifest['serial'] / name}: {size}, core {manifest['core_id']}, banks {banks['a']['name']} + "
        f"{banks['b']['name']}\n"
    )


@app.command("verify")
def verify_command(
    unit_dir: Annotated[Path, typer.Argument(help="A built unit: OUT/<serial>.")],
    keys: Annotated[
        Path | None, typer.Option("--keys", help="Also check every EFI file is signed by this factory's db.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a built image against its manifest: the image's bytes, for qcow2 its backing file and where the overlay
    holds data, the GPT, every file on the ESP (both banks) and the config partition (and with --keys, the db
    signatures). Exit 0 verified, 1 a mismatch, 2 unreadable."""
    from oemkit.errors import OemkitError
    from oemkit.image.appliance.verify import verify
    from oemkit.seal import secureboot

    try:
        manifest, problems = verify(unit_dir, secureboot.load(keys) if keys else None)
    except (OemkitError, OSError) as exc:
        _fail(exc, as_json)
    if as_json:
        emit_json({"serial": manifest["serial"], "verified": not problems, "problems": problems})
    else:
        for line in problems:
            sys.stderr.write(f"{unit_dir}: {line}\n")
        if not problems:
            sys.stdout.write(f"{unit_dir}: verified (core {manifest['core_id']}, serial {manifest['serial']})\n")
    if problems:
        raise typer.Exit(EXIT_NO)


@app.command("upgrade")
def upgrade_command(
    unit_dir: Annotated[Path, typer.Argument(help="A built unit: OUT/<serial>.")],
    core: Annotated[Path, typer.Option("--core", help="The new core folder (oemkit core build).")],
    keys: KeysOpt = Path("keys"),
    as_json: JsonOpt = False,
) -> None:
    """Write a new core into the unit's image offline: its signed UKI into the bank that is not the default, as the
    next generation with boot counting (+3-0), the bank's old UKI removed; the manifest updated. All or nothing.
    Exit 0 upgraded, 1 refused (the image does not verify, the core is already in that bank, its UKI is not signed
    by db), 2 unreadable input or a tool failed."""
    from oemkit.errors import OemkitError
    from oemkit.image.appliance import upgrade
    from oemkit.seal import secureboot

    try:
        manifest = upgrade.upgrade(unit_dir, core, secureboot.load(keys))
    except (OemkitError, OSError) as exc:
        _fail(exc, as_json, (upgrade.UpgradeRefused,))
    if as_json:
        emit_json(manifest)
        return
    up = manifest["upgrade"]
    sys.stdout.write(
        f"{unit_dir}: core {up['core_id']} in bank {up['bank'].upper()} as {up['name']} (replaced "
        f"{up['replaced']['name']}, core {up['replaced']['core_id']}); bytes beyond the shared core "
        f"{up['bytes_beyond_core_before']:,} -> {manifest['bytes_beyond_core']:,}\n"
    )
