"""A broken catalog is refused with every problem located at file:line:col."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from oemkit.catalog.store import load_catalog
from oemkit.problems import ProblemsError

from .conftest import REPO

R650 = REPO / "hardware_catalog" / "dell" / "poweredge-r650.yaml"


def _catalog_with(tmp_path: Path, text: str, name: str = "poweredge-r650.yaml") -> Path:
    (tmp_path / "dell").mkdir()
    (tmp_path / "dell" / name).write_text(text)
    return tmp_path


def _problems(root: Path) -> list[str]:
    with pytest.raises(ProblemsError) as err:
        load_catalog(root)
    return [f"{Path(p.file).name}:{p.line}:{p.column}: {p.path}: {p.message}" for p in err.value.problems]


def test_shipped_catalog_loads_every_file(catalog) -> None:
    files = sorted((REPO / "hardware_catalog").glob("*/*.yaml"))
    assert sorted(catalog.file_of(i) for i in catalog.ids) == files  # each file is one model, none skipped
    assert {m.vendor for m in catalog} == {"Dell", "HPE", "Lenovo"}


def test_unknown_key_is_located_with_a_suggestion(tmp_path: Path) -> None:
    text = R650.read_text().replace("  dimm_slots: 32", "  dim_slots: 32")
    with pytest.raises(ProblemsError) as err:
        load_catalog(_catalog_with(tmp_path, text))
    got = {(p.path, p.line, p.message, p.hint) for p in err.value.problems}
    line = text.splitlines().index("  dim_slots: 32") + 1
    assert ("memory.dim_slots", line, "unknown key 'dim_slots'", "did you mean 'dimm_slots'?") in got
    assert any(p.path == "memory.dimm_slots" and "missing" in p.message for p in err.value.problems)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = (
        R650.read_text()
        .replace("virtualization: vmx", "virtualization: svm")
        .replace('pci_address: "0000:04:00.1"', 'pci_address: "04:00.1"')
    )
    found = _problems(_catalog_with(tmp_path, text))
    assert any("cpu" in p and "intel CPUs have vmx" in p for p in found)
    assert any("nics[1].pci_address" in p for p in found)


def test_id_must_name_the_model_and_file(tmp_path: Path) -> None:
    found = _problems(_catalog_with(tmp_path, R650.read_text(), name="r650.yaml"))
    assert found == ["r650.yaml:3:1: id: file name r650.yaml does not match id dell-poweredge-r650"]


def test_two_models_claiming_one_identity_are_refused(tmp_path: Path) -> None:
    root = _catalog_with(tmp_path, R650.read_text())
    twin = (
        R650.read_text()
        .replace("id: dell-poweredge-r650", "id: dell-poweredge-r650x")
        .replace("model: R650", "model: R650x")
    )
    (root / "dell" / "poweredge-r650x.yaml").write_text(twin)
    found = _problems(root)
    assert any("also claimed by dell-poweredge-r650" in p for p in found)


def test_yaml_errors_are_reported_with_the_rest(tmp_path: Path) -> None:
    root = _catalog_with(tmp_path, "apiVersion: oemkit/v1\nkind: HardwareModel\nkind: again\n")
    shutil.copy(R650, root / "dell" / "poweredge-r650.yaml")
    (root / "dell" / "broken.yaml").write_text("a: 1\na: 2\n")
    found = _problems(root)
    assert found == ["broken.yaml:2:1: (document): duplicate key 'a' (first set on line 1)"]
