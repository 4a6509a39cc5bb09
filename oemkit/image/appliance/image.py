"""`oemkit image build`: one unit's appliance disk — GPT with the ESP (signed systemd-boot, the core's signed UKI in
both banks) and the config partition holding the unit's signed config — as a qcow2 overlay on its core's shared
base disk (default) or as a standalone raw image, with its manifest.json.

Everything per core is built once into the output folder (oemkit/image/appliance/shared.py); per unit only the
config partition and the GPT's GUIDs (derived from the serial and the core id) differ, and only the clusters that
differ from the base are written: into the overlay (qcow2) or over a sparse copy of the base (raw). The same
inputs give the same bytes, in either format, from a cold or a warm shared folder. Safe to run in parallel for
different serials once `prepare_shared` has run (a build line's workers)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypervisor_core import config, tpm
from hypervisor_core.fsutil import WriteRefused, check_target
from oemkit.catalog.store import Catalog
from oemkit.errors import OutputRefused, UnreadableInput
from oemkit.image.appliance import disk, fit, layout, manifest, qcow2, shared
from oemkit.inputs import read_input
from oemkit.outputs import FORCE_HINT, check_new
from oemkit.seal.secureboot import SecureBootKeys

FORMATS = manifest.FORMATS


@dataclass(frozen=True)
class Unit:
    serial: str
    content_id: str
    model: str
    profile: str
    site: str


def unit_of(config_bytes: bytes, path: Path) -> Unit:
    """What the image needs of a sealed unit config (parsed as the agent parses it; its signature is the agent's
    to check, on the box, against the key in the core)."""
    try:
        config.load(config_bytes, None)
        doc = json.loads(config_bytes)
        unit = Unit(*(str(doc[k]) for k in ("serial", "content_id", "model", "profile", "site")))
    except (config.ConfigError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableInput(f"not a sealed unit config: {exc}", file=str(path)) from None
    if not unit.serial or "/" in unit.serial or unit.serial.startswith("."):
        raise UnreadableInput(f"serial {unit.serial!r} cannot name a folder", file=str(path))
    return unit


def prepare_shared(coredir: Path, keys: SecureBootKeys, out: Path) -> None:
    """Build (or check) the per-core files every unit of OUT shares, once: a build line calls this before it starts
    its workers, so they never race to write the same shared file."""
    shared.prepare(coredir, keys, out)


def unit_runs(sh: shared.Shared, serial: str, config_bytes: bytes, work: Path, cluster: int) -> list[qcow2.Run]:
    """The clusters in which this unit's disk differs from the base: its GPT (the base's, with the unit's GUIDs)
    and its config partition."""
    (work / "unit.json").write_bytes(config_bytes)
    cfg = disk.fat_image(
        work / "config.img", layout.CONFIG_MIB, layout.CONFIG_LABEL, layout.volume_id(serial, sh.core_id, "config"),
        {"/unit.json": work / "unit.json"}, sh.epoch, fat_bits=None,
    )  # fmt: skip
    first, body, last = shared.base_regions(sh)
    guids = [p.guid for p in shared.partitions(serial, sh.core_id, None, None)]
    head, tail = disk.regpt(first, last, layout.guid(serial, sh.core_id, "disk"), guids)
    new = (head, cfg.read_bytes().ljust(layout.CONFIG.length, b"\0"), tail)
    runs = []
    for extent, mine, base in zip(layout.UNIT_EXTENTS, new, (first, body, last), strict=True):
        runs += qcow2.changed(mine, base, extent.start, cluster)
    return runs


def _write_image(sh: shared.Shared, fmt: str, dest: Path, runs: list[qcow2.Run], work: Path, cluster: int) -> None:
    if fmt == "qcow2":
        qcow2.create(dest, f"../{shared.BASE_DIR}/{sh.base.name}", layout.DISK_BYTES, cluster)
        qcow2.write(dest, runs, work)
        return
    disk.sparse_copy(sh.base, dest)
    with dest.open("r+b") as fh:
        for run in runs:
            os.pwrite(fh.fileno(), run.data, run.offset)


def build(
    unit_json: Path,
    coredir: Path,
    keys: SecureBootKeys,
    out: Path,
    *,
    force: bool = False,
    fmt: str = "qcow2",
    catalog: Catalog | None = None,
    cluster: int = qcow2.CLUSTER,
) -> dict:
    """OUT/<serial>/appliance.<fmt> and its manifest.json; returns the manifest. An existing image is replaced only
    with `force` (oemkit.outputs' policy), and never through a link; an image that would not fit the unit's model
    is refused (fit.DoesNotFit) before anything is written."""
    if fmt not in FORMATS:
        raise UnreadableInput(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    config_bytes = read_input(unit_json, "unit config")
    unit = unit_of(config_bytes, unit_json)
    fits = fit.check(catalog or fit.catalog(), unit.model, layout.DISK_BYTES, str(unit_json))
    unit_dir = out / unit.serial
    final = unit_dir / manifest.image_name(fmt)
    for name in (final.name, manifest.NAME):
        check_new(unit_dir / name, force=force)
    stale = [unit_dir / manifest.image_name(f) for f in FORMATS if f != fmt]  # the other format's, from before
    for path in stale:
        try:
            check_target(path)
        except WriteRefused as exc:
            raise OutputRefused(exc.strerror or "not a regular file", file=str(path)) from None
        if os.path.lexists(path) and not force:
            raise OutputRefused("exists (this unit's image in the other format)", file=str(path), hint=FORCE_HINT)
    sh = shared.prepare(coredir, keys, out)
    unit_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".work-", dir=unit_dir) as tmp:
        work = Path(tmp)
        runs = unit_runs(sh, unit.serial, config_bytes, work, cluster)
        # beside the final name (a qcow2's backing path is relative to its folder), made by the tool that writes it
        # (so its mode is the user's umask's, as for any file the user creates)
        staged = unit_dir / f".{final.name}.{secrets.token_hex(4)}.tmp"
        try:
            _write_image(sh, fmt, staged, runs, work, cluster)
            record = manifest.file_entry(staged)
            staged.replace(final)
        finally:
            staged.unlink(missing_ok=True)
    names, config_sha = layout.bank_names(), hashlib.sha256(config_bytes).hexdigest()
    doc: dict = {
        "serial": unit.serial,
        "format": fmt,
        "profile": unit.profile,
        "site": unit.site,
        "model": unit.model,
        "unit_config": {"content_id": unit.content_id, "sha256": config_sha},
        "core_id": sh.core_id,
        "pcr15_expected": tpm.predicted(config_bytes),  # the init extends PCR 15 with sha256(unit.json), once
        "banks": {b: manifest.bank_entry(names[b], sh.core_id, sh.uki_sha256) for b in ("a", "b")},
        "uki": {"name": names["a"], "sha256": sh.uki_sha256},  # bank A's, for readers from before the banks
        "systemd_boot_sha256": sh.esp["/EFI/BOOT/BOOTX64.EFI"]["sha256"],
        "contents": {
            layout.ESP_NAME: sh.esp,
            layout.CONFIG_NAME: {"/unit.json": {"sha256": config_sha, "bytes": len(config_bytes)}},
        },
        "state": {"sha256": sh.state_sha256, "bytes": layout.STATE.length},  # empty ext4, grown on the box
        "disk_bytes": layout.DISK_BYTES,
        "fit": fits,
    }
    if fmt == "qcow2":
        base = {"path": f"../{shared.BASE_DIR}/{sh.base.name}", "sha256": sh.base_sha256, "bytes": layout.DISK_BYTES}
        doc.update(base=base, cluster_size=cluster)
    doc["bytes_beyond_core"] = record["bytes"]  # qcow2: the overlay; raw shares nothing, all of it is the unit's
    doc["files"] = {final.name: record}
    doc["tools"] = manifest.tool_versions()
    manifest.write(unit_dir, doc)
    for path in stale:  # with --force the unit is now the other format: its old image would contradict the manifest
        path.unlink(missing_ok=True)
    return doc
