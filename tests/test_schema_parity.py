"""The exported JSON Schema, held to `oemkit profile validate` by a real YAML 1.2 client: check-jsonschema (it reads
YAML with ruamel.yaml, as an editor would read the file against our schema). It must accept what validate accepts
and refuse what validate refuses at the schema level (types as strict, unknown keys, required keys, patterns and
ranges, an overlay's nulls), and it must read every scalar as oemkit does — or oemkit refuses the scalar as
ambiguous, at its line and column. What only Python, the other layers or the catalog can check is listed as such.

check-jsonschema runs as a subprocess, a few times for all the files (fixture `verdicts`)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from check_jsonschema.parsers.yaml import construct_yaml_implementation, impl2loader

from oemkit.catalog.store import Catalog
from oemkit.profile.check import check
from oemkit.profile.export import json_schema
from oemkit.yamlio import AmbiguousScalar, loads

from .conftest import REPO

DATA = REPO / "tests" / "data" / "profiles"
BROKEN = DATA / "broken"
BASE = DATA / "base.yaml"  # test-branch: valid, with its site values set
PROFILES = sorted((REPO / "profiles").glob("*.yaml")) + sorted((DATA / "warnings").glob("*.yaml")) + [BASE]
SITES = sorted((REPO / "profiles" / "sites").glob("*.yaml"))
UNITS = sorted((DATA / "units").glob("*.yaml"))
CASES = sorted(p.stem for p in BROKEN.glob("*.yaml") if not p.name.endswith(".site.yaml"))

# Every broken case, by what finds its problem. Only SCHEMA is the JSON Schema's to refuse; the others pass it.
SCHEMA = {  # types, unknown keys, required keys, patterns, ranges, kind; in a site overlay, a site value removed
    "hostile-non-mapping",
    "hostile-wrong-kind",
    "missing-required",
    "plaintext-password",
    "powered-by-removed",
    "several-problems",
    "string-for-integer",
    "unknown-capitalised-key",
    "unknown-key",
    "vlan-out-of-range",
    "wrong-type",
    "site-header-and-overrides-broken",
    "site-merge-key-override",
    "site-null-removes-required",
    "site-sets-bad-vlan",
}
PYTHON_RULES = {  # pydantic validators written in Python (addresses, host names, time zones, crypt hashes, console
    # text) and cross-field rules: no JSON Schema keyword says them
    "address-is-broadcast",
    "bad-cidr",
    "bad-hostname",
    "bad-ip",
    "banner-escape-sequence",
    "disk-rule-hdd-too-large",
    "disk-rule-rotational-nvme",
    "gateway-is-own-address",
    "address-unusable",
    "gateway-outside-subnet",
    "hostname-placeholder",
    "password-hash-not-a-hash",
    "unknown-timezone",
    "site-breaks-cross-field-rule",
    "site-null-breaks-a-rule",
}
DOCUMENT_RULES = {  # lint.py and the layers: references, names twice, the profile a site is for, the rendered
    # host name, a site value nobody sets: one document alone cannot show them
    "duplicate-vlan",
    "site-reuses-a-vlan",
    "site-escape-in-a-value",
    "duplicate-vm-name",
    "hostname-too-long-for-linux",
    "undefined-network",
    "site-duplicates-a-name",
    "site-for-other-profile",
    "site-value-never-set",
}
CATALOG_RULES = {  # cross-checks against the hardware catalog: the schema cannot know the box
    "disk-rule-unsatisfiable",
    "memory-exceeds-model",
    "tpm-not-on-model",
    "unknown-model",
    "uplink-count-too-high",
    "uplink-rule-unsatisfiable",
    "uplink-unknown-port",
    "vcpus-exceed-model",
    "site-breaks-capacity",
}
READER = {  # refused by oemkit's YAML reader before any schema; never handed to another reader (an alias or
    # merge-key bomb would keep a reader that expands it busy for ever)
    "control-character",
    "hostile-alias-bomb",
    "hostile-deep-nesting",
    "hostile-duplicate-key",
    "hostile-invalid-utf8",
    "hostile-merge-key-bomb",
    "hostile-merge-non-mapping",
    "hostile-multi-document",
    "hostile-python-tag",
}
GROUPS = (SCHEMA, PYTHON_RULES, DOCUMENT_RULES, CATALOG_RULES, READER)

SITE_HEAD = "apiVersion: oemkit/v1\nkind: SiteOverlay\nprofile: test-branch\nsite: {code: ham01, name: Hamburg}\n"
UNIT_HEAD = "apiVersion: oemkit/v1\nkind: UnitOverlay\nserial: SN0001\n"

# An overlay's overrides onto BASE (as a site overlay and as a unit overlay) → valid? Validate and the schema agree.
OVERLAYS: list[tuple[str, str, bool]] = [
    ("nothing", "{}", True),
    ("null removes an optional key", "{network: {management: {vlan: null}}}", True),
    ("null removes an optional list", "{host: {ntp: null, dns: null}}", True),
    ("null removes an optional section", "{workloads: {overcommit: null}, firstboot: null}", True),
    ("null removes a boolean with a default", "{security: {require_tpm: null, ssh: null}}", True),
    ("null on a key the profile never set", "{management: null}", True),
    ("null inside a named item", "{workloads: {vms: [{name: app, start_order: null}]}}", True),
    ("a named item needs only its name", "{workloads: {vms: [{name: app, vcpus: 2}]}}", True),
    ("a mapping merges: part of it", "{network: {management: {address: {gateway: 10.1.0.254}}}}", True),
    ("an integer where a float goes", "{workloads: {overcommit: {cpu: 2}}}", True),
    ("null removes a required key", "{network: {management: {uplinks: null}}}", False),
    ("null removes a required list", "{models: null}", False),
    ("apiVersion in overrides", "{apiVersion: oemkit/v1}", False),
    ("kind in overrides", "{kind: ApplianceProfile}", False),
    ("null removes a required key of a named item", "{workloads: {vms: [{name: app, vcpus: null}]}}", False),
    ("null removes a site value", "{host: {timezone: null}}", False),
    ("null removes the other site value", "{network: {management: {address: null}}}", False),
    ("a named item without its name", "{workloads: {vms: [{vcpus: 2}]}}", False),
    ("an item of a replaced list is whole", "{network: {management: {uplinks: {select: [{link: null}]}}}}", False),
    ("a quoted number", "{network: {management: {vlan: '100'}}}", False),
    ("a quoted boolean", "{security: {ssh: 'true'}}", False),
    ("out of range", "{network: {management: {vlan: 4095}}}", False),
    ("an unknown key", "{host: {timezon: UTC}}", False),
    ("overrides null", "null", False),
]
# Known differences, each with its reason: the schema cannot say it, or validate is laxer than it should be.
KNOWN: list[tuple[str, str, bool, bool, str]] = [  # id, overrides, validate, schema, why
    (
        "2.0 where an integer goes",
        "{workloads: {host_reserved_mib: 4096.0}}",
        False,
        True,
        "JSON Schema's data model has one number: 4096.0 is an integer to it; pydantic (strict) refuses a float",
    ),
]


@dataclass(frozen=True)
class Subst:
    """BASE with one value replaced: what oemkit makes of it, and what check-jsonschema says."""

    id: str
    old: str  # a line of BASE (its first occurrence)
    new: str  # its replacement
    oemkit: str  # "refused" (an ambiguous scalar, at the new value's line:col), "valid" or "invalid"
    schema: bool  # check-jsonschema passes the file

    def text(self) -> str:
        base = BASE.read_text()
        assert f"\n{self.old}\n" in base, self.old
        return base.replace(f"\n{self.old}\n", f"\n{self.new}\n", 1)

    def where(self) -> tuple[int, int]:
        line = BASE.read_text().splitlines().index(self.old) + 1
        return line, self.new.index(":") + 3


VLAN, TPM, OEM, VCPUS = "    vlan: 100", "  require_tpm: true", "  oem_name: Test OEM", "      vcpus: 4"
SUBSTS = [
    Subst("vlan 0110: 1.1 seals 72, the editor shows 110", VLAN, "    vlan: 0110", "refused", True),
    Subst("vlan 1_10", VLAN, "    vlan: 1_10", "refused", True),
    Subst("vlan 0xC8", VLAN, "    vlan: 0xC8", "valid", True),
    Subst("vlan +200", VLAN, "    vlan: +200", "valid", True),
    Subst("vlan '110'", VLAN, "    vlan: '110'", "invalid", False),
    Subst("require_tpm yes", TPM, "  require_tpm: yes", "refused", False),
    Subst("require_tpm on", TPM, "  require_tpm: on", "refused", False),
    Subst("require_tpm True", TPM, "  require_tpm: True", "valid", True),
    Subst("require_tpm y", TPM, "  require_tpm: y", "invalid", False),
    Subst("oem_name NO", OEM, "  oem_name: NO", "refused", True),
    Subst("oem_name 1e3", OEM, "  oem_name: 1e3", "refused", False),
    Subst("oem_name 0o17", OEM, "  oem_name: 0o17", "refused", False),
    Subst("oem_name -0o17", OEM, "  oem_name: -0o17", "refused", False),
    Subst("oem_name 12:30", OEM, "  oem_name: 12:30", "refused", True),
    Subst("oem_name 2024-01-01", OEM, "  oem_name: 2024-01-01", "valid", True),
    Subst("oem_name 10.0.0.1", OEM, "  oem_name: 10.0.0.1", "valid", True),
    Subst("oem_name null", OEM, "  oem_name: null", "invalid", False),
    Subst("vcpus 1e1", VCPUS, "      vcpus: 1e1", "refused", True),
    Subst("vcpus 010", VCPUS, "      vcpus: 010", "refused", True),
]

# Plain scalars, each read by oemkit and by check-jsonschema's own YAML reader (exactly, types and all).
_SCALAR_LINES = """
    true True TRUE false FALSE null Null NULL ~ y n Y N yes no on off Yes NO On OFF
    0 110 +12 -7 007 00 0110 010 08 0b101 -0b101 1_000 1_ 0x1F 0x1f -0x1F +0x1F 0x_1F 0o17 -0o17 0o1_7
    1.5 .5 1. -1.5e+3 1e3 1E3 1.5e3 .5e3 +.5 -.5 1_000.5 1_e7 .inf +.inf -.INF .nan .NaN
    1:30 -1:30 12:30:00 1:30.5 2024-01-01 10.0.0.53 1.2.3 0x _1 tRUE nULL .iNF pool_1 Europe/Berlin
