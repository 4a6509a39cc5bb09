"""Load a profile and its layers, merge them, validate the merged result, and say where every problem is.

    resolve(profile.yaml, site.yaml?, unit?) → Resolved(data, origins, profile, site, unit, problems)

Nothing here raises for bad input: unreadable files, schema errors and cross-check failures all come back as
located Problems, so a caller can report every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from oemkit.errors import OemkitError
from oemkit.problems import Problem, format_path
from oemkit.profile.layers import Node, Origin, annotate, duplicate_names, flatten, locate, locate_latest, merge
from oemkit.profile.schema_v1 import ApplianceProfile, SiteOverlay, UnitOverlay
from oemkit.validation import doc_locator, validate
from oemkit.yamlio import Document, load_file

KINDS = {"ApplianceProfile": ApplianceProfile, "SiteOverlay": SiteOverlay, "UnitOverlay": UnitOverlay}


@dataclass
class Resolved:
    data: dict[str, Any] | None = None
    origins: dict[tuple[str | int, ...], Origin] = field(default_factory=dict)
    profile: ApplianceProfile | None = None
    site: SiteOverlay | None = None
    unit: UnitOverlay | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def problem(self, path: tuple[str | int, ...], message: str, severity: str = "error", hint: str | None = None):
        o = locate_latest(self.origins, path)
        self.problems.append(Problem(o.file, o.line, o.column, format_path(path), message, severity, hint))  # type: ignore[arg-type]


def read_document(path: Path) -> tuple[Document | None, list[Problem]]:
    try:
        return load_file(path), []
    except OemkitError as exc:
        return None, [
            Problem(exc.file or str(path), exc.line or 1, exc.column or 1, "(document)", exc.message, hint=exc.hint)
        ]


def kind_of(doc: Document) -> str | None:
    return doc.data.get("kind") if isinstance(doc.data, dict) else None


def _check_kind(doc: Document, want: str) -> list[Problem]:
    if not isinstance(doc.data, dict):
        return [
            Problem(
                doc.file,
                1,
                1,
                "(document)",
                f"expected a mapping at the top, found a {type(doc.data).__name__}",
                hint=f"start it with apiVersion: oemkit/v1 and kind: {want}",
            )
        ]
    kind = kind_of(doc)
    if kind == want:
        return []
    line, col = doc.locate(("kind",))
    found = f"kind {kind!r}" if kind else "no kind"
    return [
        Problem(
            doc.file,
            line,
            col,
            "kind",
            f"expected an {want}, found {found}" if want[0] in "AEIOU" else f"expected a {want}, found {found}",
            hint="profiles/*.yaml are ApplianceProfile, profiles/sites/*.yaml SiteOverlay",
        )
    ]


def validate_layer(doc: Document, model: type[BaseModel]) -> tuple[Any, list[Problem]]:
    problems = _check_kind(doc, model.__name__)
    if problems:
        return None, problems
    return validate(model, doc.data, doc_locator(doc))


def _site_values(model: type[BaseModel], data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Paths of fields marked site_value that are unset in `data`."""
    out: list[tuple[str | int, ...]] = []
    if not isinstance(data, dict):
        return out
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("x-site-value") and data.get(name) is None:
            out.append((*path, name))
        sub = _submodel(info.annotation)
        if sub is not None and isinstance(data.get(name), dict):
            out += _site_values(sub, data[name], (*path, name))
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def resolve(
    profile_path: Path, site_path: Path | None = None, unit: UnitOverlay | None = None, unit_doc: Document | None = None
) -> Resolved:
    out = Resolved(unit=unit)
    base_doc, problems = read_document(profile_path)
    out.problems += problems
    if base_doc is None:
        return out
    if problems := _check_kind(base_doc, "ApplianceProfile"):
        out.problems += problems
        return out
    tree: Node | None = annotate(base_doc)
    layers: list[tuple[Node, tuple[str | int, ...]]] = [(tree, ())]
    site_doc = None
    if site_path is not None:
        site_doc, problems = read_document(site_path)
        out.problems += problems
        if site_doc is None:
            return out
        out.site, problems = validate_layer(site_doc, SiteOverlay)
        out.problems += problems
        if out.site is None:
            return out
        name = (
            base_doc.data.get("metadata", {}).get("name") if isinstance(base_doc.data.get("metadata"), dict) else None
        )
        if out.site.profile != name:
            line, col = site_doc.locate(("profile",))
            out.problems.append(
                Problem(
                    site_doc.file,
                    line,
                    col,
                    "profile",
                    f"this site overlay is for profile {out.site.profile!r}, not {name!r}",
                    hint=f"use it with the profile whose metadata.name is {out.site.profile}",
                )
            )
            return out
        overrides = annotate(site_doc, ("overrides",), layer=1)
        if overrides is not None and isinstance(overrides.value, dict):
            tree = merge(tree, overrides)
            layers.append((overrides, ("overrides",)))
    if unit_doc is not None:
        overrides = annotate(unit_doc, ("overrides",), layer=2)
        if overrides is not None and isinstance(overrides.value, dict):
            tree = merge(tree, overrides)
            layers.append((overrides, ("overrides",)))
    for layer, _ in layers:
        for path, o, name, first in duplicate_names(layer):
            from oemkit.problems import format_path as _fmt

            out.problems.append(
                Problem(
                    o.file,
                    o.line,
                    o.column,
                    _fmt(path),
                    f"{name!r} appears twice in this list (first at [{first}]): "
                    "named items merge by name, so one would silently replace the other",
                )
            )
    out.data, out.origins = flatten(tree)
    out.profile, problems = validate(
        ApplianceProfile,
        out.data,
        lambda p: _as_tuple(locate_latest(out.origins, p)),
        locate_missing=lambda p: _as_tuple(locate(out.origins, p)),
    )
    out.problems += problems
    for path in _site_values(ApplianceProfile, out.data):
        if out.site is None:
            out.problem(path, "left to the site overlay", "warning", hint="each site overlay must set it")
        else:
            out.problem(path, "must be set: neither the profile nor the site overlay sets it")
    return out


def _as_tuple(o: Origin) -> tuple[str, int, int]:
    return o.file, o.line, o.column
