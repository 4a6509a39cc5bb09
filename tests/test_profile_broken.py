"""One broken file per check, each with a golden expected output that pins the exact file:line:col; warnings/ holds
the checks that can only warn, with their goldens too."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.profile import lint
from oemkit.profile.check import check
from oemkit.profile.resolve import ResolvedProfile

from .conftest import REPO

BROKEN = REPO / "tests" / "data" / "profiles" / "broken"
CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.endswith(".site.yaml"))
WARNINGS = sorted((REPO / "tests" / "data" / "profiles" / "warnings").glob("*.yaml"))


def _lint_checks() -> set[str]:
    """The functions lint() runs: each one a family of cross-checks."""
    tree = ast.parse(inspect.getsource(lint.lint))
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)} & {
        name for name in dir(lint) if name.startswith("_") and callable(getattr(lint, name))
    }


def test_there_is_a_case_per_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every lint check is exercised by some broken case, and every case finds something no other case finds."""
    fired: dict[str, set[str]] = {}
    original = ResolvedProfile.problem

    def record(self, path, message, severity="error", hint=None):  # which check reported it
        fired.setdefault(current, set()).add(sys._getframe(1).f_code.co_name)
        original(self, path, message, severity, hint)

    monkeypatch.setattr(ResolvedProfile, "problem", record)
    found: dict[str, frozenset[tuple[str, str]]] = {}
    for case in CASES + WARNINGS:
        current = case.stem
        site = case.with_name(case.stem + ".site.yaml")
        res = check(case, site if site.exists() else None, "SN0001", REPO / "hardware_catalog").resolved
        layer = {str(case): "profile", str(site): "site"}  # the same message from another layer is a new case
        found[case.stem] = frozenset((p.severity, layer.get(p.file), p.path, p.message) for p in res.problems)
        wanted = "error" if case in CASES else "warning"
        assert any(p.severity == wanted for p in res.problems), f"{case.stem} finds no {wanted}"
    missing = _lint_checks() - set().union(*fired.values())
    assert missing == set(), f"lint checks no case exercises: {sorted(missing)}"
    same = [(a, b) for a in found for b in found if a < b and found[a] == found[b]]
    assert same == [], f"cases that find exactly the same problems: {same}"


@pytest.mark.parametrize("case", CASES + WARNINGS, ids=lambda p: p.stem)
def test_broken_profile(case: Path, golden, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # relative paths in the output, so the golden files are machine-independent
    args = ["profile", "validate", str(case.relative_to(REPO)), "--serial", "SN0001"]
    site = case.with_name(case.stem + ".site.yaml")
    if site.exists():
        args += ["--site", str(site.relative_to(REPO))]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if case in WARNINGS:
        assert result.exit_code == 0, result.stdout  # a warning alone never fails validation
    else:
        assert result.exit_code in (1, 2), result.stdout  # broken means invalid (1) or unreadable (2), never valid
    golden(case.with_suffix(".expected"), f"exit {result.exit_code}\n{result.stdout}")
