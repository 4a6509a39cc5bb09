"""The `oemkit` command: a thin typer root; each group lives in its own module and imports what it uses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oemkit import __version__
from oemkit.cli import boot, burnin, catalog, core, firstboot, image, keys, line, profile, register, seal, serve, twin
from oemkit.cli.common import AppState

app = typer.Typer(
    name="oemkit",
    help="Build servers that boot into an embedded KVM hypervisor already configured for their site.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.add_typer(catalog.app, name="catalog")
app.add_typer(profile.app, name="profile")
app.add_typer(keys.app, name="keys")
app.command("compile")(seal.compile_command)
app.add_typer(firstboot.facts_app, name="facts")
app.add_typer(firstboot.firstboot_app, name="firstboot")
app.add_typer(core.app, name="core")
app.add_typer(image.app, name="image")
app.command("boot")(boot.boot_command)
app.command("line")(line.line_command)
app.add_typer(twin.app, name="twin")
app.command("burnin")(burnin.burnin_command)
app.command("serve")(serve.serve_command)
app.command("register")(register.register_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oemkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    catalog_dir: Annotated[
        Path | None,
        typer.Option("--catalog", envvar="OEMKIT_CATALOG", help="Hardware catalog folder (default: the shipped one)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = AppState(catalog_dir=catalog_dir)


def _terminated(signum: int, _frame: object) -> None:
    # SIGTERM (a build line's timeout, systemd stopping a job) unwinds like Ctrl-C: every `finally` runs, so an
    # interrupted write removes its temporary file instead of leaving a half-sealed config behind.
    raise SystemExit(128 + signum)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    app()
