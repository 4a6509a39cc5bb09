"""`oemkit image verify OUT/<serial>`: the built image is still what its manifest says — the image file's bytes;
for a qcow2 unit its header, its backing file (the manifest's relative path, the manifest's sha256) and that the
overlay holds clusters only where a unit may differ from its base; then, in the guest's view of the disk, the GPT
the builder wrote and every file on the ESP (systemd-boot, both banks' UKIs, loader.conf) and the config
partition, nothing missing and nothing added — and, given the factory's keys, every EFI file signed by its db key.
Read-only; each finding is one line."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import tempfile
from pathlib import Path

from hypervisor_core.fsutil import sha256_file
from oemkit.errors import UnreadableInput
from oemkit.image.appliance import disk, layout, manifest, qcow2
from oemkit.image.tools import PATH, BuildError
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


def outside(ranges: list[tuple[int, int]], allowed: list[layout.Extent]) -> list[tuple[int, int]]:
    """The parts of (start, length) `ranges` that no `allowed` extent covers, as (start, end). Pure."""
    left = []
    for start, length in ranges:
        pieces = [(start, start + length)]
        for ext in allowed:
            pieces = [p for s, e in pieces for p in ((s, min(e, ext.start)), (max(s, ext.end), e)) if p[0] < p[1]]
        left += pieces
    return left


def _upgraded(m: dict) -> bool:
    """An upgrade has written a bank: the ESP then differs from the base, and the overlay may hold it."""
    return {b: e["name"] for b, e in m["banks"].items()} != layout.bank_names()


def _overlay(unit_dir: Path, image: Path, m: dict) -> tuple[list[str], bool]:
    """The qcow2 overlay's header, its backing file and where it holds clusters; and whether its guest view can be
    read (the header is sound and the backing file is the recorded base)."""
    try:
        head = qcow2.info(image)
    except BuildError as exc:
        return [f"{image.name}: not a readable qcow2 image ({exc.message})"], False
    base = m["base"]
    problems = []
    if head.get("format") != "qcow2":
        problems.append(f"{image.name}: a {head.get('format')} image, not qcow2")
    if (head.get("backing-filename"), head.get("backing-filename-format")) != (base["path"], "raw"):
        problems.append(f"{image.name}: backs onto {head.get('backing-filename')!r} "
                        f"({head.get('backing-filename-format')}), not the base {base['path']!r} (raw)")  # fmt: skip
    if (head.get("virtual-size"), head.get("cluster-size")) != (m["disk_bytes"], m["cluster_size"]):
        problems.append(f"{image.name}: a {head.get('virtual-size')}-byte disk in {head.get('cluster-size')}-byte "
                        f"clusters, not the manifest's {m['disk_bytes']} in {m['cluster_size']}")  # fmt: skip
    backing = unit_dir / base["path"]
    if not backing.is_file() or backing.is_symlink():
        return [*problems, f"the base {base['path']}: missing (a regular file is what the manifest records)"], False
    if backing.stat().st_size != base["bytes"] or sha256_file(backing) != base["sha256"]:
        return [
            *problems,
            f"the base {base['path']}: not the bytes the manifest records (a swapped backing file)",
        ], False
    if problems:
        return problems, False
    allowed = layout.allowed_overlay(m["cluster_size"], esp_too=_upgraded(m))
    for start, end in outside(qcow2.allocated(image), allowed):
        problems.append(f"{image.name}: holds bytes {start}..{end} of the disk, outside the GPT and the config "
                        "partition (a unit's overlay holds nothing else)")  # fmt: skip
    return problems, True


def _what(part: str, path: str, m: dict) -> str:
    for b, e in m["banks"].items():
        if path == layout.uki_path(e["name"]):
            return f"bank {b.upper()}'s UKI {e['name']}"
    if path == "/EFI/BOOT/BOOTX64.EFI":
        return "systemd-boot (BOOTX64.EFI)"
    if path == "/enrol.token":
        return "the enrolment token (oemkit register)"
    return "the unit config" if path == "/unit.json" else f"{path} on the {part} partition"


def _consistent(m: dict) -> list[str]:
    """The manifest's summary fields say what its contents say (a hand-edited manifest is caught here)."""
    esp, cfg = m["contents"][layout.ESP_NAME], m["contents"][layout.CONFIG_NAME]
    out = []
    for b, e in m["banks"].items():
        if esp.get(layout.uki_path(e["name"]), {}).get("sha256") != e["uki_sha256"]:
            out.append(f"manifest: bank {b.upper()} ({e['name']}) is not among the ESP's files it lists")
    if esp.get("/EFI/BOOT/BOOTX64.EFI", {}).get("sha256") != m["systemd_boot_sha256"]:
        out.append("manifest: systemd-boot's sha256 is not the ESP's BOOTX64.EFI it lists")
    if cfg.get("/unit.json", {}).get("sha256") != m["unit_config"]["sha256"]:
        out.append("manifest: the unit config's sha256 is not the config partition's unit.json it lists")
    token = m.get("enrolment", {}).get("token_file_sha256")
    if token is not None and cfg.get("/enrol.token", {}).get("sha256") != token:
        out.append("manifest: the enrolment token's sha256 is not the config partition's enrol.token it lists")
    return out


