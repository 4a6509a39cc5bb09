"""Load a profile and its layers, merge them, validate the merged result, and say where every problem is.

    resolve(profile.yaml, site.yaml?, unit?) → ResolvedProfile(data, origins, profile, site, unit, problems)

Nothing here raises for bad input: unreadable files, schema errors and cross-check failures all come back as
located Problems, so a caller can report every one of them. Each layer is read by its own apiVersion's schema
and translated up to the current one (profile/schema/__init__.py) before it is merged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from oemkit.errors import OemkitError
from oemkit.problems import Problem, Severity, format_path
from oemkit.profile import schema
from oemkit.profile.layers import (
    Origin,
    Traced,
    annotate,
    duplicate_names,
    flatten,
    locate,
    locate_latest,
    merge,
    removals,
)
from oemkit.profile.markers import recorded_only, unset_site_values
from oemkit.profile.schema import ApplianceProfile, SiteOverlay, UnitOverlay
from oemkit.validation import validate
from oemkit.yamlio import AmbiguousScalar, Document, load_file


@dataclass
class ResolvedProfile:
    data: dict[str, Any] | None = None
    origins: dict[tuple[str | int, ...], Origin] = field(default_factory=dict)
    removed: dict[tuple[str | int, ...], Origin] = field(default_factory=dict)  # keys a later layer set to null
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

    def problem(
        self, path: tuple[str | int, ...], message: str, severity: Severity = "error", hint: str | None = None
    ) -> None:
        """A problem at `path` of the merged profile, located where its value was last set (or removed)."""
        o = locate_latest(self.blame, path)
        self.problems.append(Problem(o.file, o.line, o.column, format_path(path), message, severity, hint))

    @property
    def blame(self) -> dict[tuple[str | int, ...], Origin]:
        """Where each path was last set, or removed: what a problem about it points at."""
        return {**self.origins, **self.removed}

    def where(self, path: tuple[str | int, ...]) -> Origin:
        """Where `path` (or its nearest ancestor) was set."""
        return locate(self.origins, path)


def read_document(path: Path, kind: str = "profile") -> tuple[Document | None, list[Problem]]:
    """The document and the problems of reading it. A file with ambiguous scalars comes back too (as YAML 1.2
    reads it) with them as problems, so it is still validated and everything wrong with it is reported at once."""
    doc: Document | None
    try:
        doc, problems = load_file(path, kind=kind), []
    except AmbiguousScalar as exc:
        doc, problems = exc.document, list(exc.problems)
    except OemkitError as exc:
        return None, [exc.problem(str(path))]
    if doc is not None:
        problems += _control_characters(doc)
    return doc, problems


# A YAML escape ("\e", "\0", "\x85") puts a control character in a value that the file does not show: no value
# holds one (a console or a file name is where it would land). The banner and a PEM span lines; their own rules check
# them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _control_characters(doc: Document) -> list[Problem]:
    found: list[Problem] = []

    def walk(value: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key, path) if _CONTROL.search(key) else walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))
        elif isinstance(value, str) and path[-1:] not in (("banner",), ("ca_pem",)):
            bad = _CONTROL.search(value)
            if bad:
                line, col = doc.locate(path)
                message = f"control character U+{ord(bad.group()):04X} in a value: refused"
                found.append(Problem(doc.file, line, col, format_path(path), message, hint="remove the escape"))

    walk(doc.data, ())
    return found


def kind_of(doc: Document) -> str | None:
    return doc.data.get("kind") if isinstance(doc.data, dict) else None


def _check_kind(doc: Document, want: str) -> list[Problem]:
    """The document is a mapping of kind `want`, in an apiVersion this oemkit reads."""
    if not isinstance(doc.data, dict):
        found = type(doc.data).__name__
        hint = f"start it with apiVersion: {schema.CURRENT} and kind: {want}"
        message = f"expected a mapping at the top, found a {found}"
        return [Problem(doc.file, 1, 1, "(document)", message, hint=hint, unreadable=True)]
    kind = kind_of(doc)
    if kind != want:
        line, col = doc.locate(("kind",))
        found = f"kind {kind!r}" if kind else "no kind"
        article = "an" if want[0] in "AEIOU" else "a"
        hint = "profiles/*.yaml are ApplianceProfile, profiles/sites/*.yaml SiteOverlay"
        return [Problem(doc.file, line, col, "kind", f"expected {article} {want}, found {found}", hint=hint)]
    version = doc.data.get("apiVersion")
    if isinstance(version, str) and version not in schema.VERSIONS:  # anything else: the schema says what is wrong
        line, col = doc.locate(("apiVersion",))
        known = ", ".join(schema.VERSIONS)
        message = f"apiVersion {version!r} is not one this oemkit reads ({known})"
        return [Problem(doc.file, line, col, "apiVersion", message)]
    return []


def _translated(doc: Document, layer: int) -> Traced:
    """A layer's whole document as an annotated tree, translated to the current apiVersion (a value a translation
    moves keeps pointing at its line in the old file)."""
    tree = annotate(doc, (), layer)
    assert tree is not None  # the whole document is always there
    version = doc.data.get("apiVersion") if isinstance(doc.data, dict) else None
    if not isinstance(version, str) or version not in schema.VERSIONS:  # none or a wrong one: validation says so
        return tree
    return schema.upgrade(tree, version)


def _located(origins: dict[tuple[str | int, ...], Origin]):
    return lambda p: _as_tuple(locate(origins, p))


def validate_layer(doc: Document, model: type[BaseModel], layer: int = 0) -> tuple[Any, Traced | None, list[Problem]]:
    """An overlay checked as the current version (after translation), and its translated tree."""
    problems = _check_kind(doc, model.__name__)
    if problems:
        return None, None, problems
    tree = _translated(doc, layer)
    data, origins = flatten(tree)
    found, problems = validate(model, data, _located(origins))
    return found, tree, problems


def child(tree: Traced | None, key: str) -> Traced | None:
    """A mapping's entry, when the tree is a mapping that has it."""
    return tree.value.get(key) if tree is not None and isinstance(tree.value, dict) else None


