"""Disk images for workloads: found in the box's content-addressed store or fetched, always checked by SHA-256.

The store is var/lib/oemkit/images/<sha256> under the root (layout.IMAGES); the appliance image ships the images a
unit needs there. An image that is not in the store is fetched from its URL (https://, or file:// for local media)
into the store, and kept only if its SHA-256 is the one the signed unit config names — a wrong image is never used.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from hypervisor_core.layout import Layout

CHUNK = 1 << 20


class ImageError(Exception):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def obtain(layout: Layout, url: str, sha256: str, timeout: float = 60.0) -> Path:
    """The verified local copy of an image: from the store, or fetched into it."""
    store = layout.images
    target = store / sha256
    if target.exists():
        if _sha256(target) == sha256:
            return target
        target.unlink()  # a damaged copy: fetch again
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".{sha256}.part"
    h = hashlib.sha256()
    try:
        source = url if "://" in url else Path(url).as_uri()
        with urllib.request.urlopen(source, timeout=timeout) as response, tmp.open("wb") as out:
            while chunk := response.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise ImageError(f"cannot fetch {url}: {exc}") from None
    if h.hexdigest() != sha256:
        tmp.unlink()
        raise ImageError(f"{url} has SHA-256 {h.hexdigest()[:16]}…, the unit config names {sha256[:16]}…: refused")
    os.replace(tmp, target)
    return target
