"""The plan and the libvirt XML are pure functions of (UnitConfig, Facts): golden files pin them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypervisor_core import config
from hypervisor_core.facts import probe
from hypervisor_core.match import match
from hypervisor_core.plan import make_plan, plan_json

from .conftest import REPO
from .firstboot_kit import R650_DUMP, compile_to, facts_tree, public_key

GOLDEN = REPO / "tests" / "golden"
UNITS = {
    "retail": ("retail-branch.yaml", "retail-ber01.yaml", R650_DUMP, None),
    "clinic": (
        "remote-clinic.yaml",
        "clinic-valley.yaml",
        "hpe/ProLiant-DL360-Gen10-Plus/6004A3CDB655.txt",
        "nvme:ssd:1920x2",
    ),
    "factory": (
        "factory-edge.yaml",
        "factory-plant2.yaml",
        "lenovo/ThinkSystem-SR650-V2/7AC016764E14.txt",
        "nvme:ssd:1920x4",
    ),
}


def _plan(name: str, tmp_path: Path):
    profile, site, dump, disks = UNITS[name]
    serial = f"GOLD{name.upper()}1"
    tmp_path.mkdir(parents=True, exist_ok=True)
    compile_to(REPO / "profiles" / profile, REPO / "profiles" / "sites" / site, serial, tmp_path / "u.json")
    cfg = config.load((tmp_path / "u.json").read_bytes(), public_key())
    facts = probe(facts_tree(dump, serial, tmp_path / "box", disks))
    return make_plan(cfg, facts, match(cfg, facts), "/")


@pytest.mark.parametrize("name", list(UNITS))
def test_plan_golden(name: str, tmp_path: Path, golden) -> None:
    plan = _plan(name, tmp_path)
    assert len({s.id for s in plan}) == len(plan)  # step ids are unique
    golden(GOLDEN / f"plan-{name}.json", plan_json(plan))


@pytest.mark.parametrize("name", list(UNITS))
def test_rendered_xml_golden(name: str, tmp_path: Path, golden) -> None:
    for step in _plan(name, tmp_path):
        if "xml" in step.params():
            golden(GOLDEN / "xml" / name / f"{step.id}.xml", step.params()["xml"])


def test_plan_is_deterministic(tmp_path: Path) -> None:
    a = plan_json(_plan("retail", tmp_path / "a"))
    b = plan_json(_plan("retail", tmp_path / "b"))
    assert a == b and json.loads(a)[0]["id"] == "host.machine-id"
