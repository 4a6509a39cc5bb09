"""Profile apiVersions: frozen v1 documents keep validating, an unknown apiVersion is refused where it is written,
translations keep every moved value's origin, and each recorded-only field warns exactly when asked for more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.profile import schema
from oemkit.profile.check import check, find_profile
from oemkit.profile.export import json_schema
from oemkit.profile.layers import Origin, Traced, annotate, flatten
from oemkit.profile.resolve import resolve
from oemkit.yamlio import loads

from .conftest import REPO

V1 = REPO / "tests" / "data" / "profiles" / "v1"
BASE = REPO / "tests" / "data" / "profiles" / "base.yaml"
UNIT = REPO / "tests" / "data" / "profiles" / "units" / "J30ABC12.yaml"
CATALOG = REPO / "hardware_catalog"
RECORDED = "sealed, but not acted on yet:"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


PROFILES = sorted(V1.glob("*.yaml"))
SITES = sorted((V1 / "sites").glob("*.yaml"))
PAIRS = [
    pytest.param(p, s, id=f"{p.stem}+{s.stem}")
    for p in PROFILES
    for s in SITES
    if _yaml(s)["profile"] == _yaml(p)["metadata"]["name"]
]


# --- frozen v1 documents ------------------------------------------------------------------------------------------


def test_every_frozen_v1_profile_has_sites_and_every_site_its_profile() -> None:
    # the table below must prove something: three profiles, each with sites, and no site left out
    assert len(PROFILES) >= 3
    assert {p.values[0] for p in PAIRS} == set(PROFILES)
    assert sorted(p.values[1] for p in PAIRS) == SITES
    assert all(_yaml(p)["apiVersion"] == "oemkit/v1" for p in PROFILES + SITES)


@pytest.mark.parametrize(("profile", "site"), PAIRS)
def test_a_frozen_v1_profile_with_its_site_validates(profile: Path, site: Path) -> None:
    res = check(profile, site, "SN0001", CATALOG).resolved
    assert not res.errors, "\n".join(map(str, res.errors))  # warnings (recorded-only settings) are allowed
    assert res.profile is not None and res.profile.apiVersion == schema.CURRENT
    # a site alone finds its frozen profile by metadata.name, from the folder above it
    assert find_profile(site, _yaml(site)["profile"]) == ([profile], [])


# --- an apiVersion this oemkit does not read -------------------------------------------------------------------


def _v9(source: Path, dest: Path) -> tuple[Path, int]:
    """A copy of `source` claiming apiVersion oemkit/v9, and the line that says so."""
    text = source.read_text()
    assert text.count("apiVersion: oemkit/v1\n") == 1
    dest.write_text(text.replace("apiVersion: oemkit/v1\n", "apiVersion: oemkit/v9\n"))
    return dest, text.splitlines().index("apiVersion: oemkit/v1") + 1


@pytest.mark.parametrize("layer", ["profile", "site", "unit"])
def test_an_unknown_api_version_is_refused_where_it_is_written(layer: str, tmp_path: Path) -> None:
    profile, site, unit = V1 / "retail-branch.yaml", V1 / "sites" / "retail-ber01.yaml", UNIT
    if layer == "profile":
        profile, line = _v9(profile, tmp_path / "profile.yaml")
        bad = profile
    elif layer == "site":
        site, line = _v9(site, tmp_path / "site.yaml")
        bad = site
    else:
        unit, line = _v9(unit, tmp_path / "unit.yaml")
        bad = unit
    result = CliRunner().invoke(app, ["profile", "validate", str(profile), "--site", str(site), "--unit", str(unit)])
    assert result.exit_code == 1, result.output  # read and found wrong, not unreadable (2)
    expected = f"{bad}:{line}:1: error: apiVersion: apiVersion 'oemkit/v9' is not one this oemkit reads (oemkit/v1)"
    assert expected in result.stdout.splitlines(), result.stdout


# --- translating annotated trees -------------------------------------------------------------------------------

OLD = """\
apiVersion: oemkit/v0
kind: ApplianceProfile
metadata:
  name: old
host:
  hostname: "x-{serial}"
  time_zone: Europe/Berlin
