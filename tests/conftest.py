"""Shared fixtures: where the real dmidecode samples are, and the loaded catalog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oemkit.catalog.store import Catalog, load_catalog

pytest_plugins = ["tests.core_fixtures"]

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / "shared" / "hardware-samples" / "dmi"
_VENDORED = REPO / "tests" / "data" / "dmi"


def samples_dir() -> Path:
    """$OEMKIT_DMI_SAMPLES, else the project's shared samples beside the checkout (the newest set), else the
    copy vendored into tests/data/dmi so a lone clone still tests against real dumps."""
    env = os.environ.get("OEMKIT_DMI_SAMPLES")
    if env:
        return Path(env)
    return _SHARED if _SHARED.is_dir() else _VENDORED


def sample_dumps() -> list[Path]:
    return sorted(samples_dir().glob("*/*/*.txt"))


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(REPO / "hardware_catalog")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test session gets its own cache folder: tests never read or leave a user's ~/.cache/oemkit."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-golden", action="store_true", help="Rewrite golden files from current output.")


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with a checked-in golden file: a unified diff when different, a failure when missing (a new
    case needs its golden reviewed and committed), rewritten with --regenerate-golden."""
    import difflib

    def check(path: Path, actual: str) -> None:
        if request.config.getoption("--regenerate-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
            return
        if not path.exists():
            pytest.fail(f"no golden file {path.relative_to(REPO)}: run pytest --regenerate-golden, review, commit")
        expected = path.read_text()
        if actual != expected:
            diff = "".join(
                difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), str(path), "actual")
            )
            pytest.fail(
                f"output differs from {path.relative_to(REPO)} (rerun with --regenerate-golden if intended):\n{diff}"
            )

    return check
