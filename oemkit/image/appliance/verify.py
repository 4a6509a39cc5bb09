"""`oemkit image verify OUT/<serial>`: the built image is still what its manifest says — the image's bytes, the GPT
the builder wrote, the UKI and systemd-boot on the ESP, the unit config on the config partition — and, given the
factory's keys, both boot files are signed by its db key. Read-only; each finding is one line."""

from __future__ import annotations

import json
import struct
import subprocess
import tempfile
from pathlib import Path

from hypervisor_core.fsutil import sha256_file
from oemkit.errors import UnreadableInput
from oemkit.image.appliance import disk
from oemkit.image.tools import PATH
from oemkit.inputs import read_input
from oemkit.seal.secureboot import SecureBootKeys

GPT_SIGNATURE = b"EFI PART"


def partitions(image: Path) -> dict[str, tuple[int, int]]:
    """GPT partition name -> (first byte, size in bytes), read from the primary header and its entries."""
    with image.open("rb") as fh:
        fh.seek(disk.SECTOR)
        header = fh.read(92)
        if header[:8] != GPT_SIGNATURE:
            raise UnreadableInput("no GPT (not an appliance image)", file=str(image))
        entries_lba, count, size = struct.unpack_from("<QII", header, 72)
        if not (0 < count <= 128 and 128 <= size <= 512):
            raise UnreadableInput("a GPT header with an implausible partition table", file=str(image))
        fh.seek(entries_lba * disk.SECTOR)
        table = fh.read(count * size)
    out = {}
    for i in range(count):
        entry = table[i * size : (i + 1) * size]
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le").rstrip("\0")
        out[name] = (first * disk.SECTOR, (last - first + 1) * disk.SECTOR)
    return out


def _fat_file(image: Path, offset: int, name: str, dest: Path) -> bool:
    """Copy `name` out of the FAT filesystem at `offset` in `image` (mtools' image@@offset); False if absent."""
    done = subprocess.run(
        ["mcopy", "-n", "-i", f"{image}@@{offset}", f"::{name}", str(dest)],
        capture_output=True, env={"PATH": PATH, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}, check=False,
    )  # fmt: skip
    return done.returncode == 0 and dest.is_file()


def verify(unit_dir: Path, keys: SecureBootKeys | None = None) -> tuple[dict, list[str]]:
    """The manifest and the list of what does not match it (empty: verified)."""
    try:
        manifest = json.loads(read_input(unit_dir / "manifest.json", "image manifest"))
        image = unit_dir / "appliance.raw"
        recorded = manifest["files"]["appliance.raw"]
        cid, uki_name, uki_sha = manifest["core_id"], manifest["uki"]["name"], manifest["uki"]["sha256"]
        config_sha, loader_sha = manifest["unit_config"]["sha256"], manifest["systemd_boot_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableInput(f"not an image manifest: {exc}", file=str(unit_dir / "manifest.json")) from None
    if not image.is_file() or image.is_symlink():
        raise UnreadableInput("no appliance.raw (a regular file) beside the manifest", file=str(unit_dir))
    problems = []
    if image.stat().st_size != recorded["bytes"] or sha256_file(image) != recorded["sha256"]:
        problems.append("appliance.raw: its bytes are not the ones the manifest records")
    parts = partitions(image)
    if set(parts) != {"ESP", "oemkit-config"}:
        problems.append(f"the GPT holds {sorted(parts)}, not the ESP and oemkit-config")
        return manifest, problems
    with tempfile.TemporaryDirectory(prefix="oemkit-verify-") as tmp:
        checks = [
            ("ESP", f"/EFI/Linux/{uki_name}", uki_sha, f"bank A's UKI {uki_name}"),
            ("ESP", "/EFI/BOOT/BOOTX64.EFI", loader_sha, "systemd-boot (BOOTX64.EFI)"),
            ("oemkit-config", "/unit.json", config_sha, "the unit config"),
        ]
        for part, name, digest, what in checks:
            dest = Path(tmp) / Path(name).name
            if not _fat_file(image, parts[part][0], name, dest):
                problems.append(f"{what}: missing from the {part} partition")
            elif sha256_file(dest) != digest:
                problems.append(f"{what}: not the bytes the manifest records")
            elif keys is not None and name.endswith((".efi", ".EFI")):
                signed = subprocess.run(
                    ["sbverify", "--cert", str(keys.cert("db")), str(dest)], capture_output=True, check=False,
                    env={"PATH": PATH},
                )  # fmt: skip
                if signed.returncode != 0:
                    problems.append(f"{what}: not signed by this factory's db key")
    if not uki_name.startswith(f"oemkit-{cid}"):
        problems.append(f"the UKI {uki_name} is not the core {cid}'s")
    return manifest, problems