"""
SCALARS = [word for line in _SCALAR_LINES.splitlines() for word in line.split()]


def _run(schema: Path, files: list[Path]) -> dict[Path, list[str]]:
    """check-jsonschema's verdict on each file: [] when it passes, else its messages."""
    if not files:
        return {}
    cmd = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), "-o", "json", *map(str, files)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode in (0, 1), done.stderr or done.stdout
    report = json.loads(done.stdout)
    assert not report.get("parse_errors"), report["parse_errors"]
    found: dict[Path, list[str]] = {f: [] for f in files}
    for error in report["errors"]:
        deepest = error.get("best_deep_match", error)
        found[Path(error["filename"])].append(f"{deepest['path']}: {deepest['message']}")
    return found


@dataclass
class Verdicts:
    schemas: dict[str, Path]
    files: dict[str, Path]  # generated files by name
    schema: dict[Path, list[str]]  # every file → check-jsonschema's messages


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> Verdicts:
    tmp = tmp_path_factory.mktemp("parity")
    schemas = {}
    for kind in ("profile", "site", "unit"):
        schemas[kind] = tmp / f"{kind}.json"
        schemas[kind].write_text(json.dumps(json_schema(kind)))
    files: dict[str, Path] = {}
    batches: dict[str, list[Path]] = {"profile": list(PROFILES), "site": list(SITES), "unit": list(UNITS)}
    for case in CASES:
        if case in READER:
            continue
        batches["profile"].append(BROKEN / f"{case}.yaml")
        site = BROKEN / f"{case}.site.yaml"
        if site.exists():
            batches["site"].append(site)
    for i, overrides in enumerate([o[1] for o in OVERLAYS] + [k[1] for k in KNOWN]):
        for kind, head in (("site", SITE_HEAD), ("unit", UNIT_HEAD)):
            files[f"{kind}-{i}"] = tmp / f"{kind}-{i}.yaml"
            files[f"{kind}-{i}"].write_text(f"{head}overrides: {overrides}\n")
            batches[kind].append(files[f"{kind}-{i}"])
    for i, subst in enumerate(SUBSTS):
        files[f"subst-{i}"] = tmp / f"subst-{i}.yaml"
        files[f"subst-{i}"].write_text(subst.text())
        batches["profile"].append(files[f"subst-{i}"])
    found: dict[Path, list[str]] = {}
    for kind, batch in batches.items():
        found |= _run(schemas[kind], batch)
    return Verdicts(schemas, files, found)


