"""`oemkit image build|verify|upgrade` on the real core: both banks on a shared ESP; a qcow2 unit that is the raw
unit's very disk in a few clusters over its core's base; verify catching a tampered overlay cluster, an overlay
holding what a unit may not, a swapped or missing backing file; upgrades into the other bank (and the two formats'
upgrades giving the same disk); refusals; two cold builds byte-identical; parallel builds after prepare_shared; a
damaged shared cache rebuilt rather than used. Real tools (mkfs.fat, mtools, sgdisk, osslsigncode, sbverify,
qemu-img, qemu-io), no mocks, no boots: slow (the core and a few shared bases)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypervisor_core import bank
from oemkit.cli.app import app
from oemkit.image.appliance import disk, image, layout, qcow2, shared
from oemkit.image.appliance.verify import verify
from oemkit.seal import secureboot

from .conftest import REPO
from .core_fixtures import core_cache
from .firstboot_kit import compile_to

pytestmark = pytest.mark.slow
runner = CliRunner()
SERIALS = {"J30LAB01": "retail-muc02", "J30ABC12": "retail-ber01"}
MB = 10**6


def _keys(folder: Path) -> secureboot.SecureBootKeys:
    result = runner.invoke(app, ["keys", "init", "--dir", str(folder), "--secure-boot"])
    assert result.exit_code == 0, result.output
    return secureboot.load(folder)


def _cli(*args: str | Path) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, [str(a) for a in args])
    try:
        doc = json.loads(result.stdout) if "--json" in args else None
    except ValueError:
        doc = None
    return result.exit_code, doc, result.output


def _build(unit: Path, core: Path, sb: secureboot.SecureBootKeys, out: Path, fmt: str) -> dict:
    code, doc, output = _cli("image", "build", unit, "--core", core, "--keys", sb.folder.parent, "-o", out,
                             "--format", fmt, "--json")  # fmt: skip
    assert code == 0 and doc is not None, output
    return doc


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip(path: Path, at: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> secureboot.SecureBootKeys:
    return _keys(tmp_path_factory.mktemp("sb"))


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("units")
    out = {}
    for serial, site in SERIALS.items():
        out[serial] = folder / f"{serial}.json"
        compile_to(REPO / "profiles" / "retail-branch.yaml", REPO / "profiles" / "sites" / f"{site}.yaml", serial,
                   out[serial])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def built(core_dir: Path, sb, units, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """OUT folders with every unit built in each format."""
    outs = {fmt: tmp_path_factory.mktemp(f"out-{fmt}") for fmt in ("qcow2", "raw")}
    for fmt, out in outs.items():
        for unit in units.values():
            _build(unit, core_dir, sb, out, fmt)
    return outs


def _other_core(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A second real core: the same recipe with another factory key, so another core id and another UKI."""
    folder = tmp_path_factory.mktemp(name)
    assert runner.invoke(app, ["keys", "init", "--dir", str(folder / "k")]).exit_code == 0
    out = folder / "core"
    args = ["core", "build", "-o", out, "--pubkey", folder / "k" / "signing.pub", "--cache", core_cache(), "--json"]
    code, doc, output = _cli(*args)
    assert code == 0 and doc is not None, output
    return out


@pytest.fixture(scope="module")
def core2(tmp_path_factory: pytest.TempPathFactory, core_dir: Path) -> Path:
    return _other_core(tmp_path_factory, "core2")


def test_both_banks_sit_on_an_esp_every_unit_of_the_core_shares(built, core_dir: Path) -> None:
    out = built["raw"]
    core_id = json.loads((core_dir / "core.json").read_text())["core_id"]
    esps, configs = [], []
    for serial in SERIALS:
        raw = out / serial / "appliance.raw"
        names = {bank.new_entry(1, "a", counting=False).name, bank.new_entry(0, "b", counting=False).name}
        assert set(disk.fat_files(raw, layout.ESP.start)) == {
            "/EFI/BOOT/BOOTX64.EFI", "/loader/loader.conf", *(f"/{bank.UKI_DIR}/{n}" for n in names)}  # fmt: skip
        env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
        label = subprocess.run(["mlabel", "-s", "-i", f"{raw}@@{layout.ESP.start}", "::"], capture_output=True,
                               text=True, env=env, check=True)  # fmt: skip
        assert label.stdout.strip().endswith(bank.ESP_LABEL)
        with raw.open("rb") as fh:
            fh.seek(layout.ESP.start)
            esps.append(fh.read(layout.ESP.length))
            configs.append(fh.read(layout.CONFIG.length))
        manifest = json.loads((out / serial / "manifest.json").read_text())
        assert {b: e["name"] for b, e in manifest["banks"].items()} == layout.bank_names()
        assert {e["core_id"] for e in manifest["banks"].values()} == {core_id}
        assert manifest["banks"]["a"]["generation"] == 1 and manifest["banks"]["b"]["generation"] == 0
    assert esps[0] == esps[1] and configs[0] != configs[1]  # the ESP is per core, never per unit
    base = next((out / shared.BASE_DIR).glob("*.raw"))
    with base.open("rb") as fh:
        fh.seek(layout.ESP.start)
        assert fh.read(layout.ESP.length) == esps[0]


