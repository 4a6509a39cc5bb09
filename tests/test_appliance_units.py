"""The appliance's disk pieces without a core: FAT and GPT images from the real tools (reproducible, no root), read
back by `image verify`'s GPT reader; a unit's GPT derived from the base's exactly as sgdisk writes it; the cluster
diff a qcow2 overlay is made of; bank planning for upgrades; the fit against the catalog's boot devices (and the
docs' table of them); bad manifests and non-images are located refusals."""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypervisor_core import bank
from oemkit.catalog.store import Catalog, load_catalog
from oemkit.cli.app import app
from oemkit.errors import UnreadableInput
from oemkit.image.appliance import disk, fit, layout, manifest, qcow2, shared, uki, upgrade
from oemkit.image.appliance.verify import outside, partitions, verify

from .conftest import REPO

EPOCH = 1_700_000_000
runner = CliRunner()


def _image(tmp: Path) -> Path:
    payload = tmp / "payload.txt"
    payload.write_text("hello\n")
    fat = disk.fat_image(tmp / "cfg.img", 8, "OEMKIT-CFG", "0E5A0002", {"/unit.json": payload}, EPOCH, fat_bits=None)
    part = disk.Partition("oemkit-config", disk.LINUX_DATA_TYPE, "6f3a2c1e-0000-4000-8000-000000000002", fat, 8)
    return disk.gpt_disk(tmp / "disk.raw", "6f3a2c1e-0000-4000-8000-000000000001", [part], EPOCH)