"""


def _rename_time_zone(tree: Traced) -> Traced:
    """A toy oemkit/v0 → v1 step: host.time_zone became host.timezone (the input tree is left as it was)."""
    top = dict(tree.value)
    top["apiVersion"] = Traced("oemkit/v1", top["apiVersion"].origin)
    host = dict(top["host"].value)
    host["timezone"] = host.pop("time_zone")
    top["host"] = Traced(host, top["host"].origin)
    return Traced(top, tree.origin)


@pytest.fixture
def v0(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake oemkit/v0 *before* v1 (VERSIONS is ordered oldest first)."""
    monkeypatch.setattr(schema, "VERSIONS", ("oemkit/v0", *schema.VERSIONS))
    monkeypatch.setitem(schema.UPGRADES, "oemkit/v0", _rename_time_zone)


def test_a_translation_keeps_the_moved_value_origin(v0: None) -> None:
    tree = annotate(loads(OLD, "old.yaml"))
    data, origins = flatten(schema.upgrade(tree, "oemkit/v0", steps={"oemkit/v0": _rename_time_zone}))
    assert data["host"] == {"hostname": "x-{serial}", "timezone": "Europe/Berlin"}
    assert data["apiVersion"] == "oemkit/v1"
    assert origins[("host", "timezone")] == Origin("old.yaml", 7, 3)  # where `time_zone:` set it, in v0's file
    assert "time_zone" in tree.value["host"].value  # the step built a new tree


def test_translations_run_in_order_from_the_document_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "VERSIONS", ("a", "b", *schema.VERSIONS))
    ran: list[str] = []

    def step(name: str):
        def run(tree: Traced) -> Traced:
            ran.append(name)
            return Traced([*tree.value, name], tree.origin)

        return run

    steps = {"a": step("a→b"), "b": step("b→v1")}
    start = Traced([], Origin("x.yaml", 1, 1))
    assert schema.upgrade(start, "a", steps=steps).value == ["a→b", "b→v1"]
    assert schema.upgrade(start, "b", steps=steps).value == ["b→v1"]
    assert schema.upgrade(start, schema.CURRENT, steps=steps) is start  # the current version: untouched
    assert ran == ["a→b", "b→v1", "b→v1"]


def test_a_problem_in_a_translated_value_points_at_the_old_file(v0: None, tmp_path: Path) -> None:
    # end to end through resolve: an old profile is read, translated and validated as v1
    old = tmp_path / "old.yaml"
    text = BASE.read_text().replace("apiVersion: oemkit/v1", "apiVersion: oemkit/v0")
    old.write_text(text.replace("  timezone: Europe/Berlin", "  time_zone: Europe/Berlinn"))
    line = old.read_text().splitlines().index("  time_zone: Europe/Berlinn") + 1
    res = resolve(old)
    assert [(p.path, p.line, p.column, p.message) for p in res.errors] == [
        ("host.timezone", line, 3, "unknown time zone 'Europe/Berlinn'; did you mean 'Europe/Berlin'?")
    ]


# --- x-recorded-only --------------------------------------------------------------------------------------------

ABSENT = object()  # the key is not written at all
MIRROR_DISKS = ("{interface: sata, count: 1}", "{interface: sata, count: 2}")  # mirror needs two disks

# (field path, value written in the profile, warning expected, other edits the value needs to stay valid)
RECORDED_ONLY: list[tuple[tuple[str, str], Any, bool, tuple[tuple[str, str], ...]]] = [
    (("storage", "layout"), "mirror", True, (MIRROR_DISKS,)),
    (("storage", "layout"), "single", False, ()),
    (("security", "lockdown"), "strict", True, ()),
    (("security", "lockdown"), "normal", False, ()),
    (("security", "ssh"), True, True, ()),
    (("security", "ssh"), False, False, ()),
    (("security", "ssh"), ABSENT, False, ()),  # the default (true) is not the author asking for it
]


def _neutral() -> str:
    """base.yaml asking for nothing recorded-only: one datastore disk, layout single."""
    text = BASE.read_text()
    for old, new in (("layout: mirror", "layout: single"), ("{interface: sata, count: 2}", MIRROR_DISKS[0])):
        assert text.count(old) == 1
        text = text.replace(old, new)
    return text


