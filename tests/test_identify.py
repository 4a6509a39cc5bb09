"""Identify every real dump by its content alone: catalog models right, everything else null."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hypervisor_core.identity import SmbiosIdentity
from oemkit.catalog.store import Catalog
from oemkit.hardware.dmi import read_report

from .conftest import REPO, sample_dumps, samples_dir


def _expected() -> dict[str, str]:
    """Ground truth from the catalog's own `sources:`: a dump a model cites must identify as that model."""
    from oemkit.catalog.store import load_catalog

    return {s.dmi: m.id for m in load_catalog(REPO / "hardware_catalog") for s in m.sources if s.dmi}


EXPECTED = _expected()
DUMPS = sample_dumps()


def test_samples_are_there() -> None:
    assert len(DUMPS) >= 20, f"expected the real dmidecode samples in {samples_dir()}"


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_identify_by_content_only(dump: Path, tmp_path: Path, catalog: Catalog) -> None:
    neutral = tmp_path / "box.txt"  # the sample's folder name says the model; the content alone must tell
    shutil.copyfile(dump, neutral)
    found = catalog.identify(read_report(neutral).identity)
    want = EXPECTED.get(dump.relative_to(samples_dir()).as_posix())
    assert found.model_id == want, found.reason


def _box(**kw: str | None) -> SmbiosIdentity:
    return SmbiosIdentity(**kw)


@pytest.mark.parametrize(
    ("vendor", "product", "sku"),
    [
        ("Dell Inc.", "PowerEdge R740xd", None),  # a sibling, not the R740
        ("Dell Inc.", "PowerEdge R740XD2", None),
        ("Dell Inc.", "PowerEdge R6525", None),
        ("Dell Inc.", "PowerEdge R650xs", None),
        ("Dell Inc.", "Precision 7920 Rack", None),  # a rack workstation is not a server model
        ("HPE", "ProLiant DL385 Gen10", None),
        ("HPE", "ProLiant DL380 Gen10 Plus", None),
        ("HPE", "ProLiant DL360 Gen11", None),
        ("HP", "ProLiant DL380p Gen8", None),
        ("HP", "Z840 Workstation", None),
        ("Lenovo", "ThinkSystem SR650 V3", None),
        ("Lenovo", "ThinkSystem SR635", None),
        ("Lenovo", "ThinkStation P920", None),
        ("IBM", "IBM System x3550 M4 Server -[7914AC1]-", None),
        ("IBM", "IBM System x3650 M4 -[7915AC1]-", None),
        ("LENOVO", "System x3650 M5: -[7915AC1]-", None),  # M5 name, M4 machine type: refuse to guess
        ("Lenovo", "ThinkSystem SR650 -[7Z73CTO1WW]-", None),  # SR650 name, SR650 V2 machine type
        ("Super Micro", "PowerEdge R650", None),  # right name, wrong maker
        ("LENOVO", "20S0000JGE", "LENOVO_MT_20S0_BU_Think_FM_ThinkPad T14 Gen 1"),  # a laptop MTM
        ("QEMU", "Standard PC (Q35 + ICH9, 2009)", None),
    ],
)
def test_never_a_different_model(vendor: str, product: str, sku: str | None, catalog: Catalog) -> None:
    found = catalog.identify(_box(sys_vendor=vendor, product_name=product, product_sku=sku))
    assert found.model_id is None, f"{vendor} {product} wrongly identified as {found.model_id}"


@pytest.mark.parametrize(
    ("vendor", "product", "sku", "want"),
    [
        ("Dell Inc.", "PowerEdge R650", "SKU=0912;ModelName=PowerEdge R650", "dell-poweredge-r650"),
        ("Dell Inc.", "  PowerEdge   R650 ", None, "dell-poweredge-r650"),  # padding, as some BIOSes write it
        ("DELL INC.", "poweredge r650", None, "dell-poweredge-r650"),
        ("Dell Inc.", None, "SKU=0912;ModelName=PowerEdge R650", "dell-poweredge-r650"),
    ],
)
def test_spelling_variants_of_a_known_model(
    vendor: str, product: str | None, sku: str | None, want: str, catalog: Catalog
) -> None:
    found = catalog.identify(_box(sys_vendor=vendor, product_name=product, product_sku=sku))
    assert found.model_id == want, found.reason