def test_disk_images_are_reproducible_and_read_back(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _image(tmp_path / "a"), _image(tmp_path / "b")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    assert partitions(first) == {"oemkit-config": (1 << 20, 8 << 20)}
    assert disk.fat_files(first, 1 << 20) == ["/unit.json"]
    assert disk.fat_read(first, 1 << 20, "/unit.json", tmp_path / "out") and (tmp_path / "out").read_text() == "hello\n"


def test_a_units_gpt_is_the_bases_with_its_guids_as_sgdisk_writes_it(tmp_path: Path) -> None:
    """image build re-GUIDs the base's GPT in Python (sgdisk costs a host-wide sync and a second per write): the
    bytes must be exactly sgdisk's for the unit's GUIDs, both copies, every CRC."""
    cid, size = "0123456789abcdef0123", layout.DISK_BYTES
    base = tmp_path / "base.raw"
    disk.gpt_table(base, layout.guid(layout.BASE, cid, "disk"), shared.partitions(layout.BASE, cid, None, None), 1)
    raw = base.read_bytes()
    assert len(raw) == size
    for serial in ("J30LAB01", "CZ2104MED1"):
        by_sgdisk = tmp_path / f"{serial}.raw"
        parts = shared.partitions(serial, cid, None, None)
        disk.gpt_table(by_sgdisk, layout.guid(serial, cid, "disk"), parts, 1)
        want = by_sgdisk.read_bytes()
        head, tail = disk.regpt(raw[: layout.ESP_START], raw[layout.CONFIG_END :], layout.guid(serial, cid, "disk"),
                                [p.guid for p in parts])  # fmt: skip
        assert head == want[: layout.ESP_START] and tail == want[layout.CONFIG_END :]
        assert head != raw[: layout.ESP_START]


def test_changed_clusters_are_found_and_merged() -> None:
    old = bytes(8 * 1024)
    new = bytearray(old)
    new[10] = 1  # cluster 0
    new[1024 * 1 + 5] = 2  # cluster 1: merged with 0
    new[1024 * 5] = 3  # cluster 5 alone
    runs = qcow2.changed(bytes(new), old, 4096, 1024)
    assert [(r.offset, len(r.data)) for r in runs] == [(4096, 2048), (4096 + 5 * 1024, 1024)]
    assert runs[0].data == bytes(new[:2048])
    assert qcow2.changed(old, old, 0, 1024) == []
    with pytest.raises(ValueError):
        qcow2.changed(old, old, 100, 1024)


def test_an_overlay_may_hold_only_the_gpt_and_the_config_partition() -> None:
    allowed = layout.allowed_overlay(1024, esp_too=False)
    tail = layout.DISK_BYTES - 17 * 1024
    good = [(0, 1024), (layout.CONFIG_START, 4096), (tail, 17 * 1024)]
    assert outside(good, allowed) == []
    assert outside([(layout.ESP_START + 4096, 1024)], allowed) == [(layout.ESP_START + 4096, layout.ESP_START + 5120)]
    assert outside([(0, 64 * 1024)], allowed) == [(layout.GPT_HEAD, 64 * 1024)]  # 34 sectors = 17 clusters
    assert outside([(layout.ESP_START, 2048)], layout.allowed_overlay(1024, esp_too=True)) == []


def test_the_factory_banks_and_what_an_upgrade_writes() -> None:
    names = layout.bank_names()
    assert names == {"a": bank.new_entry(1, "a", counting=False).name, "b": bank.new_entry(0, "b", counting=False).name}
    banks = {b: manifest.bank_entry(n, "core1", "x") for b, n in names.items()}
    assert manifest.default_bank(banks) == "a"
    target, entry = upgrade.plan(banks, "core2")
    assert (target, entry.name, entry.generation) == ("b", bank.new_entry(2, "b", counting=True).name, 2)
    assert entry.name.endswith("+3-0.efi")
    banks["b"] = manifest.bank_entry(entry.name, "core2", "y")
    assert manifest.default_bank(banks) == "b"  # the new bank boots first ...
    target, entry = upgrade.plan(banks, "core3")
    # ... but it is still on trial and A is the only blessed bank: a second upgrade replaces the trial, never A
    assert (target, entry.generation) == ("b", 3)
    with pytest.raises(upgrade.UpgradeRefused, match="already in bank B"):
        upgrade.plan(banks, "core2")
    banks["b"]["name"] = bank.Entry(2, "b").name  # the box blessed B: now A is the one to replace
    assert upgrade.plan(banks, "core3")[0] == "a"
    banks["b"]["name"] = bank.Entry(2, "b", 0, 3).name  # tried three times, never blessed: A boots again
    assert manifest.default_bank(banks) == "a"


def test_the_smallest_boot_device_with_a_capacity_is_the_one_that_counts(catalog: Catalog) -> None:
    assert fit.smallest(catalog, "dell-poweredge-r620", "u.json") == {
        "kind": "idsdm", "name": "IDSDM (2 x SD)", "capacity_gb": 2}  # fmt: skip
    assert fit.smallest(catalog, "hpe-proliant-microserver-gen10", "u.json") is None  # only a USB port
    record = fit.check(catalog, "dell-poweredge-r620", layout.DISK_BYTES, "u.json")
    assert record["checked"] and record["smallest_device"]["capacity_gb"] == 2
    with pytest.raises(fit.DoesNotFit, match=r"IDSDM \(2 x SD\) \(2 GB\)") as refused:
        fit.check(catalog, "dell-poweredge-r620", 2 * fit.GB + 1, "u.json")
    assert refused.value.file == "u.json" and "poweredge-r620.yaml" in (refused.value.hint or "")
    with pytest.raises(fit.DoesNotFit, match="not in the catalog"):
        fit.check(catalog, "acme-nothing", 1, "u.json")
    assert not fit.check(catalog, "hpe-proliant-microserver-gen10", 1, "u.json")["checked"]


def test_an_image_that_does_not_fit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A catalog copy whose R650 has only a (fake) 0 GB device: `image build` exits 1, located at the unit
    config, before it reads the core or writes a byte."""
    cat = tmp_path / "catalog"
    shutil.copytree(REPO / "hardware_catalog", cat)
    r650 = cat / "dell" / "poweredge-r650.yaml"
    r650.write_text(re.sub(r"capacities_gib: \[[0-9, ]+\]", "capacities_gib: [0]", r650.read_text()))
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keys", "init", "--dir", str(keys), "--secure-boot"]).exit_code == 0
    unit = REPO / "tests" / "data" / "units" / "v1" / "retail-branch-J30ABC12.json"
    out = tmp_path / "out"
    args = ["--catalog", str(cat), "image", "build", str(unit), "--core", str(tmp_path / "no-core"), "--keys",
            str(keys), "-o", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"oemkit: error: {unit}: the image ({layout.DISK_BYTES:,} bytes) does not fit")
    assert "dell-poweredge-r650" in result.stderr and not out.exists()


def test_the_docs_table_of_boot_devices_is_the_catalogs(catalog: Catalog) -> None:
    """docs/appliance.md says per model whether its embedded boot devices are fixed disks (state may live there)
    or flash that wears (state must go to a local fixed disk): derived from the catalog, so kept in step."""
    assert fit.boot_device_table(catalog) in (REPO / "docs" / "appliance.md").read_text()


def test_uki_sections_are_laid_out_above_the_stub_without_overlap(tmp_path: Path) -> None:
    files = {}
    for name, size in (("osrel", 100), ("cmdline", 40), ("linux", 8_300_000), ("initrd", 25_100_000)):
        files[name] = tmp_path / name
        files[name].write_bytes(b"\0" * size)
    sections = uki.layout(files["osrel"], files["cmdline"], files["linux"], files["initrd"])
    assert sections[0].vma == uki.STUB_END
    for before, after in itertools.pairwise(sections):
        assert after.vma >= before.vma + before.data.stat().st_size and (after.vma - uki.STUB_END) % uki.ALIGN == 0


def test_not_an_image_or_no_manifest_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.raw"
    plain.write_bytes(bytes(4096))
    with pytest.raises(UnreadableInput, match="no GPT"):
        partitions(plain)
    with pytest.raises(UnreadableInput, match="cannot read"):
        verify(tmp_path)
    (tmp_path / "manifest.json").write_text('{"files": {}}')
    with pytest.raises(UnreadableInput, match="not an image manifest"):
        verify(tmp_path)


def test_the_catalog_is_loaded_again_only_when_a_model_file_changes(tmp_path: Path) -> None:
    cat = tmp_path / "catalog"
    shutil.copytree(REPO / "hardware_catalog", cat)
    first = fit.catalog(cat)
    assert fit.catalog(cat) is first
    model = cat / "dell" / "poweredge-r650.yaml"
    model.write_text(model.read_text() + "\n")
    assert fit.catalog(cat) is not first and len(fit.catalog(cat)) == len(load_catalog(cat))


def test_the_twin_gives_each_model_its_kind_of_boot_device(catalog: Catalog) -> None:
    """A fixed boot disk at its smallest size (the state grows there); SD/IDSDM or USB-only boxes on USB (each kit
    presents itself to the host as USB mass storage: the core refuses state there and first boot moves it); a VROC
    M.2 mirror as its two halves."""
    from oemkit.twin import appliance, qemu
    from oemkit.twin.spec import Smbios, Twin

    def device(model_id: str) -> tuple:
        model = catalog.get(model_id)
        assert model is not None
        d = appliance.boot_device(model)
        return d.size, d.bus, d.mirror

    assert device("dell-poweredge-r650") == (240 * fit.GB, "virtio", False)
    assert device("hpe-proliant-dl360-gen10") == (None, "usb", False)
    assert device("dell-poweredge-r620") == (None, "usb", False)
    assert device("lenovo-thinksystem-sr650-v2") == (240 * fit.GB, "virtio", True)
    tw = Twin("m", "S1", Smbios("Acme", "Box", "S1", "00000000-0000-0000-0000-000000000001"), (), ())
    common = {"kernel": None, "initrd": None, "disk_paths": [], "config_iso": None, "accel": "tcg",
              "firmware": ["-bios", "x"], "boot_disk": "b0.qcow2", "boot_format": "qcow2"}  # fmt: skip
    usb = " ".join(qemu.qemu_argv(tw, boot_bus="usb", **common))  # type: ignore[arg-type]
    assert "qemu-xhci,id=xhci" in usb and "usb-storage,drive=boot,bus=xhci.0,bootindex=0" in usb
    assert "virtio-blk-pci,drive=boot" not in usb
    mirror = " ".join(qemu.qemu_argv(tw, boot_mirror="b1.qcow2", **common))  # type: ignore[arg-type]
    assert "virtio-blk-pci,drive=boot,bus=pcie.0,addr=0x5,bootindex=0" in mirror
    assert "file=b1.qcow2" in mirror and "virtio-blk-pci,drive=boot1,bus=pcie.0,addr=0x4" in mirror