def resolve(
    profile_path: Path, site_path: Path | None = None, unit: UnitOverlay | None = None, unit_tree: Traced | None = None
) -> ResolvedProfile:
    """`unit` and `unit_tree` are the unit layer as check() read it (an order's UnitOverlay, or just a serial)."""
    out = ResolvedProfile(unit=unit)
    base_doc, problems = read_document(profile_path)
    out.problems += problems
    if base_doc is None:
        return out
    ambiguous = list(problems)  # a document that came back with problems: its ambiguous scalars
    if problems := _check_kind(base_doc, "ApplianceProfile"):
        out.problems += problems
        return out
    tree = _translated(base_doc, 0)
    layers: list[Traced | None] = [tree]
    if site_path is not None:
        site_doc, problems = read_document(site_path, "site overlay")
        out.problems += problems
        if site_doc is None:
            return out
        ambiguous += problems
        out.site, site_tree, problems = validate_layer(site_doc, SiteOverlay, 1)
        out.problems += problems
        if site_tree is None:  # not a site overlay at all: nothing of it can be merged
            return out
        meta = base_doc.data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        site_for = site_doc.data.get("profile")
        if isinstance(site_for, str) and site_for != name:
            line, col = site_doc.locate(("profile",))
            message = f"this site overlay is for profile {site_for!r}, not {name!r}"
            hint = f"use it with the profile whose metadata.name is {site_for}"
            out.problems.append(Problem(site_doc.file, line, col, "profile", message, hint=hint))
            return out
        # A site whose header is wrong (a bad site code, say) is still merged: its overrides' problems are
        # reported in the same run, not one fix later.
        layers.append(child(site_tree, "overrides"))
    layers.append(child(unit_tree, "overrides"))
    for overrides in layers[1:]:
        if overrides is not None and isinstance(overrides.value, dict):
            tree = merge(tree, overrides)
    for layer in (t for t in layers if t is not None):  # per layer: the merge by name would fold them into one
        for path, o, name, first in duplicate_names(layer):
            message = (
                f"{name!r} appears twice in this list (first at [{first}]): "
                "named items merge by name, so one would silently replace the other"
            )
            out.problems.append(Problem(o.file, o.line, o.column, format_path(path), message))
    out.data, out.origins = flatten(tree)
    out.removed = removals(tree)
    blame = out.blame
    out.profile, problems = validate(
        ApplianceProfile,
        out.data,
        lambda p: _as_tuple(locate_latest(blame, p)),
        locate_missing=_located(blame),
    )
    out.problems += problems
    for path in unset_site_values(ApplianceProfile, out.data):
        if path in out.removed:
            out.problem(path, "removed (null) here, but every unit needs it", hint="set a value instead of null")
        elif site_path is None:
            out.problem(path, "left to the site overlay", "warning", hint="each site overlay must set it")
        else:
            out.problem(path, "must be set: neither the profile nor the site overlay sets it")
    for path, today in recorded_only(ApplianceProfile, out.data):
        out.problem(path, f"sealed, but not acted on yet: {today}", "warning")
    _explained(out, ambiguous)
    return out


def _explained(out: ResolvedProfile, ambiguous: list[Problem]) -> None:
    """Drop what an ambiguous scalar already explains: `yes` read as text also fails a boolean field, and saying
    so twice at one path adds nothing."""
    paths = {p.path for p in ambiguous}
    out.problems = [p for p in out.problems if p in ambiguous or p.path not in paths]


def _as_tuple(o: Origin) -> tuple[str, int, int]:
    return o.file, o.line, o.column
