"""The error types oemkit raises for bad input: always located, never a traceback.

An OemkitError is one Problem raised (`.problem()` gives it back as data, to be reported with others); an
UnreadableInput is input that could not be read at all or is not what it claims to be, which the CLI maps to
exit 2 — by its type, never by looking at a message or a path.
"""

from __future__ import annotations

from oemkit.problems import Problem


class OemkitError(Exception):
    """A problem with something the user gave us, with where it is.

    `str()` renders it compiler-style, `file:line:col: message`, so a build-line log points straight at the cause.
    """

    unreadable = False

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.hint = hint

    @property
    def location(self) -> str:
        parts = [p for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(str(p) for p in parts)

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text

    def problem(self, file: str | None = None, path: str = "(document)") -> Problem:
        """This error as a located Problem (in `file` when it names none itself)."""
        return Problem(
            self.file or file or "(input)",
            self.line or 1,
            self.column or 1,
            path,
            self.message,
            hint=self.hint,
            unreadable=self.unreadable,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.hint,
        }


class UnreadableInput(OemkitError):
    """The input could not be read or is not what it claims to be (CLI exit code 2)."""

    unreadable = True


class OutputRefused(OemkitError):
    """An output that must not be written: it exists (without --force), it is not a regular file, or the folder
    cannot be written. Nothing was written (CLI exit code 2, like unreadable input: the run did not happen)."""

    unreadable = True
