"""One broken file per check, each with a golden expected output that pins the exact file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app

from .conftest import REPO

BROKEN = REPO / "tests" / "data" / "profiles" / "broken"
CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.endswith(".site.yaml"))


def test_there_is_a_case_per_check() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_broken_profile(case: Path, golden, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # relative paths in the output, so the golden files are machine-independent
    args = ["profile", "validate", str(case.relative_to(REPO)), "--serial", "SN0001"]
    site = case.with_name(case.stem + ".site.yaml")
    if site.exists():
        args += ["--site", str(site.relative_to(REPO))]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (1, 2), result.stdout  # broken means invalid (1) or unreadable (2), never valid
    golden(case.with_suffix(".expected"), f"exit {result.exit_code}\n{result.stdout}")
