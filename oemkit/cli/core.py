"""`oemkit core build` and `oemkit core footprint`: the embedded hypervisor core (oemkit/image/core/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.common import EXIT_NO, JsonOpt, app_state, console, emit_json, fail

app = typer.Typer(help="The embedded hypervisor core: build it from Debian packages, measure it.", no_args_is_help=True)


@app.command("build")
def build_command(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="The core folder to write (COREDIR).")],
    pubkey: Annotated[
        Path | None,
        typer.Option(
            "--pubkey", help="The factory's signing.pub (read-only in the image; without it every config is refused)."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Stage cache [default: $OEMKIT_CORE_CACHE or ~/.cache/oemkit/core]."),
    ] = None,
    compress: Annotated[
        str,
        typer.Option(
            "--compress",
            help="initrd compression: xz, gzip or zstd for every part, or per part: xz,modules=zstd,python=zstd.",
        ),
    ] = "xz",
    flavour: Annotated[str, typer.Option("--flavour", help="Debian kernel flavour: amd64 or cloud-amd64.")] = "amd64",
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Resolve the packages again (security updates); else the cached ones.")
    ] = False,
    budget_bytes: Annotated[
        int | None, typer.Option("--budget-bytes", help="Fail (exit 1) when the core is bigger.", min=1)
    ] = None,
    caps_seed: Annotated[
        bool,
        typer.Option(
            "--caps-seed/--no-caps-seed",
            help="Ship libvirt's QEMU capabilities, harvested by booting the new core once (saves a probe per boot).",
        ),
    ] = True,
    agent: Annotated[Path | None, typer.Option("--agent", hidden=True, help="A hypervisor_core folder.")] = None,
    init: Annotated[Path | None, typer.Option("--init", hidden=True, help="Another /init.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the core (vmlinuz + initrd.img) from Debian packages into COREDIR. Needs root.

    Exit 0: built, within the budget; 1: over the budget (COREDIR untouched, the footprint printed and kept in
    the cache); 2: cannot build (not root, a tool missing, a bad key, a failed step).
    """
    from oemkit.errors import OemkitError
    from oemkit.image.core.compression import CompressionError, plan
    from oemkit.image.core.recipe import FLAVOURS
    from oemkit.problems import ProblemsError

    try:
        plan(compress)
    except CompressionError as exc:
        fail(exc, as_json=as_json)
    if flavour not in FLAVOURS:
        fail(OemkitError(f"--flavour {flavour!r}: choose {' or '.join(FLAVOURS)}"), as_json=as_json)
    from oemkit.image.core.build import Options, build
    from oemkit.image.core.footprint import DEFAULT_BUDGET_BYTES

    try:
        opts = Options(
            output=output,
            pubkey=pubkey,
            cache_dir=cache,
            compression=compress,
            flavour=flavour,
            refresh=refresh,
            budget_bytes=budget_bytes or DEFAULT_BUDGET_BYTES,
            agent=agent,
            init=init,
            caps_seed=caps_seed,
            catalog_dir=app_state(ctx).catalog_dir,
        )
        result = build(opts, log=lambda line: print(f"core: {line}", file=sys.stderr))
    except (OemkitError, ProblemsError) as exc:  # a build step, a bad key, the catalog that names the drivers
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"{exc.strerror}", file=exc.filename), as_json=as_json)
    doc = {**result.footprint, "coredir": str(result.coredir) if result.coredir else None, "times": result.times}
    if as_json:
        emit_json(doc)
    else:
        from oemkit.image.core.footprint import render

        render(result.footprint, console())
        if result.coredir:
            sys.stdout.write(f"{result.coredir}: core {result.core_id}\n")
    if result.over_budget:
        sys.stderr.write(f"oemkit: error: {result.over_budget} (footprint: {result.footprint_file})\n")
        raise typer.Exit(EXIT_NO)


@app.command("footprint")
def footprint_command(
    coredir: Annotated[Path, typer.Argument(help="A core folder (oemkit core build -o).")],
    as_json: JsonOpt = False,
) -> None:
    """What takes the space in a core, measured again from its files (the core id must match them)."""
    from oemkit.errors import OemkitError
    from oemkit.image.core.footprint import measure, render

    try:
        doc = measure(coredir)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    if as_json:
        emit_json(doc)
    else:
        render(doc, console())
