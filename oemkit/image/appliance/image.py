"""`oemkit image build`: one unit's appliance disk image — GPT with an ESP (signed systemd-boot, the core's signed
UKI as bank A) and a config partition holding the unit's signed config.

The UKI and systemd-boot are the same bytes for every unit of a core (built once into the output folder's shared
`.uki/`); per unit only the config partition and the GUIDs (derived from the serial and the core id) differ. The
same inputs give the same image bytes (the core's SOURCE_DATE_EPOCH everywhere, no clock, no randomness).
Not yet here (issue 12): bank B and boot counting, the state partition, PCR 15, qcow2 output, `image verify`."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from hypervisor_core import config, tpm
from hypervisor_core.fsutil import sha256_file, write_atomic
from oemkit.errors import UnreadableInput
from oemkit.image.appliance import disk, uki
from oemkit.image.tools import BuildError, run_tool
from oemkit.inputs import read_input
from oemkit.outputs import check_new
from oemkit.seal.secureboot import SecureBootKeys

ESP_MIB = 96  # systemd-boot and two UKI banks of ~34 MB
CONFIG_MIB = 8
CONFIG_LABEL = "OEMKIT-CFG"  # hypervisor_core.layout.CONFIG_PARTITION_LABEL (the init finds it by this)
LOADER_CONF = b"timeout 0\nconsole-mode keep\n"
NAMESPACE = uuid.UUID("1f0c6a3e-6b5e-4f4e-9a57-0e6b1d7a0c11")  # oemkit's: GUIDs of a unit's image derive from it


def _guid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def _volume_id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8].upper()


def unit_of(config_bytes: bytes, path: Path) -> tuple[str, str]:
    """The serial and content id of a sealed unit config (parsed as the agent parses it; its signature is the
    agent's to check, on the box, against the key in the core)."""
    try:
        config.load(config_bytes, None)
        doc = json.loads(config_bytes)
        return str(doc["serial"]), str(doc["content_id"])
    except (config.ConfigError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableInput(f"not a sealed unit config: {exc}", file=str(path)) from None


def shared_boot_files(coredir: Path, shared: Path, keys: SecureBootKeys) -> tuple[Path, Path, dict]:
    """The signed UKI and systemd-boot for this core and db key, built once into `shared` and reused."""
    core = json.loads(read_input(coredir / "core.json", "core metadata"))
    epoch = int(core.get("source_date_epoch", 0))
    folder = shared / f"{core['core_id']}-{keys.owner[:8]}-v{uki.FORMAT}"
    efi = folder / f"oemkit-{core['core_id']}.efi"
    loader = folder / "systemd-bootx64.efi"
    try:  # reused only if whole and signed by this db key (a crash may have left half a file)
        for signed in (efi, loader):
            run_tool(["sbverify", "--cert", str(keys.cert("db")), str(signed)], what=f"sbverify {signed.name}")
    except BuildError:
        efi = uki.build(coredir, folder, keys)
        uki.sign(uki.SYSTEMD_BOOT, loader, keys, epoch)
    return efi, loader, core


FORMATS = ("raw",)


def prepare_shared(coredir: Path, keys: SecureBootKeys, out: Path) -> None:
    """Build (or check) the per-core files every unit of OUT shares, once: a build line calls this before it starts
    its workers, so they never race to write the same shared file."""
    shared_boot_files(coredir, out / ".uki", keys)


def build(
    unit_json: Path, coredir: Path, keys: SecureBootKeys, out: Path, *, force: bool = False, fmt: str = "raw"
) -> dict:
    """OUT/<serial>/appliance.<fmt> and its manifest.json; returns the manifest. An existing image is replaced only
    with `force` (oemkit.outputs' policy), and never through a link."""
    if fmt not in FORMATS:
        raise UnreadableInput(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    config_bytes = read_input(unit_json, "unit config")
    serial, content_id = unit_of(config_bytes, unit_json)
    if not serial or "/" in serial or serial.startswith("."):
        raise UnreadableInput(f"serial {serial!r} cannot name a folder", file=str(unit_json))
    for name in ("appliance.raw", "manifest.json"):
        check_new(out / serial / name, force=force)
    efi, loader, core = shared_boot_files(coredir, out / ".uki", keys)
    cid, epoch = core["core_id"], int(core.get("source_date_epoch", 0))
    unit_dir = out / serial
    unit_dir.mkdir(parents=True, exist_ok=True)
    work = unit_dir / ".work"
    work.mkdir(exist_ok=True)
    try:
        (work / "loader.conf").write_bytes(LOADER_CONF)
        (work / "unit.json").write_bytes(config_bytes)
        esp = disk.fat_image(work / "esp.img", ESP_MIB, "ESP", _volume_id(serial, cid, "esp"), {
            "/EFI/BOOT/BOOTX64.EFI": loader,
            "/loader/loader.conf": work / "loader.conf",
            f"/EFI/Linux/oemkit-{cid}.efi": efi,  # bank A
        }, epoch)  # fmt: skip
        cfg = disk.fat_image(
            work / "config.img", CONFIG_MIB, CONFIG_LABEL, _volume_id(serial, cid, "config"),
            {"/unit.json": work / "unit.json"}, epoch, fat_bits=None,
        )  # fmt: skip
        parts = [
            disk.Partition("ESP", disk.ESP_TYPE, _guid(serial, cid, "esp"), esp, ESP_MIB),
            disk.Partition("oemkit-config", disk.LINUX_DATA_TYPE, _guid(serial, cid, "config"), cfg, CONFIG_MIB),
        ]
        image = disk.gpt_disk(work / "appliance.raw", _guid(serial, cid, "disk"), parts, epoch)
        final = unit_dir / "appliance.raw"
        image.replace(final)
    finally:
        for leftover in work.glob("*"):
            leftover.unlink()
        work.rmdir()
    manifest = {
        "serial": serial,
        "unit_config": {"content_id": content_id, "sha256": hashlib.sha256(config_bytes).hexdigest()},
        "core_id": cid,
        "pcr15_expected": tpm.predicted(config_bytes),  # the init extends PCR 15 with sha256(unit.json), once
        "uki": {"name": efi.name, "sha256": sha256_file(efi)},
        "systemd_boot_sha256": sha256_file(loader),
        "files": {"appliance.raw": {"sha256": sha256_file(final), "bytes": final.stat().st_size}},
    }
    write_atomic(unit_dir / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest
