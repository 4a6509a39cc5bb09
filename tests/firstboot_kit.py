"""Shared helpers for the first-boot tests: a fixed test key, compiled units, facts trees from real dumps."""

from __future__ import annotations

import json
from pathlib import Path

from hypervisor_core import config
from oemkit.catalog.store import load_catalog
from oemkit.hardware.disks import parse_disks
from oemkit.hardware.dmi import read_report
from oemkit.hardware.facts_tree import build_tree
from oemkit.seal.compile import compile_unit
from oemkit.seal.keys import load_private_key

from .conftest import REPO, samples_dir

KEY = REPO / "tests" / "data" / "keys" / "signing.key"
PUB = REPO / "tests" / "data" / "keys" / "signing.pub"
EMPTY_HOST = REPO / "tests" / "data" / "libvirt" / "empty-host.xml"
R650_DUMP = "dell/PowerEdge-R650/AF241F438036.txt"


def test_uri() -> str:
    """A fresh, private libvirt test-driver host for each open (virt-manager's pattern)."""
    return f"test://{EMPTY_HOST}"


test_uri.__test__ = False  # a helper, not a test


def public_key() -> bytes:
    return config.read_public_key(PUB.read_text())


def compile_to(profile: Path, site: Path, serial: str, out: Path, unit: Path | None = None) -> dict:
    compiled = compile_unit(profile, site, serial, load_private_key(KEY), load_catalog(REPO / "hardware_catalog"),
                            unit_file=unit)  # fmt: skip
    assert not compiled.problems, [str(p) for p in compiled.problems]
    out.write_text(compiled.text())
    return compiled.document


def facts_tree(dump: str, serial: str, out: Path, disks: str | None = None) -> Path:
    catalog = load_catalog(REPO / "hardware_catalog")
    report = read_report(samples_dir() / dump)
    model = catalog.get(catalog.identify(report.identity).model_id)
    build_tree(out, report, model, serial, parse_disks(disks) if disks else None)
    return out


def status_line(output: str) -> dict:
    last = output.strip().splitlines()[-1]
    assert last.startswith("OEMKIT-STATUS "), f"last console line is not the status: {last!r}"
    return json.loads(last.removeprefix("OEMKIT-STATUS "))
