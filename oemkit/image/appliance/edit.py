"""Changing a built unit's image after the fact — a new core into a bank (upgrade.py), the enrolment token onto
the config partition (enrolment.py) — all or nothing, the same way for both.

The work happens on a copy in a staging folder beside the unit's (so a qcow2's relative backing path still
resolves); a raw image is edited by mtools in place on the copy, a qcow2 unit's guest view is edited the same way
and a new overlay is written with every cluster that now differs from the base (nothing replaced lingers in it).
The copy and its new manifest must verify like any built image; only then are they renamed over the unit's (the
image, then the manifest)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from oemkit.image.appliance import disk, layout, manifest, qcow2, verify
from oemkit.image.tools import BuildError
from oemkit.seal.secureboot import SecureBootKeys

WINDOW = 4 << 20  # the disk is compared in windows of this many bytes (a multiple of every cluster size)


def runs_over_base(guest: Path, base: Path, cluster: int) -> list[qcow2.Run]:
    """Every cluster of the guest view that differs from the base, window by window."""
    runs: list[qcow2.Run] = []
    with guest.open("rb") as new, base.open("rb") as old:
        for at in range(0, layout.DISK_BYTES, WINDOW):
            size = min(WINDOW, layout.DISK_BYTES - at)
            runs += qcow2.changed(os.pread(new.fileno(), size, at), os.pread(old.fileno(), size, at), at, cluster)
    return runs


def rewrite(
    unit_dir: Path,
    m: dict,
    change_disk: Callable[[Path], None],
    new_manifest: Callable[[Path], dict],
    keys: SecureBootKeys | None,
    what: str,
) -> dict:
    """Apply `change_disk` (given the disk as the box sees it, raw) to a staged copy of the unit's image, write the
    manifest `new_manifest` makes for the staged image, verify both, then replace the unit's. Returns the manifest;
    the unit is untouched if anything fails (BuildError names `what`)."""
    out = Path(os.path.abspath(unit_dir)).parent  # the staging folder must sit beside the unit's, whatever its spelling
    name = manifest.image_name(m["format"])
    staging = Path(tempfile.mkdtemp(prefix=f".{what}-{m['serial']}-", dir=out))  # beside the unit: same depth
    try:
        staged = staging / name
        if m["format"] == "raw":
            disk.sparse_copy(unit_dir / name, staged)
            change_disk(staged)
        else:
            guest = qcow2.guest_raw(unit_dir / name, staging / "guest.raw")
            change_disk(guest)
            runs = runs_over_base(guest, unit_dir / m["base"]["path"], m["cluster_size"])
            guest.unlink()
            qcow2.create(staged, m["base"]["path"], layout.DISK_BYTES, m["cluster_size"])
            (staging / "runs").mkdir()
            qcow2.write(staged, runs, staging / "runs")
        new = new_manifest(staged)
        manifest.write(staging, new)
        _, left = verify.verify(staging, keys)
        if left:
            raise BuildError(f"the image after {what} does not verify: " + "; ".join(left))
        os.replace(staged, unit_dir / name)
        os.replace(staging / manifest.NAME, unit_dir / manifest.NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return new
