"""The cached identity index: same answers as the validated catalog, no pydantic on a cache hit, never stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oemkit.catalog.cache import load_index
from oemkit.catalog.store import Catalog
from oemkit.hardware.dmi import read_report
from oemkit.problems import ProblemsError

from .conftest import REPO, sample_dumps


def test_index_answers_like_the_catalog(catalog: Catalog) -> None:
    index = load_index(REPO / "hardware_catalog")
    for dump in sample_dumps():
        box = read_report(dump).identity
        assert index.identify(box) == catalog.identify(box)


def test_cache_hit_imports_no_pydantic_or_yaml(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from oemkit.catalog.cache import load_index\n"
        f"load_index(Path({str(REPO / 'hardware_catalog')!r}))\n"
        "print(json.dumps(sorted(m for m in ('pydantic', 'yaml') if m in sys.modules)))\n"
    )
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert json.loads(first.stdout) == ["pydantic", "yaml"]  # the miss validated the catalog
    assert json.loads(second.stdout) == []  # the hit did not need to


def test_an_edited_catalog_is_validated_again(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    shutil.copytree(REPO / "hardware_catalog", root)
    assert load_index(root).rules
    r650 = root / "dell" / "poweredge-r650.yaml"
    r650.write_text(r650.read_text().replace("dimm_slots: 32", "dimm_slots: lots"))
    with pytest.raises(ProblemsError, match="dimm_slots"):
        load_index(root)


def test_a_corrupt_cache_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    load_index(REPO / "hardware_catalog")
    for f in (tmp_path / "oemkit").glob("identity-*.json"):
        f.write_text("{not json")
    assert load_index(REPO / "hardware_catalog").rules


def test_an_unwritable_cache_does_not_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where a folder should be
    assert load_index(REPO / "hardware_catalog").rules
