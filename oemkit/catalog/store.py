"""Load and index `hardware_catalog/`, and answer "which model is this box?"."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from hypervisor_core.identity import SmbiosIdentity, fold
from oemkit.catalog.schema import HardwareModel
from oemkit.problems import Problem, ProblemsError
from oemkit.validation import validate
from oemkit.yamlio import load_file

_REPO_CATALOG = Path(__file__).resolve().parents[2] / "hardware_catalog"
_PACKAGED_CATALOG = Path(__file__).resolve().parents[1] / "_catalog"  # where a wheel puts it


def default_catalog_dir() -> Path:
    """$OEMKIT_CATALOG, else the catalog shipped in the wheel, else the one in the source checkout."""
    env = os.environ.get("OEMKIT_CATALOG")
    if env:
        return Path(env)
    return _PACKAGED_CATALOG if _PACKAGED_CATALOG.is_dir() else _REPO_CATALOG


@dataclass(frozen=True)
class Entry:
    model: HardwareModel
    file: Path


@dataclass(frozen=True)
class Identification:
    model: HardwareModel | None
    reason: str  # why this model, or why none


class Catalog:
    def __init__(self, entries: list[Entry], root: Path) -> None:
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
    def _name_index(self) -> dict[tuple[str, str], list[HardwareModel]]:
        """(manufacturer, product name) → models: identify looks up one key instead of trying every model."""
        index: dict[tuple[str, str], list[HardwareModel]] = {}
        for m in self:
            for vendor in m.identity.manufacturers:
                for name in m.identity.product_names:
                    index.setdefault((fold(vendor), fold(name)), []).append(m)
        return index

    def identify(self, box: SmbiosIdentity) -> Identification:
        """The one catalog model this box is, or None with the reason. Never a guess: exactly one model's
        identity rule must accept the box, and every rule is the same one first boot applies."""
        name = box.model_name
        if name is not None:
            candidates = self._name_index.get((fold(box.sys_vendor), fold(name)), [])
        else:  # only a machine type to go by (a bare "7X06CTO1WW" product name)
            mt = box.machine_type
            candidates = [m for m in self if mt and mt in m.identity.machine_types]
        accepted = [m for m in candidates if m.identity.spec().mismatch(box) is None]
        if len(accepted) == 1:
            m = accepted[0]
            how = f"machine type {box.machine_type}" if name is None else f"product {name!r}"
            return Identification(m, f"{box.sys_vendor} {how} is {m.id}")
        if len(accepted) > 1:  # load_catalog refuses overlapping rules, so this is a broken custom catalog
            return Identification(None, f"ambiguous: {', '.join(m.id for m in accepted)} all match")
        if candidates:
            return Identification(None, candidates[0].identity.spec().mismatch(box) or "no match")
        what = name or box.product_name or box.machine_type or "unknown product"
        return Identification(None, f"{box.sys_vendor or 'unknown vendor'} {what!s} is not in the catalog")


def _overlaps(entries: list[Entry]) -> list[Problem]:
    """Two models that one box could both match: refuse the catalog instead of guessing later."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], Entry] = {}
    seen_mt: dict[tuple[str, str], Entry] = {}
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
        raise ProblemsError([Problem(str(root), 1, 1, "(catalog)", "catalog folder not found")])
    entries: list[Entry] = []
    problems: list[Problem] = []
    by_id: dict[str, Path] = {}
    for file in sorted(root.glob("*/*.yaml")):
        try:
            doc = load_file(file)
        except Exception as exc:  # located YamlError: report it with the rest
            problems.append(
                Problem(
                    str(file),
                    getattr(exc, "line", 1) or 1,
                    getattr(exc, "column", 1) or 1,
                    "(document)",
                    getattr(exc, "message", str(exc)),
                )
            )
            continue
        model, found = validate(HardwareModel, doc)
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
        entries.append(Entry(model, file))
    problems += _overlaps(entries)
    if problems:
        raise ProblemsError(problems)
    return Catalog(entries, root)