def test_lenovo_machine_type_alone_identifies(catalog: Catalog) -> None:
    bare = _box(sys_vendor="Lenovo", product_name="7X06CTO1WW", product_sku="7X06CTO1WW")
    assert catalog.identify(bare).model_id == "lenovo-thinksystem-sr650"
    v2 = _box(sys_vendor="Lenovo", product_name="ThinkSystem SR650 V2", product_sku="7Z73CTO1WW")
    assert catalog.identify(v2).model_id == "lenovo-thinksystem-sr650-v2"
    assert catalog.identify(replace(v2, product_sku="7X06CTO1WW")).model_id is None  # V2 name, V1 machine type


def test_ibm_branded_system_x(catalog: Catalog) -> None:
    ibm = _box(sys_vendor="IBM", product_name="IBM System x3550 M5 -[5463AC1]-")  # IBM-built units were 5463
    assert catalog.identify(ibm).model_id == "lenovo-system-x-x3550-m5"


def _sysfs_from(dump: Path, folder: Path) -> None:
    box = read_report(dump).identity
    folder.mkdir()
    for name, value in vars(box).items():
        if value is not None and name != "chassis_type":
            (folder / name).write_text(value + "\n")
    (folder / "chassis_type").write_text("23\n")


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sysfs_folder_identifies_like_the_dump(dump: Path, tmp_path: Path, catalog: Catalog) -> None:
    folder = tmp_path / "id"
    _sysfs_from(dump, folder)
    from_dir = catalog.identify(read_report(folder).identity).model_id
    from_dump = catalog.identify(read_report(dump).identity).model_id
    assert from_dir == from_dump


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oemkit", *args], capture_output=True, text=True, cwd=REPO)


def test_cli_json_contract(tmp_path: Path) -> None:
    src = samples_dir() / "dell" / "PowerEdge-R650" / "AF241F438036.txt"
    box = tmp_path / "unit.txt"
    shutil.copyfile(src, box)
    run = _cli("catalog", "identify", "--json", str(box))
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["model"] == "dell-poweredge-r650"
    assert out["vendor"] == "Dell Inc." and out["product"] == "PowerEdge R650"
    assert out["serial"] is None  # the dump masks it as "--"
    assert (out["cpu_sockets_populated"], out["memory_gib"], out["virtualization"]) == (2, 32, "vmx")


def test_cli_not_identified_exit_1(tmp_path: Path) -> None:
    src = samples_dir() / "dell" / "OptiPlex-7050" / "0820587B7249.txt"
    run = _cli("catalog", "identify", "--json", str(src))
    assert run.returncode == 1
    out = json.loads(run.stdout)
    assert out["model"] is None and out["vendor"] == "Dell Inc." and out["memory_gib"] == 16


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no SMBIOS structure"),
        (b"hello\nworld\n", "no SMBIOS structure"),
        (b"\x7fELF\x02\x01\x01\x00\x00", "binary data"),
        (b"Handle 0x0000, DMI type 0, 26 bytes\nBIOS Information\n\tVendor: X\n", "no System Information"),
    ],
)
def test_cli_unreadable_exit_2(content: bytes, message: str, tmp_path: Path) -> None:
    bad = tmp_path / "box.txt"
    bad.write_bytes(content)
    run = _cli("catalog", "identify", str(bad))
    assert run.returncode == 2
    assert message in run.stderr and str(bad) in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_missing_path_and_empty_folder(tmp_path: Path) -> None:
    assert _cli("catalog", "identify", str(tmp_path / "nope")).returncode == 2
    empty = _cli("catalog", "identify", str(tmp_path))
    assert empty.returncode == 2 and "sys_vendor" in empty.stderr
