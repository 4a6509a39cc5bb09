"""Layer merge rules and provenance, the lint checks golden files cannot reach, and a property test."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oemkit.catalog.store import load_catalog
from oemkit.profile.check import check
from oemkit.profile.layers import annotate, flatten, merge
from oemkit.yamlio import loads

from .conftest import REPO

BASE = REPO / "tests" / "data" / "profiles" / "base.yaml"


def _merged(base: str, over: str):
    tree = merge(annotate(loads(base, "base.yaml")), annotate(loads(over, "site.yaml")))
    return flatten(tree)


def test_maps_deep_merge_and_remember_origin() -> None:
    data, origins = _merged("a:\n  b: 1\n  c: 2\n", "a:\n  c: 3\n  d: 4\n")
    assert data == {"a": {"b": 1, "c": 3, "d": 4}}
    assert (origins[("a", "b")].file, origins[("a", "c")].file, origins[("a", "c")].line) == (
        "base.yaml",
        "site.yaml",
        2,
    )


def test_plain_lists_replace() -> None:
    data, origins = _merged("ntp: [a, b, c]\n", "ntp: [x]\n")
    assert data == {"ntp": ["x"]} and origins[("ntp", 0)].file == "site.yaml"


def test_named_lists_merge_by_name_and_append() -> None:
    base = "vms:\n  - {name: a, cpu: 1}\n  - {name: b, cpu: 2}\n"
    data, origins = _merged(base, "vms:\n  - {name: b, cpu: 8}\n  - {name: c, cpu: 1}\n")
    assert data == {"vms": [{"name": "a", "cpu": 1}, {"name": "b", "cpu": 8}, {"name": "c", "cpu": 1}]}
    assert origins[("vms", 0, "cpu")].file == "base.yaml"
    assert (origins[("vms", 1, "cpu")].file, origins[("vms", 1, "cpu")].line) == ("site.yaml", 2)
    assert origins[("vms", 1, "name")].file == "site.yaml"


def test_null_removes_a_key() -> None:
    data, _ = _merged("net:\n  vlan: 10\n  mode: bridge\n", "net:\n  vlan: null\n")
    assert data == {"net": {"mode": "bridge"}}


def _catalog_without_secure_boot(tmp_path: Path) -> Path:
    root = tmp_path / "catalog"
    shutil.copytree(REPO / "hardware_catalog", root)
    r650 = root / "dell" / "poweredge-r650.yaml"
    r650.write_text(r650.read_text().replace("secure_boot: true", "secure_boot: false"))
    return root


def test_secure_boot_demanded_on_a_model_without_it(tmp_path: Path) -> None:
    res = check(BASE, None, None, _catalog_without_secure_boot(tmp_path)).resolved
    assert [(p.path, p.line, p.message) for p in res.errors] == [
        ("security.require_secure_boot", 32, "dell-poweredge-r650 firmware has no UEFI Secure Boot")
    ]


def test_rendered_hostname_too_long(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(BASE.read_text().replace('"tb-{site}-{serial}"', '"a-very-long-prefix-for-{site}-{serial}"'))
    site = tmp_path / "s.yaml"
    site.write_text(
        "apiVersion: oemkit/v1\nkind: SiteOverlay\nprofile: test-branch\nsite: {code: hamburg-harbour1, name: H}\n"
    )
    res = check(profile, site, "SERIAL-NUMBER-THAT-IS-LONG", None).resolved
    assert any(p.path == "host.hostname" and "63" in p.message for p in res.errors)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 5000),
    st.text(max_size=12),
    st.sampled_from(["dhcp", "LOM1", "10.0.0.1", "10.0.0.0/24", "$6$x", "app", "mirror"]),
)
_keys = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "models",
        "host",
        "network",
        "management",
        "uplinks",
        "select",
        "port",
        "storage",
        "datastore",
        "security",
        "admins",
        "name",
        "workloads",
        "vms",
        "vcpus",
        "networks",
        "guest",
        "vlan",
        "cidr",
        "address",
        "password",
        "branding",
        "x",
    ]
)
_docs = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=6)),
    max_leaves=40,
)
_catalog = load_catalog(REPO / "hardware_catalog")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_docs, site=_docs)
def test_no_generated_document_breaks_the_pipeline(doc, site, tmp_path_factory) -> None:
    """Whatever the documents hold, the pipeline answers with located problems and never raises."""
    folder = tmp_path_factory.mktemp("gen")
    base = {"apiVersion": "oemkit/v1", "kind": "ApplianceProfile", "metadata": {"name": "gen"}}
    if isinstance(doc, dict):
        base.update(doc)
    overlay = {
        "apiVersion": "oemkit/v1",
        "kind": "SiteOverlay",
        "profile": "gen",
        "site": {"code": "s1", "name": "S"},
        "overrides": site if isinstance(site, dict) else {},
    }
    (folder / "p.yaml").write_text(yaml.safe_dump(base))
    (folder / "s.yaml").write_text(yaml.safe_dump(overlay))
    for site_path in (None, folder / "s.yaml"):
        result = check(folder / "p.yaml", site_path, "SN1", REPO / "hardware_catalog").resolved
        for p in result.problems:
            assert p.line >= 1 and p.column >= 1 and p.file


def test_a_typo_in_a_site_network_name_is_flagged(tmp_path: Path) -> None:
    site = tmp_path / "s.yaml"
    site.write_text(
        "apiVersion: oemkit/v1\nkind: SiteOverlay\nprofile: test-branch\nsite: {code: s1, name: S}\n"
        "overrides:\n  network:\n    guest:\n      - {name: lam, vlan: 120}\n"
    )
    res = check(BASE, site, None, None).resolved
    found = [(p.severity, p.file, p.line, p.message) for p in res.problems if "not acted on" not in p.message]
    assert found == [("warning", str(site), 8, "guest network 'lam' is used by no VM")]


def test_a_bad_serial_is_a_problem_not_a_crash() -> None:
    res = check(BASE, None, "a b!", None).resolved
    assert [(p.path, p.message) for p in res.errors] == [
        ("--serial", "serial 'a b!' is not 3-32 letters, digits and '-' (not at either end)")
    ]


def test_a_broken_catalog_is_reported_from_profile_checks(tmp_path: Path) -> None:
    (tmp_path / "dell").mkdir()
    (tmp_path / "dell" / "x.yaml").write_text("id: [\n")
    checked = check(BASE, None, None, tmp_path)
    assert checked.unreadable and any("x.yaml" in p.file for p in checked.resolved.errors)


def test_merge_keys_work_and_explicit_keys_win() -> None:
    doc = loads("base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\n", "m.yaml")
    assert doc.data["thing"] == {"x": 1, "y": 3}


def test_identify_refuses_a_sku_that_contradicts_the_name() -> None:
    from hypervisor_core.identity import SmbiosIdentity

    box = SmbiosIdentity(
        sys_vendor="Dell Inc.", product_name="PowerEdge R740", product_sku="SKU=0715;ModelName=PowerEdge R740xd"
    )
    assert _catalog.identify(box).model_id is None


def test_unreadable_serial_on_a_live_box_is_null(tmp_path: Path, monkeypatch) -> None:
    from oemkit.hardware import dmi

    folder = tmp_path / "id"
    folder.mkdir()
    (folder / "sys_vendor").write_text("Dell Inc.\n")
    (folder / "product_name").write_text("PowerEdge R650\n")
    (folder / "product_serial").write_text("SECRET\n")
    real = dmi._read_text

    def root_only(path: Path) -> str:
        if path.name == "product_serial":  # as for a non-root user on a real box
            raise dmi.UnreadableInput("cannot read: Permission denied", file=str(path))
        return real(path)

    monkeypatch.setattr(dmi, "_read_text", root_only)
    report = dmi.read_report(folder)
    assert (
        report.identity.product_serial is None and _catalog.identify(report.identity).model_id == "dell-poweredge-r650"
    )
