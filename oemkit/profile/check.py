"""One entry point for "is this profile right?": resolve the layers, validate, cross-check against the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oemkit.problems import Problem
from oemkit.profile.resolve import Resolved, kind_of, read_document, resolve
from oemkit.profile.schema_v1 import UnitOverlay


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


def check(path: Path, site: Path | None, serial: str | None, catalog_dir: Path | None) -> Checked:
    """Validate `path` (a profile, or a site overlay whose profile is found beside it) with an optional site."""
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
    unit = UnitOverlay(serial=serial) if serial else None
    res = resolve(path, site, unit) if doc is not None else Resolved(problems=problems)
    unreadable = any(p.path == "(document)" for p in res.problems)
    if not res.errors and res.profile is not None:
        from oemkit.catalog.store import load_catalog
        from oemkit.profile.lint import lint

        lint(res, load_catalog(catalog_dir))
    res.problems.sort(key=lambda p: (p.severity != "error", p))
    return Checked(path, site, res, unreadable)