def _with(text: str, section: str, key: str, value: Any) -> tuple[str, int]:
    """`text` with `section.key` set to `value` (JSON is YAML), and the line it is on."""
    lines = text.splitlines()
    if f"{section}:" not in lines:
        lines.append(f"{section}:")
    start = lines.index(f"{section}:")
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    at = next((i for i in range(start + 1, end) if lines[i].startswith(f"  {key}:")), None)
    if at is None:
        at = start + 1
        lines.insert(at, "")
    lines[at] = f"  {key}: {json.dumps(value)}"
    return "\n".join(lines) + "\n", at + 1


def _recorded_warnings(path: Path) -> list:
    res = check(path, None, None, CATALOG).resolved
    assert not res.errors, "\n".join(map(str, res.errors))  # only the field under test differs
    return [p for p in res.warnings if p.message.startswith(RECORDED)]


def test_the_neutral_profile_asks_for_nothing_recorded_only(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(_neutral())
    assert _recorded_warnings(tmp_path / "p.yaml") == []


@pytest.mark.parametrize(
    ("field", "value", "warns", "also"),
    RECORDED_ONLY,
    ids=[f"{'.'.join(f)}={'absent' if v is ABSENT else json.dumps(v)}" for f, v, _, _ in RECORDED_ONLY],
)
def test_recorded_only_fields_warn_when_asked_for_more(
    field: tuple[str, str], value: Any, warns: bool, also: tuple, tmp_path: Path
) -> None:
    text = _neutral()
    for old, new in also:
        text = text.replace(old, new)
    line = None
    if value is not ABSENT:
        text, line = _with(text, *field, value)
    (tmp_path / "p.yaml").write_text(text)
    warnings = _recorded_warnings(tmp_path / "p.yaml")
    if not warns:
        assert warnings == []
        return
    assert len(warnings) == 1, warnings
    w = warnings[0]
    # located on the field's own line, at its key
    assert (w.file, w.path, w.line, w.column) == (str(tmp_path / "p.yaml"), ".".join(field), line, 3)


def _marked(node: dict, defs: dict, path: tuple[str, ...] = (), seen: frozenset = frozenset()) -> set[tuple]:
    """Paths of every property carrying x-recorded-only, following $refs (into lists and optionals too)."""
    found = set()
    for name, prop in node.get("properties", {}).items():
        here = (*path, name)
        if "x-recorded-only" in prop:
            found.add(here)
        for sub in (prop, prop.get("items", {}), *prop.get("anyOf", [])):
            for candidate in (sub, sub.get("items", {})):
                ref = candidate.get("$ref", "").rsplit("/", 1)[-1]
                if ref and ref not in seen:
                    found |= _marked(defs[ref], defs, here, seen | {ref})
    return found


def test_every_recorded_only_field_has_rows_in_the_table() -> None:
    # a newly marked field must get its rows above (one that warns, one that does not)
    exported = json_schema("profile")
    marked = _marked(exported, exported["$defs"])
    assert len(marked) >= 3  # phone_home and on_hardware_mismatch left the set when the box began to act on them
    assert marked == {f for f, _, warns, _ in RECORDED_ONLY if warns}
    assert marked == {f for f, _, warns, _ in RECORDED_ONLY if not warns}


def _rename_in_overrides(tree: Traced) -> Traced:
    """The v0 → v1 step for an overlay: the same rename, inside its overrides."""
    top = dict(tree.value)
    top["apiVersion"] = Traced("oemkit/v1", top["apiVersion"].origin)
    overrides = dict(top["overrides"].value)
    host = dict(overrides["host"].value)
    host["timezone"] = host.pop("time_zone")
    overrides["host"] = Traced(host, overrides["host"].origin)
    top["overrides"] = Traced(overrides, top["overrides"].origin)
    return Traced(top, tree.origin)


def test_an_old_site_overlay_is_translated_before_it_is_merged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(schema, "VERSIONS", ("oemkit/v0", *schema.VERSIONS))
    monkeypatch.setitem(schema.UPGRADES, "oemkit/v0", _rename_in_overrides)
    site = tmp_path / "s.yaml"
    site.write_text(
        "apiVersion: oemkit/v0\nkind: SiteOverlay\nprofile: test-branch\nsite: {code: s1, name: S}\n"
        "overrides:\n  host:\n    time_zone: Europe/Paris\n"
    )
    res = resolve(BASE, site)
    assert res.errors == [] and res.profile is not None
    assert res.profile.host.timezone == "Europe/Paris"
    assert res.origins[("host", "timezone")] == Origin(str(site), 7, 5, 1)  # the old site file's line
