"""One entry point for "is this profile right?": resolve the layers, validate, cross-check against the catalog."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from oemkit.catalog.store import Catalog, load_catalog
from oemkit.problems import Problem, ProblemsError, unreadable
from oemkit.profile.layers import Traced
from oemkit.profile.lint import lint
from oemkit.profile.resolve import ResolvedProfile, child, kind_of, read_document, resolve, validate_layer
from oemkit.profile.schema import UnitOverlay, serial_problem


@dataclass
class Checked:
    profile_path: Path
    site_path: Path | None
    resolved: ResolvedProfile

    @property
    def unreadable(self) -> bool:
        """A layer (or the catalog) could not be read at all (exit 2), as opposed to read and found wrong (exit 1)."""
        return unreadable(self.resolved.problems)

    @property
    def label(self) -> str:
        return f"{self.profile_path} + {self.site_path}" if self.site_path else str(self.profile_path)


def find_profile(site_path: Path, name: str) -> tuple[list[Path], list[Problem]]:
    """Profiles a site overlay may mean: profiles/sites/x.yaml → profiles/*.yaml with that metadata.name; and
    the candidates that could not be read (a FIFO or a device named *.yaml is refused, never waited on)."""
    found, unreadable_ = [], []
    for folder in (site_path.parent.parent, site_path.parent):
        for candidate in sorted(folder.glob("*.yaml")):
            doc, problems = read_document(candidate)
            unreadable_ += [p for p in problems if p.unreadable]
            if doc is not None and kind_of(doc) == "ApplianceProfile":
                meta = doc.data.get("metadata")
                if isinstance(meta, dict) and meta.get("name") == name:
                    found.append(candidate)
    return found, unreadable_


def _unit_layer(unit_path: Path | None, serial: str | None) -> tuple[UnitOverlay | None, Traced | None, list[Problem]]:
    """The unit layer: a UnitOverlay file (serial + overrides from an order), or just --serial."""
    if unit_path is None:
        if not serial:
            return None, None, []
        why = serial_problem(serial)
        if why:
            return None, None, [Problem("(command line)", 1, 1, "--serial", why)]
        return UnitOverlay(serial=serial), None, []
    doc, problems = read_document(unit_path, "unit overlay")
    if doc is None:
        return None, None, problems
    unit, tree, layer_problems = validate_layer(doc, UnitOverlay, 2)
    problems = problems + layer_problems
    where = child(tree, "serial")
    if unit is not None and serial and unit.serial != serial and where is not None:
        o, message = where.origin, f"unit file is for serial {unit.serial}, not {serial}"
        problems.append(Problem(o.file, o.line, o.column, "serial", message))
        unit = None
    return unit, tree, problems


def check(
    path: Path,
    site: Path | None,
    serial: str | None,
    catalog_dir: Path | None,
    unit_path: Path | None = None,
    catalog: Catalog | None = None,
) -> Checked:
    """Validate `path` (a profile, or a site overlay whose profile is found beside it) with an optional site
    and unit layer."""
    doc, problems = read_document(path)
    if doc is not None and kind_of(doc) == "SiteOverlay" and site is None:
        name = doc.data.get("profile")
        profiles, skipped = find_profile(path, name) if isinstance(name, str) else ([], [])
        if len(profiles) != 1:
            line, col = doc.locate(("profile",))
            where = f"{path.parent.parent} or {path.parent}"
            message = (
                f"no profile named {name!r} found in {where}"
                if not profiles
                else f"{len(profiles)} profiles are named {name!r}: {', '.join(map(str, profiles))}"
            )
            res = ResolvedProfile(
                problems=[
                    Problem(
                        str(path),
                        line,
                        col,
                        "profile",
                        message,
                        hint="validate it as: oemkit profile validate PROFILE --site SITE",
                    ),
                    *skipped,  # it may be one of these: say why they were not read
                ]
            )
            return Checked(path, None, res)
        path, site = profiles[0], path
    # A bad unit layer (a bad --serial, a broken unit file) does not hide the profile's own problems: the profile
    # and site are checked without it, and everything found is reported at once.
    unit, unit_tree, unit_problems = _unit_layer(unit_path, serial)
    if unit_problems:
        unit, unit_tree = None, None
    res = resolve(path, site, unit, unit_tree) if doc is not None else ResolvedProfile(problems=problems)
    if not res.errors and res.profile is not None:
        try:
            lint(res, catalog or load_catalog(catalog_dir))
        except ProblemsError as exc:  # the catalog itself is broken: its problems, located in its files
            res.problems += [replace(p, unreadable=True) for p in exc.problems]
    res.problems += unit_problems
    res.problems.sort(key=lambda p: (p.severity != "error", p))
    return Checked(path, site, res)