def test_a_qcow2_unit_is_the_raw_unit_in_a_few_clusters_over_the_base(built) -> None:
    for serial in SERIALS:
        overlay, raw = built["qcow2"] / serial / "appliance.qcow2", built["raw"] / serial / "appliance.raw"
        same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(overlay), str(raw)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert same.returncode == 0 and "identical" in same.stdout, same.stdout + same.stderr
        manifest = json.loads((overlay.parent / "manifest.json").read_text())
        assert manifest["bytes_beyond_core"] == overlay.stat().st_size <= MB
        assert manifest["cluster_size"] == qcow2.CLUSTER
        info = qcow2.info(overlay)
        assert (info["backing-filename"], info["backing-filename-format"]) == (manifest["base"]["path"], "raw")
        assert manifest["base"]["path"].startswith("../.base/")  # relative: OUT moves as a whole
        assert (overlay.parent / manifest["base"]["path"]).stat().st_size == manifest["base"]["bytes"]
        assert manifest["format"] == "qcow2" and manifest["profile"] == "retail-branch"
        assert manifest["model"] == "dell-poweredge-r650" and manifest["site"] in ("muc02", "ber01")
        assert manifest["fit"]["checked"] and manifest["fit"]["smallest_device"]["capacity_gb"] == 16
        tools = {"mkfs.fat", "mtools", "sgdisk", "qemu-img", "osslsigncode", "objcopy", "mke2fs"}
        assert set(manifest["tools"]) == tools
        assert all(v and v[0].isdigit() for v in manifest["tools"].values()), manifest["tools"]
        raw_manifest = json.loads((raw.parent / "manifest.json").read_text())
        assert raw_manifest["bytes_beyond_core"] == raw.stat().st_size == layout.DISK_BYTES
        for key in ("pcr15_expected", "unit_config", "banks", "contents", "systemd_boot_sha256", "uki", "core_id"):
            assert manifest[key] == raw_manifest[key], key


