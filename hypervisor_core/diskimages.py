"""Workloads' disk images (qcow2 or raw files): found in the box's content-addressed store or fetched, always
checked by SHA-256.

The store is var/lib/oemkit/images/<sha256> under the root (layout.DISK_IMAGES); the appliance's boot media may ship
the images a unit needs there. An image that is not in the store is fetched from its URL (https://, or file:// for
local media) into the store, and kept only if its SHA-256 is the one the signed unit config names — a wrong image
is never used, nor a download cut short.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from hypervisor_core.fsutil import atomic_file, kind_of, sha256_file
from hypervisor_core.layout import Layout

CHUNK = 1 << 20


class DiskImageError(Exception):
    pass


def obtain(layout: Layout, url: str, sha256: str, timeout: float = 60.0, max_bytes: int | None = None) -> Path:
    """The verified local copy of an image: from the store, or fetched into it. A local source must be a regular
    file (a FIFO would block the fetch for good, /dev/zero fill the state disk); at most `max_bytes` are copied
    (the volume's size: an image larger than its disk is refused, not streamed until the disk is full)."""
    target = layout.disk_images / sha256
    if target.is_symlink() or (target.exists() and not target.is_file()):
        if target.is_dir() and not target.is_symlink():
            raise DiskImageError(f"{target} is a folder where an image belongs: refused")
        target.unlink()  # not a file of ours (a link, a FIFO): never hashed or followed, fetched again
    elif target.exists():
        if sha256_file(target) == sha256:
            return target
        target.unlink()  # a damaged copy: fetch again
    import urllib.parse
    import urllib.request  # here, not at the top: http.client, email and ssl cost every first boot 0.15 s under TCG

    source = url if "://" in url else Path(url).as_uri()
    if source.startswith("file:"):
        local = Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
        try:
            mode = os.stat(local).st_mode  # stat, never open: opening a FIFO waits, a device may act
        except OSError as exc:
            raise DiskImageError(f"cannot fetch {url}: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise DiskImageError(f"cannot fetch {url}: {kind_of(mode)}, not a regular file")
    try:
        with (
            urllib.request.urlopen(source, timeout=timeout) as response,
            atomic_file(target, 0o644, mkdir=True) as out,  # kept only if the block ends: the hash below
        ):
            h, copied = hashlib.sha256(), 0
            while chunk := response.read(CHUNK):
                copied += len(chunk)
                if max_bytes is not None and copied > max_bytes:
                    raise DiskImageError(f"{url} is larger than its volume ({max_bytes >> 30} GiB): refused")
                h.update(chunk)
                out.write(chunk)
            if h.hexdigest() != sha256:
                got = h.hexdigest()[:16]
                raise DiskImageError(f"{url} has SHA-256 {got}…, the unit config names {sha256[:16]}…: refused")
    except (OSError, ValueError) as exc:
        raise DiskImageError(f"cannot fetch {url}: {exc}") from None
    return target