def test_every_broken_case_is_in_one_group() -> None:
    listed = [case for group in GROUPS for case in group]
    assert sorted(listed) == sorted(set(listed)), "a case in two groups"
    assert set(CASES) - set(listed) == set(), "new broken cases: say which group finds them (SCHEMA, ...)"
    assert set(listed) - set(CASES) == set(), "listed cases that are gone"


@pytest.mark.parametrize("path", PROFILES + SITES + UNITS, ids=lambda p: p.stem)
def test_what_validate_accepts_the_schema_accepts(path: Path, verdicts: Verdicts) -> None:
    assert verdicts.schema[path] == []


@pytest.mark.parametrize("case", sorted(set(CASES) - READER))
def test_the_schema_refuses_exactly_the_schema_level_cases(case: str, verdicts: Verdicts) -> None:
    files = [BROKEN / f"{case}.yaml", BROKEN / f"{case}.site.yaml"]
    messages = [m for f in files if f.exists() for m in verdicts.schema[f]]
    if case in SCHEMA:
        assert messages, f"{case}: validate refuses it at the schema level, check-jsonschema passed it"
    else:
        assert messages == [], f"{case}: not the schema's to refuse (listed as such), yet it did"


def test_the_reader_cases_are_refused_by_oemkit_before_any_schema(catalog: Catalog) -> None:
    for case in sorted(READER):
        problems = check(BROKEN / f"{case}.yaml", None, "SN0001", None, catalog=catalog).resolved.errors
        assert problems and all(p.path == "(document)" for p in problems), case


