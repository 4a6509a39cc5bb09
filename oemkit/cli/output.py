"""Output helpers shared by the commands: JSON for scripts (no rich import), rich for people, one error path."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK, EXIT_NO, EXIT_UNREADABLE = 0, 1, 2


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


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
