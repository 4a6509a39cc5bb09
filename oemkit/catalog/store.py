"""Load and index `hardware_catalog/`, and answer "which model is this box?"."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from hypervisor_core.identity import SmbiosIdentity, fold
from oemkit.catalog import default_catalog_dir
from oemkit.catalog.index import Identification, IdentityIndex
from oemkit.catalog.schema import HardwareModel
from oemkit.errors import OemkitError
from oemkit.problems import Problem, ProblemsError
from oemkit.validation import doc_locator, validate
from oemkit.yamlio import load_file


@dataclass(frozen=True)
class ModelFile:
    """A validated model and the file it came from."""

    model: HardwareModel
    file: Path


class Catalog:
    def __init__(self, entries: list[ModelFile], root: Path) -> None:
        self.root = root
        self._entries = sorted(entries, key=lambda e: e.model.id)
        self._by_id = {e.model.id: e for e in self._entries}

    def __iter__(self):
        return (e.model for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    def get(self, model_id: str) -> HardwareModel | None:
        entry = self._by_id.get(model_id)
        return entry.model if entry else None

    def file_of(self, model_id: str) -> Path:
        return self._by_id[model_id].file

    @cached_property
    def identity_index(self) -> IdentityIndex:
        return IdentityIndex([(m.id, m.identity.spec()) for m in self])

    def identify(self, box: SmbiosIdentity) -> Identification:
        """Which model this box is (see IdentityIndex.identify)."""
        return self.identity_index.identify(box)


def _overlaps(entries: list[ModelFile]) -> list[Problem]:
    """Two models that one box could both match: refuse the catalog instead of guessing later."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], ModelFile] = {}
    seen_mt: dict[tuple[str, str], ModelFile] = {}
    for e in entries:
        keys = [(fold(v), fold(n)) for v in e.model.identity.manufacturers for n in e.model.identity.product_names]
        mts = [(fold(v), mt) for v in e.model.identity.manufacturers for mt in e.model.identity.machine_types]
        for table, key_list, what in ((seen, keys, "product name"), (seen_mt, mts, "machine type")):
            for key in key_list:
                other = table.get(key)
                if other is not None and other.model.id != e.model.id:
                    problems.append(
                        Problem(
                            str(e.file),
                            1,
                            1,
                            "identity",
                            (f"{what} {key[1]!r} of {key[0]!r} is also claimed by {other.model.id} ({other.file})"),
                        )
                    )
                table[key] = e
    return problems


def load_catalog(root: Path | None = None) -> Catalog:
    """Every `<vendor>/<model>.yaml` under root, validated; all problems at once as ProblemsError."""
    root = root or default_catalog_dir()
    if not root.is_dir():
        why = "not a folder: a catalog is a folder of models" if os.path.lexists(root) else "catalog folder not found"
        raise ProblemsError([Problem(str(root), 1, 1, "(catalog)", why, unreadable=True)])
    entries: list[ModelFile] = []
    problems: list[Problem] = []
    by_id: dict[str, Path] = {}
    for file in sorted(root.glob("*/*.yaml")):
        try:
            doc = load_file(file, kind="catalog model")
        except OemkitError as exc:  # located: report it with the rest
            problems += getattr(exc, "problems", None) or [exc.problem(str(file))]  # every ambiguous scalar
            continue
        model, found = validate(HardwareModel, doc.data, doc_locator(doc))
        problems += found
        if model is None:
            continue
        if file.stem != model.id.split("-", 1)[1] and file.stem != model.id:
            line, col = doc.locate(("id",))
            problems.append(
                Problem(
                    str(file),
                    line,
                    col,
                    "id",
                    f"file name {file.name} does not match id {model.id}",
                    hint=f"name it {model.id.split('-', 1)[1]}.yaml",
                )
            )
        if file.parent.name != model.vendor.lower():
            problems.append(
                Problem(str(file), 1, 1, "vendor", f"a {model.vendor} model belongs in {model.vendor.lower()}/")
            )
        if model.id in by_id:
            line, col = doc.locate(("id",))
            problems.append(Problem(str(file), line, col, "id", f"id {model.id} is already used by {by_id[model.id]}"))
            continue
        by_id[model.id] = file
        entries.append(ModelFile(model, file))
    problems += _overlaps(entries)
    if problems:
        raise ProblemsError(problems)
    return Catalog(entries, root)
