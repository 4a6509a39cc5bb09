"""The identity index of a validated catalog, cached by content: `identify` without pydantic or YAML.

The cache key is a hash of every model file's path and bytes (and our version: a new oemkit may read files
differently), so any edit makes a new key and the next call validates the catalog again; a stale answer is
impossible. A missing, corrupt or unwritable cache only costs the slow path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from hypervisor_core.fsutil import read_regular, write_atomic
from oemkit import __version__
from oemkit.catalog.index import INDEX_FORMAT, IdentityIndex
from oemkit.inputs import LIMITS
from oemkit.paths import cache_dir

MAX_MODEL_BYTES = LIMITS["profile"]  # the YAML reader's bound: a file it would refuse is not hashed either


def fingerprint(root: Path) -> str | None:
    """The catalog's content hash, or None when a model file cannot be read (a FIFO, a device, too large): then
    the validating path runs and reports it, located."""
    h = hashlib.sha256(f"{__version__}/{INDEX_FORMAT}\0".encode())
    for f in sorted(root.glob("*/*.yaml")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        try:
            h.update(read_regular(f, MAX_MODEL_BYTES) + b"\0")
        except OSError:
            return None
    return h.hexdigest()


def load_index(root: Path) -> IdentityIndex:
    """The cached index for the catalog at `root`, validating the catalog (ProblemsError) when the cache misses."""
    key = fingerprint(root)
    cache = cache_dir(f"identity-{key[:32]}.json") if key else None
    try:
        if cache is not None:
            return IdentityIndex.from_json(json.loads(read_regular(cache, MAX_MODEL_BYTES)))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # a damaged cache is only a miss
        pass
    from oemkit.catalog.store import load_catalog  # the slow, validating path: pydantic and YAML only on a miss

    index = load_catalog(root).identity_index
    if cache is not None:
        with contextlib.suppress(OSError):  # a read-only home just means no cache: never fail the answer for it
            write_atomic(cache, json.dumps(index.to_json()), mkdir=True)
    return index
