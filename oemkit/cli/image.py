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