def test_verify_both_formats_and_what_tampering_looks_like(built, sb, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(built["qcow2"], out)
    keys = sb.folder.parent
    for fmt_out in (out, built["raw"]):
        code, doc, output = _cli("image", "verify", fmt_out / "J30LAB01", "--keys", keys, "--json")
        assert code == 0 and doc == {"serial": "J30LAB01", "verified": True, "problems": []}, output
    unit = out / "J30LAB01"
    overlay = unit / "appliance.qcow2"
    pristine = overlay.read_bytes()
    _flip(overlay, pristine.index(b'"serial"') + 10)  # a byte of unit.json in the overlay's own cluster
    code, doc, _ = _cli("image", "verify", unit, "--json")
    assert code == 1 and doc is not None
    assert doc["problems"] == ["appliance.qcow2: its bytes are not the ones the manifest records",
                               "the unit config: not the bytes the manifest records"]  # fmt: skip
    overlay.write_bytes(pristine)
    at = layout.ESP.start + 60 * MB
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -q -P 0 {at} 1024", str(overlay)], check=True)
    _, doc, _ = _cli("image", "verify", unit, "--json")
    assert doc is not None and any("outside the GPT and the config partition" in p for p in doc["problems"])
    overlay.write_bytes(pristine)
    base = unit / json.loads((unit / "manifest.json").read_text())["base"]["path"]
    original = base.read_bytes()
    other = base.with_name("other.raw")
    other.write_bytes(original)
    _flip(other, layout.ESP.start + 90 * MB)  # a base that differs where the unit never looks
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "../.base/other.raw", "-F", "raw",
                    str(overlay)], check=True)  # fmt: skip
    _, doc, _ = _cli("image", "verify", unit, "--json")
    assert doc is not None and any("backs onto '../.base/other.raw'" in p for p in doc["problems"])
    overlay.write_bytes(pristine)
    other.replace(base)  # the same name, other bytes: a swapped backing file
    code, doc, _ = _cli("image", "verify", unit, "--json")
    assert code == 1 and doc is not None and doc["problems"][-1].endswith("(a swapped backing file)")
    base.unlink()
    code, doc, _ = _cli("image", "verify", unit, "--json")
    assert code == 1 and doc is not None and "missing" in doc["problems"][-1]
    base.write_bytes(original)
    assert _cli("image", "verify", unit, "--keys", keys)[0] == 0
    stranger = _keys(tmp_path / "stranger")
    code, doc, _ = _cli("image", "verify", unit, "--keys", stranger.folder.parent, "--json")
    assert code == 1 and doc is not None and "systemd-boot (BOOTX64.EFI): not signed by this factory's db key" in (
        doc["problems"])  # fmt: skip


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_upgrade_writes_the_other_bank_and_the_image_still_verifies(
    built, sb, core_dir: Path, core2: Path, fmt: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built[fmt], out)
    unit, keys = out / "J30LAB01", sb.folder.parent
    image_file = unit / f"appliance.{fmt}"
    before = json.loads((unit / "manifest.json").read_text())
    code, doc, output = _cli("image", "upgrade", unit, "--core", core2, "--keys", keys, "--json")
    assert code == 0 and doc is not None, output
    new_id = json.loads((core2 / "core.json").read_text())["core_id"]
    assert doc["banks"]["a"] == before["banks"]["a"]
    assert doc["banks"]["b"]["name"] == bank.new_entry(2, "b", counting=True).name == "oemkit-2-b+3-0.efi"
    assert (doc["banks"]["b"]["generation"], doc["banks"]["b"]["core_id"]) == (2, new_id)
    assert doc == json.loads((unit / "manifest.json").read_text())
    assert _cli("image", "verify", unit, "--keys", keys)[0] == 0
    files = set(disk.fat_files(qcow2.guest_raw(image_file, tmp_path / "g.raw") if fmt == "qcow2" else image_file,
                               layout.ESP.start))  # fmt: skip
    assert "/EFI/Linux/oemkit-2-b+3-0.efi" in files and "/EFI/Linux/oemkit-0-b.efi" not in files
    if fmt == "qcow2":  # the unit now carries the new core's UKI itself
        uki_bytes = doc["contents"]["ESP"]["/EFI/Linux/oemkit-2-b+3-0.efi"]["bytes"]
        assert uki_bytes < doc["bytes_beyond_core"] - before["bytes_beyond_core"] < uki_bytes + 2 * MB
        raw_twin = tmp_path / "raw-out"
        shutil.copytree(built["raw"], raw_twin)
        assert _cli("image", "upgrade", raw_twin / "J30LAB01", "--core", core2, "--keys", keys)[0] == 0
        twin_raw = raw_twin / "J30LAB01" / "appliance.raw"
        same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(image_file), str(twin_raw)],
                              capture_output=True, check=False)  # fmt: skip
        assert same.returncode == 0, same.stdout  # both ways of upgrading give the same disk
    # the core already in the blessed bank A is refused (B, on trial, would be replaced next): nothing written
    upgraded = _sha(image_file)
    code, _, output = _cli("image", "upgrade", unit, "--core", core_dir, "--keys", keys)
    assert code == 1 and f"{unit}: core " in output and "is already in bank A (oemkit-1-a.efi)" in output
    assert _sha(image_file) == upgraded and not list(out.glob(".upgrade-*"))


