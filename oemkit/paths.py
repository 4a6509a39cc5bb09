"""Where oemkit keeps what it can rebuild: one cache folder, ${XDG_CACHE_HOME:-~/.cache}/oemkit."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a path in it); nothing is created here: callers create what they write."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "oemkit", *parts)
