"""`oemkit image`: the appliance disk image of a sealed unit (oemkit/image/appliance/, docs/appliance.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.common import JsonOpt, emit_json, fail

app = typer.Typer(help="The appliance: one unit's bootable disk image.", no_args_is_help=True)


@app.command("build")
def build_command(
    unit: Annotated[Path, typer.Argument(help="The unit's sealed config (oemkit compile).")],
    core: Annotated[Path, typer.Option("--core", help="The core folder (oemkit core build).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="OUT: the image goes to OUT/<serial>/.")],
    keys: Annotated[Path, typer.Option("--keys", help="The keys folder with secureboot/ (db signs).")] = Path("keys"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing image of this unit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build OUT/<serial>/appliance.raw: GPT with an ESP (signed systemd-boot, the core's signed UKI) and the config
    partition, plus manifest.json. Exit 0 built, 2 bad input, an existing image (without --force) or a tool
    missing."""
    from oemkit.errors import OemkitError
    from oemkit.image.appliance import image
    from oemkit.seal import secureboot

    try:
        manifest = image.build(unit, core, secureboot.load(keys), output, force=force)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"{exc.strerror}", file=exc.filename), as_json=as_json)
    if as_json:
        emit_json(manifest)
    else:
        raw = manifest["files"]["appliance.raw"]
        sys.stdout.write(f"{output / manifest['serial'] / 'appliance.raw'}: {raw['bytes']:,} bytes, core "
                         f"{manifest['core_id']}, UKI {manifest['uki']['sha256'][:16]}\n")  # fmt: skip


@app.command("verify")
def verify_command(
    unit_dir: Annotated[Path, typer.Argument(help="A built unit: OUT/<serial>.")],
    keys: Annotated[
        Path | None, typer.Option("--keys", help="Also check both boot files are signed by this factory's db.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a built image against its manifest: the image's bytes, its GPT, the UKI and systemd-boot on the ESP, the
    unit config on its partition (and with --keys, the db signatures). Exit 0 verified, 1 a mismatch, 2 unreadable."""
    from oemkit.cli.common import EXIT_NO
    from oemkit.errors import OemkitError
    from oemkit.image.appliance.verify import verify
    from oemkit.seal import secureboot

    try:
        manifest, problems = verify(unit_dir, secureboot.load(keys) if keys else None)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"{exc.strerror}", file=exc.filename), as_json=as_json)
    if as_json:
        emit_json({"serial": manifest["serial"], "verified": not problems, "problems": problems})
    else:
        for line in problems:
            sys.stderr.write(f"{unit_dir}: {line}\n")
        if not problems:
            sys.stdout.write(f"{unit_dir}: verified (core {manifest['core_id']}, serial {manifest['serial']})\n")
    if problems:
        raise typer.Exit(EXIT_NO)
