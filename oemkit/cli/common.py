"""What every command shares: the app's state, the --json option, output helpers and exit codes. Thin on purpose:
rich and the factory's modules are imported only by the commands that use them (start-up time on a build line)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from oemkit.catalog.store import Catalog

EXIT_OK, EXIT_NO, EXIT_UNREADABLE = 0, 1, 2

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


@dataclass(frozen=True)
class AppState:
    """Options of the `oemkit` root, for every command (typer's ctx.obj)."""

    catalog_dir: Path | None = None


def app_state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, AppState) else AppState()


def catalog_dir(ctx: typer.Context) -> Path:
    from oemkit.catalog import default_catalog_dir

    return app_state(ctx).catalog_dir or default_catalog_dir()


def load_catalog_or_fail(ctx: typer.Context, as_json: bool) -> Catalog:
    """The validated catalog, or its located problems and exit 2."""
    from oemkit.catalog.store import load_catalog
    from oemkit.problems import ProblemsError

    try:
        return load_catalog(app_state(ctx).catalog_dir)
    except ProblemsError as exc:
        fail(exc, as_json=as_json)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def emit_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")


def console(stderr: bool = False) -> Console:
    from rich.console import Console  # only when a person is reading: rich costs start-up time

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, 120)  # piped into a log: do not squeeze tables to 80 columns
    return out


def fail(exc: Exception, *, as_json: bool, code: int = EXIT_UNREADABLE) -> NoReturn:
    """Report a located user-input problem (OemkitError or ProblemsError) and exit; never a traceback."""
    problems = getattr(exc, "problems", None)
    if as_json:
        if problems is not None:
            emit_json({"error": [p.to_dict() for p in problems]})
        else:
            emit_json({"error": exc.to_dict() if hasattr(exc, "to_dict") else {"message": str(exc)}})
    text = "\n".join(str(p) for p in problems) if problems is not None else str(exc)
    sys.stderr.write(f"oemkit: error: {text}\n" if problems is None else f"{text}\n")
    raise typer.Exit(code)