def test_a_second_upgrade_replaces_the_untried_bank_and_refusals_touch_nothing(
    built, sb, core2: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    core3 = _other_core(tmp_path_factory, "core3")
    out = tmp_path / "out"
    shutil.copytree(built["qcow2"], out)
    unit, keys = out / "J30ABC12", sb.folder.parent
    assert _cli("image", "upgrade", unit, "--core", core2, "--keys", keys)[0] == 0
    code, doc, output = _cli("image", "upgrade", unit, "--core", core3, "--keys", keys, "--json")
    assert code == 0 and doc is not None, output
    # B was still on trial (never booted): it is replaced, A stays the blessed bank the box can fall back to
    assert doc["banks"]["b"]["name"] == bank.new_entry(3, "b", counting=True).name == "oemkit-3-b+3-0.efi"
    assert doc["banks"]["a"]["name"] == "oemkit-1-a.efi" and doc["upgrade"]["replaced"]["name"] == "oemkit-2-b+3-0.efi"
    assert _cli("image", "verify", unit, "--keys", keys)[0] == 0
    overlay = unit / "appliance.qcow2"
    assert overlay.stat().st_size < 2 * doc["contents"]["ESP"]["/EFI/Linux/oemkit-3-b+3-0.efi"]["bytes"] + 4 * MB
    # refused: the core already in the target bank
    code, _, output = _cli("image", "upgrade", unit, "--core", core3, "--keys", keys)
    assert code == 1 and "is already in bank B (oemkit-3-b+3-0.efi)" in output
    # refused: another factory's keys (its db signed nothing on this image)
    stranger = _keys(tmp_path / "stranger")
    code, _, output = _cli("image", "upgrade", unit, "--core", core2, "--keys", stranger.folder.parent)
    assert code == 1 and "does not verify, so it is not upgraded" in output and "not signed" in output
    # refused: an image that no longer verifies; nothing written
    pristine = overlay.read_bytes()
    _flip(overlay, pristine.index(b'"serial"') + 10)
    tampered = _sha(overlay)
    code, _, output = _cli("image", "upgrade", unit, "--core", core3, "--keys", keys)
    assert code == 1 and f"{unit}: the image does not verify" in output
    assert _sha(overlay) == tampered and not list(out.glob(".upgrade-*"))


def test_two_cold_builds_are_byte_identical(core_dir: Path, sb, units, tmp_path: Path) -> None:
    """Separate empty output folders (so separate UKI and base caches): the same image bytes in both formats."""
    done = []
    for run in ("one", "two"):
        out = tmp_path / run
        done.append((_build(units["J30LAB01"], core_dir, sb, out, "qcow2"),
                     _build(units["J30ABC12"], core_dir, sb, out, "raw")))  # fmt: skip
    assert done[0] == done[1]
    for rel in ("J30LAB01/appliance.qcow2", "J30ABC12/appliance.raw", "J30LAB01/manifest.json"):
        assert _sha(tmp_path / "one" / rel) == _sha(tmp_path / "two" / rel), rel
    bases = [next((tmp_path / run / shared.BASE_DIR).glob("*.raw")) for run in ("one", "two")]
    assert bases[0].name == bases[1].name and _sha(bases[0]) == _sha(bases[1])


def test_units_build_in_parallel_after_prepare_shared(core_dir: Path, sb, tmp_path: Path) -> None:
    serials = [f"J30LAB{i:02d}" for i in range(2, 8)]
    configs = []
    for serial in serials:
        configs.append(tmp_path / f"{serial}.json")
        compile_to(REPO / "profiles" / "retail-branch.yaml", REPO / "profiles" / "sites" / "retail-muc02.yaml",
                   serial, configs[-1])  # fmt: skip
    out = tmp_path / "out"
    image.prepare_shared(core_dir, sb, out)
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [pool.submit(image.build, c, core_dir, sb, out, fmt=("qcow2", "raw")[i % 2])
                for i, c in enumerate(configs)]  # fmt: skip
        manifests = [j.result() for j in jobs]
    assert [m["serial"] for m in manifests] == serials
    for serial in serials:
        assert verify(out / serial, sb)[1] == [], serial
    assert not list(out.glob("*/.work-*")) and not list(out.glob("*/.appliance*"))


def test_a_damaged_shared_cache_is_rebuilt_never_used(core_dir: Path, sb, units, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _build(units["J30LAB01"], core_dir, sb, out, "qcow2")
    base = next((out / shared.BASE_DIR).glob("*.raw"))
    efi = next((out / shared.UKI_DIR).glob("*/oemkit-*.efi"))
    _flip(base, layout.ESP.start + 80 * MB)  # a flipped bit on disk
    with efi.open("r+b") as fh:
        fh.truncate(efi.stat().st_size // 2)  # half a file, as a crash leaves it
    code, doc, output = _cli("image", "build", units["J30LAB01"], "--core", core_dir, "--keys", sb.folder.parent,
                             "-o", out, "--force", "--json")  # fmt: skip
    assert code == 0 and doc == first, output
    assert _sha(base) == first["base"]["sha256"]
    assert verify(out / "J30LAB01", sb)[1] == []
