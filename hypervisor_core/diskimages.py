"""Workloads' disk images (qcow2 or raw files): found in the box's content-addressed store or fetched, always
checked by SHA-256.

The store is var/lib/oemkit/images/<sha256> under the root (layout.DISK_IMAGES); the appliance's boot media may ship
the images a unit needs there. An image that is not in the store is fetched from its URL (https://, or file:// for
local media) into the store, and kept only if its SHA-256 is the one the signed unit config names — a wrong image
is never used, nor a download cut short.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

from hypervisor_core.fsutil import atomic_file
from hypervisor_core.layout import Layout

CHUNK = 1 << 20


class DiskImageError(Exception):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def obtain(layout: Layout, url: str, sha256: str, timeout: float = 60.0) -> Path:
    """The verified local copy of an image: from the store, or fetched into it."""
    target = layout.disk_images / sha256
    if target.is_symlink() or (target.exists() and not target.is_file()):
        target.unlink()  # not a file of ours (a link, a FIFO): never hashed or followed, fetched again
    elif target.exists():
        if _sha256(target) == sha256:
            return target
        target.unlink()  # a damaged copy: fetch again
    source = url if "://" in url else Path(url).as_uri()
    try:
        with (
            urllib.request.urlopen(source, timeout=timeout) as response,
            atomic_file(target, 0o644, mkdir=True) as out,  # kept only if the block ends: the hash below
        ):
            h = hashlib.sha256()
            while chunk := response.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            if h.hexdigest() != sha256:
                got = h.hexdigest()[:16]
                raise DiskImageError(f"{url} has SHA-256 {got}…, the unit config names {sha256[:16]}…: refused")
    except (OSError, ValueError) as exc:
        raise DiskImageError(f"cannot fetch {url}: {exc}") from None
    return target
