"""What the factory can know, it checks, and reports all at once, on the line of the layer that set it.

(The one-file-per-check cases with golden outputs are in tests/data/profiles/broken/; these are the behaviours
that cut across commands: compile, a bad unit layer, the host name rules, rules a catalog model cannot meet.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.catalog.schema import Bays
from oemkit.catalog.store import load_catalog
from oemkit.cli.app import app
from oemkit.profile.check import check
from oemkit.profile.schema import hostname_problem

from .conftest import REPO
from .firstboot_kit import KEY

runner = CliRunner()
BROKEN = REPO / "tests" / "data" / "profiles" / "broken"


@pytest.mark.parametrize(
    ("hostname", "why"),
    [
        ("br-ber01-sn0001", None),
        ("a" * 63, None),
        ("a" * 64, "the label"),  # one label over DNS's 63
        ("a" * 63 + ".b", "Linux takes host names of up to 64"),  # labels fine, 65 in all
        ("a" * 30 + "." + "b" * 33, None),  # exactly 64
        ("br-ber01-sn0001.", "is not a host name label"),  # an empty last label
        ("br_ber01", "is not a host name label"),
        ("-br", "is not a host name label"),
    ],
    ids=["plain", "63-label", "64-label", "65-in-all", "64-in-all", "empty-label", "underscore", "leading-dash"],
)
def test_host_name_rules(hostname: str, why: str | None) -> None:
    found = hostname_problem(hostname)
    assert (found is None) if why is None else (found is not None and why in found), found


def test_compile_refuses_a_host_name_linux_cannot_take_on_the_templates_line(tmp_path: Path) -> None:
    profile = BROKEN / "hostname-too-long-for-linux.yaml"
    site = BROKEN / "hostname-too-long-for-linux.site.yaml"
    out = tmp_path / "u.json"
    args = ["compile", str(profile), "--site", str(site), "--serial", "SN0001", "--key", str(KEY), "-o", str(out)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    (problem,) = json.loads(result.stdout)["problems"]
    assert (problem["file"], problem["line"], problem["path"]) == (str(profile), 8, "host.hostname")
    assert "Linux takes host names of up to 64" in problem["message"]
    assert list(tmp_path.iterdir()) == []


def test_a_bad_serial_does_not_hide_the_profiles_own_problems() -> None:
    res = check(BROKEN / "bad-ip.yaml", None, "bad serial!", REPO / "hardware_catalog").resolved
    paths = {p.path for p in res.errors}
    assert paths == {"--serial", "host.dns.servers[0]"}


def test_a_broken_site_header_still_merges_its_overrides() -> None:
    case = BROKEN / "site-header-and-overrides-broken"
    res = check(case.with_suffix(".yaml"), case.with_suffix(".site.yaml"), None, REPO / "hardware_catalog").resolved
    assert {p.path for p in res.errors} == {"site.code", "network.management.vlan"}


def test_hdds_on_a_model_whose_bays_take_none_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No catalog model today has only E3.S/NVMe bays (the R660's E3.S option is one); the rule is for it."""
    catalog = load_catalog(REPO / "hardware_catalog")
    model = catalog.get("dell-poweredge-r650")
    assert model is not None
    bays = [Bays(count=8, size="E3.S", interfaces=["nvme"])]
    e3s = model.model_copy(update={"storage": model.storage.model_copy(update={"bays": bays})})
    monkeypatch.setattr(catalog, "get", lambda model_id: e3s if model_id == model.id else None)
    text = (BROKEN / "disk-rule-hdd-too-large.yaml").read_text()  # two HDDs of a size that is sold, any interface
    profile = tmp_path / "hdd.yaml"
    profile.write_text(text.replace("interface: sata, ", "").replace("min_size_gib: 50000, ", ""))
    res = check(profile, None, None, REPO / "hardware_catalog", catalog=catalog).resolved
    message = "dell-poweredge-r650 has no bays that take an HDD (SATA or SAS, 2.5 or 3.5 in)"
    assert [(p.path, p.message) for p in res.errors] == [("storage.datastore.rotational", message)]


def test_an_ambiguous_scalar_does_not_hide_the_files_other_problems(tmp_path: Path) -> None:
    text = (BROKEN / "site-breaks-cross-field-rule.yaml").read_text()
    profile = tmp_path / "p.yaml"
    profile.write_text(text.replace("  require_tpm: true\n", "  require_tpm: yes\n  bogus: 1\n"))
    res = check(profile, None, None, REPO / "hardware_catalog").resolved
    assert [(p.path, p.message.split(":")[0]) for p in res.errors] == [
        ("security.require_tpm", "ambiguous scalar 'yes'"),  # and not also "not a valid boolean": it explains that
        ("security.bogus", "unknown key 'bogus'"),
    ]
