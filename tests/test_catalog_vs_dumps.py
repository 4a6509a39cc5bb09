"""Every catalog model is proven against the real dmidecode dumps of that model."""

from __future__ import annotations

import pytest

from oemkit.catalog.schema import HardwareModel
from oemkit.catalog.store import Catalog
from oemkit.hardware.dmi import read_report

from .conftest import REPO, samples_dir

# 0000:00:00.0 is the host bridge on every x86 board; Lenovo firmware writes it for LOM ports that are absent.
_NO_ADDRESS = {None, "0000:00:00.0"}


def _model_dumps() -> list[tuple[str, str]]:
    from oemkit.catalog.store import load_catalog

    cat = load_catalog(REPO / "hardware_catalog")
    return [(m.id, s.dmi) for m in cat for s in m.sources if s.dmi]


@pytest.fixture(scope="module")
def by_id(catalog: Catalog) -> dict[str, HardwareModel]:
    return {m.id: m for m in catalog}


@pytest.mark.parametrize(("model_id", "dump"), _model_dumps())
def test_model_matches_its_dumps(model_id: str, dump: str, by_id: dict[str, HardwareModel]) -> None:
    model = by_id[model_id]
    path = samples_dir() / dump
    assert path.is_file(), f"{model_id} cites {dump}, which is not in {samples_dir()}"
    report = read_report(path)

    assert model.identity.spec().mismatch(report.identity) is None, "SMBIOS identity does not match"
    slots = sum(a.devices for a in report.memory_arrays)
    assert model.memory.dimm_slots == slots, "dimm_slots must equal the type 16 Number Of Devices total"
    declared = sum(a.max_capacity_bytes or 0 for a in report.memory_arrays)
    assert model.memory.max_gib * (1 << 30) >= declared, "max_gib is below the type 16 Maximum Capacity total"
    assert model.cpu.sockets == report.cpu_sockets, "cpu.sockets must equal the type 4 count"
    assert model.cpu.virtualization == report.virtualization
    quirks = {(q.onboard_device, q.pci_address) for q in model.smbios_quirks}
    reported = {
        d.pci_address
        for d in report.onboard_devices
        if d.kind == "Ethernet" and d.pci_address not in _NO_ADDRESS and (d.designation, d.pci_address) not in quirks
    }
    ours = {a for p in model.nics for a in (p.pci_address, *p.alt_pci_addresses) if a}
    assert reported <= ours, f"type 41 NICs missing from the catalog: {sorted(reported - ours)}"
    by_address = {a: p for p in model.nics for a in (p.pci_address, *p.alt_pci_addresses) if a}
    for dev in report.onboard_devices:
        if dev.kind == "Ethernet" and dev.pci_address in by_address:
            assert by_address[dev.pci_address].smbios_designation == dev.designation
