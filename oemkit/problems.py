"""Problems as data: located, sortable, printable compiler-style, serialisable for --json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


def format_path(path: tuple[str | int, ...]) -> str:
    """('network', 'uplinks', 0, 'speed') → 'network.uplinks[0].speed'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"
    hint: str | None = None
    # The input could not be read at all (exit 2), as opposed to read and found wrong (exit 1).
    unreadable: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.path}: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
            "hint": self.hint,
        }


def unreadable(problems: list[Problem]) -> bool:
    return any(p.unreadable for p in problems)


class ProblemsError(Exception):
    """Several located problems at once (validation reports all, not only the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
