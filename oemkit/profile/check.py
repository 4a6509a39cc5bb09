"""One entry point for "is this profile right?": resolve the layers, validate, cross-check against the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oemkit.problems import Problem
from oemkit.profile.resolve import Resolved, kind_of, read_document, resolve, validate_layer
from oemkit.profile.schema_v1 import UnitOverlay
from oemkit.yamlio import Document


@dataclass
class Checked:
    profile_path: Path
    site_path: Path | None
    resolved: Resolved
    unreadable: bool  # a layer could not be read at all (exit 2), as opposed to read and found wrong (exit 1)

    @property
    def label(self) -> str:
        return f"{self.profile_path} + {self.site_path}" if self.site_path else str(self.profile_path)


def find_profile(site_path: Path, name: str) -> Path | None:
    """The profile a site overlay names: profiles/sites/x.yaml → profiles/*.yaml with that metadata.name."""
    for folder in (site_path.parent.parent, site_path.parent):
        for candidate in sorted(folder.glob("*.yaml")):
            doc, _ = read_document(candidate)
            if doc is not None and kind_of(doc) == "ApplianceProfile":
                meta = doc.data.get("metadata")
                if isinstance(meta, dict) and meta.get("name") == name:
                    return candidate
    return None


def _unit_layer(
    unit_path: Path | None, serial: str | None
) -> tuple[UnitOverlay | None, Document | None, list[Problem]]:
    """The unit layer: a UnitOverlay file (serial + overrides from an order), or just --serial."""
    if unit_path is None:
        return (UnitOverlay(serial=serial) if serial else None), None, []
    doc, problems = read_document(unit_path)
    if doc is None:
        return None, None, problems
    unit, problems = validate_layer(doc, UnitOverlay)
    if unit is not None and serial and unit.serial != serial:
        line, col = doc.locate(("serial",))
        problems.append(Problem(doc.file, line, col, "serial", f"unit file is for serial {unit.serial}, not {serial}"))
        unit = None
    return unit, doc, problems


def check(
    path: Path, site: Path | None, serial: str | None, catalog_dir: Path | None, unit_path: Path | None = None
) -> Checked:
    """Validate `path` (a profile, or a site overlay whose profile is found beside it) with an optional site
    and unit layer."""
    doc, problems = read_document(path)
    if doc is not None and kind_of(doc) == "SiteOverlay" and site is None:
        name = doc.data.get("profile")
        profile = find_profile(path, name) if isinstance(name, str) else None
        if profile is None:
            line, col = doc.locate(("profile",))
            res = Resolved(
                problems=[
                    Problem(
                        str(path),
                        line,
                        col,
                        "profile",
                        f"no profile named {name!r} found in {path.parent.parent} or {path.parent}",
                        hint="validate it as: oemkit profile validate PROFILE --site SITE",
                    )
                ]
            )
            return Checked(path, None, res, unreadable=False)
        path, site = profile, path
    unit, unit_doc, unit_problems = _unit_layer(unit_path, serial)
    if unit_problems:
        res = Resolved(problems=unit_problems)
        return Checked(path, site, res, unreadable=any(p.path == "(document)" for p in unit_problems))
    res = resolve(path, site, unit, unit_doc) if doc is not None else Resolved(problems=problems)
    unreadable = any(p.path == "(document)" for p in res.problems)
    if not res.errors and res.profile is not None:
        from oemkit.catalog.store import load_catalog
        from oemkit.profile.lint import lint

        lint(res, load_catalog(catalog_dir))
    res.problems.sort(key=lambda p: (p.severity != "error", p))
    return Checked(path, site, res, unreadable)