def _guest(disk_image: Path, m: dict, keys: SecureBootKeys | None, tmp: Path) -> list[str]:
    """The disk as the box sees it: GPT, then every file of both partitions against the manifest."""
    try:
        parts = partitions(disk_image)
    except UnreadableInput as exc:
        return [f"the disk: {exc.message}"]
    expected = {name: (ext.start, ext.length) for name, ext in layout.GPT_PARTITIONS.items()}
    if parts != expected:
        return [f"the GPT holds {sorted(parts)} at {sorted(parts.values())}, not the ESP, oemkit-config and "
                "oemkit-state where the builder puts them"]  # fmt: skip
    problems = []
    with disk_image.open("rb") as fh:
        state = os.pread(fh.fileno(), layout.STATE.length, layout.STATE.start)
    if hashlib.sha256(state).hexdigest() != m["state"]["sha256"]:
        problems.append("the oemkit-state partition: not the empty filesystem the builder wrote")
    for part in layout.PARTITIONS:
        offset = layout.PARTITIONS[part].start
        listed = m["contents"][part]
        try:
            found = set(disk.fat_files(disk_image, offset))
        except BuildError as exc:
            problems.append(f"the {part} partition: not a readable FAT filesystem ({exc.message})")
            continue
        for extra in sorted(found - set(listed)):
            problems.append(f"{extra}: on the {part} partition but not in the manifest")
        for path, entry in sorted(listed.items()):
            what, dest = _what(part, path, m), tmp / "file"
            dest.unlink(missing_ok=True)
            if path not in found or not disk.fat_read(disk_image, offset, path, dest):
                problems.append(f"{what}: missing from the {part} partition")
            elif dest.stat().st_size != entry["bytes"] or sha256_file(dest) != entry["sha256"]:
                problems.append(f"{what}: not the bytes the manifest records")
            elif keys is not None and path.lower().endswith(".efi") and not _signed(dest, keys):
                problems.append(f"{what}: not signed by this factory's db key")
    return problems


def _signed(efi: Path, keys: SecureBootKeys) -> bool:
    done = subprocess.run(["sbverify", "--cert", str(keys.cert("db")), str(efi)], capture_output=True, check=False,
                          env={"PATH": PATH})  # fmt: skip
    return done.returncode == 0


def verify(unit_dir: Path, keys: SecureBootKeys | None = None) -> tuple[dict, list[str]]:
    """The manifest and the list of what does not match it (empty: verified)."""
    m = manifest.load(unit_dir)
    name = manifest.image_name(m["format"])
    image = unit_dir / name
    if not image.is_file() or image.is_symlink():
        raise UnreadableInput(f"no {name} (a regular file) beside the manifest", file=str(unit_dir))
    problems = _consistent(m)
    recorded = m["files"][name]
    if image.stat().st_size != recorded["bytes"] or sha256_file(image) != recorded["sha256"]:
        problems.append(f"{name}: its bytes are not the ones the manifest records")
    with tempfile.TemporaryDirectory(prefix="oemkit-verify-") as folder:
        tmp = Path(folder)
        if m["format"] == "qcow2":
            found, readable = _overlay(unit_dir, image, m)
            problems += found
            if not readable:  # without the right base there is no guest view worth reading
                return m, problems
            guest = qcow2.guest_raw(image, tmp / "guest.raw")
        else:
            guest = image
        problems += _guest(guest, m, keys, tmp)
    return m, problems
