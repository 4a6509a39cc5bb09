"""Does the image fit the box? Its full size against the smallest embedded boot device the unit's catalog model
can have — checked before any byte is written, so an order for a box whose 2 GB SD card cannot hold the image is
refused at the factory, not discovered on site.

Capacities are the vendors' marketed sizes (decimal GB, however the catalog field is named): the check reads each
as 10^9 bytes, the smaller reading, so an image that passes fits whichever the vendor meant. Devices the catalog
gives no capacity (internal USB ports, bare SD slots: the vendors publish none for them) cannot be the smallest
and are left out; a model with no capacity at all is recorded as unchecked (docs/appliance.md)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from oemkit.catalog import default_catalog_dir
from oemkit.catalog.schema import BootDevice
from oemkit.catalog.store import Catalog, load_catalog
from oemkit.errors import OemkitError

GB = 10**9
FIXED = ("boss", "m2", "nvme")  # SSDs behind a controller: the core's state may live on the boot device
FLASH = ("idsdm", "sd", "microsd", "usb")  # SD cards and USB keys wear out: state must go to a local fixed disk
_lock = threading.Lock()
_catalogs: dict[Path, tuple[tuple, Catalog]] = {}


class DoesNotFit(OemkitError):
    """The image is larger than the model's smallest boot device, or the model is not in the catalog: the input
    was read and is wrong for this box (exit 1)."""


def _signature(root: Path) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.glob("*/*.yaml")))


def catalog(root: Path | None = None) -> Catalog:
    """The validated catalog, loaded once per process while none of its files changes (a build line builds
    thousands of units against it)."""
    root = root or default_catalog_dir()
    with _lock:
        sig = _signature(root) if root.is_dir() else ()
        cached = _catalogs.get(root)
        if cached is None or cached[0] != sig:
            cached = _catalogs[root] = (sig, load_catalog(root))
        return cached[1]


def smallest(cat: Catalog, model_id: str, where: str) -> dict[str, Any] | None:
    """The model's smallest boot device with a known capacity: {kind, name, capacity_gb}; None if it has none."""
    model = cat.get(model_id)
    if model is None:
        raise DoesNotFit(f"model {model_id!r} of the unit config is not in the catalog ({cat.root})", file=where)
    sized = [(min(d.capacities_gib), d) for d in model.boot_devices if d.capacities_gib]
    if not sized:
        return None
    capacity, device = min(sized, key=lambda s: s[0])
    return {"kind": device.kind, "name": device.name, "capacity_gb": capacity}


def check(cat: Catalog, model_id: str, image_bytes: int, where: str) -> dict[str, Any]:
    """The fit record for the manifest; DoesNotFit when the image is larger than the smallest device."""
    device = smallest(cat, model_id, where)
    if device is None:
        return {"checked": False, "model": model_id, "image_bytes": image_bytes,
                "reason": "the catalog gives none of its boot devices a capacity"}  # fmt: skip
    if image_bytes > device["capacity_gb"] * GB:
        raise DoesNotFit(
            f"the image ({image_bytes:,} bytes) does not fit {model_id}'s smallest boot device, {device['name']} "
            f"({device['capacity_gb']} GB)",
            file=where,
            hint=f"the catalog's boot_devices of {model_id}: {cat.file_of(model_id)}",
        )
    return {"checked": True, "model": model_id, "image_bytes": image_bytes, "smallest_device": device}


def state_may_live_on(d: BootDevice) -> bool:
    """A fixed disk the core sees as one device: a BOSS, an M.2 or NVMe kit behind a controller. Not flash that
    wears (SD, IDSDM, USB), not a mirror of the host's software RAID (its halves look like two disks to the core)."""
    return d.kind in FIXED and not d.host_raid


def _device(d: BootDevice) -> str:
    caps = sorted(set(d.capacities_gib))
    size = "no capacity" if not caps else f"{caps[0]} GB" if len(caps) == 1 else f"{caps[0]}–{caps[-1]} GB"
    raid = ", RAID 1 by the host's software RAID" if d.host_raid else ", RAID 1" if d.raid1 else ""
    return f"{d.name} ({size}{raid})"


def boot_device_table(cat: Catalog) -> str:
    """docs/appliance.md's table: each model's embedded boot devices, fixed disks apart from flash that wears,
    and the device the fit check uses (Markdown, one row per model)."""
    rows = ["| model | fixed disk: state may live on the boot device | not for state (flash that wears, or a mirror "
            "only the host's software RAID assembles) | smallest with a capacity |", "|---|---|---|---|"]  # fmt: skip
    for model in cat:
        fixed = [_device(d) for d in model.boot_devices if state_may_live_on(d)]
        flash = [_device(d) for d in model.boot_devices if not state_may_live_on(d)]
        small = smallest(cat, model.id, "(catalog)")
        least = f"{small['name']}, {small['capacity_gb']} GB" if small else "none: not checked"
        rows.append(f"| {model.id} | {'; '.join(fixed) or '—'} | {'; '.join(flash) or '—'} | {least} |")
    return "\n".join(rows) + "\n"