@pytest.mark.parametrize(("name", "overrides", "valid"), OVERLAYS, ids=[o[0] for o in OVERLAYS])
@pytest.mark.parametrize("kind", ["site", "unit"])
def test_an_overlay_is_accepted_by_both_or_by_neither(
    name: str, overrides: str, valid: bool, kind: str, verdicts: Verdicts, catalog: Catalog
) -> None:
    i = [o[0] for o in OVERLAYS].index(name)
    overlay = verdicts.files[f"{kind}-{i}"]
    res = (
        check(BASE, overlay, "SN0001", None, catalog=catalog)
        if kind == "site"
        else check(BASE, None, None, None, overlay, catalog=catalog)
    ).resolved
    assert (res.errors == []) == valid, [str(p) for p in res.errors]
    assert (verdicts.schema[overlay] == []) == valid, verdicts.schema[overlay]


@pytest.mark.parametrize(("name", "overrides", "valid", "schema_passes", "why"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_differences_are_still_what_they_are(
    name: str, overrides: str, valid: bool, schema_passes: bool, why: str, verdicts: Verdicts, catalog: Catalog
) -> None:
    """If one of these starts to agree, move it to OVERLAYS."""
    i = len(OVERLAYS) + [k[0] for k in KNOWN].index(name)
    site = verdicts.files[f"site-{i}"]
    assert (check(BASE, site, "SN0001", None, catalog=catalog).resolved.errors == []) == valid
    assert (verdicts.schema[site] == []) == schema_passes, verdicts.schema[site]


@pytest.mark.parametrize("subst", SUBSTS, ids=[s.id for s in SUBSTS])
def test_a_scalar_means_the_same_to_the_editor_or_oemkit_refuses_it(
    subst: Subst, verdicts: Verdicts, catalog: Catalog
) -> None:
    path = verdicts.files[f"subst-{SUBSTS.index(subst)}"]
    assert (verdicts.schema[path] == []) == subst.schema, verdicts.schema[path]
    if subst.oemkit == "refused":
        with pytest.raises(AmbiguousScalar) as err:
            loads(path.read_text(), "p.yaml")
        assert (err.value.line, err.value.column) == subst.where()
        return
    errors = check(path, None, "SN0001", None, catalog=catalog).resolved.errors
    assert (errors == []) == (subst.oemkit == "valid"), [str(p) for p in errors]
    assert subst.schema == (subst.oemkit == "valid")  # the editor and validate agree


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


def test_every_scalar_check_jsonschema_reads_is_what_oemkit_reads(tmp_path: Path) -> None:
    """Exact values (types and all) from check-jsonschema's own YAML reader, and its schema check of each finite
    value (`const`), for every scalar oemkit does not refuse as ambiguous."""
    text = "".join(f"c{i}: {s}\n" for i, s in enumerate(SCALARS))
    theirs = impl2loader(construct_yaml_implementation(), construct_yaml_implementation(pure=True))(
        io.BytesIO(text.encode())
    )
    props, refused, differ = {}, [], []
    for i, scalar in enumerate(SCALARS):
        try:
            ours = loads(f"v: {scalar}\n").data["v"]
        except AmbiguousScalar:
            refused.append(scalar)
            continue
        if not _same(ours, theirs[f"c{i}"]):
            differ.append((scalar, ours, theirs[f"c{i}"]))
        if not (isinstance(ours, float) and not math.isfinite(ours)):
            props[f"c{i}"] = {"const": ours}
    assert differ == []
    assert {"yes", "0110", "1_000", "1e3", "0o17", "-0o17", "1:30"} <= set(refused)
    assert {"true", "110", "0x1F", "y", "2024-01-01", ".nan"}.isdisjoint(refused)
    schema, probe = tmp_path / "consts.json", tmp_path / "scalars.yaml"
    schema.write_text(json.dumps({"type": "object", "properties": props, "required": sorted(props)}))
    probe.write_text(text)
    assert _run(schema, [probe]) == {probe: []}
