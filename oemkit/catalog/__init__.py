"""The hardware catalog: real vendor server models (schema, loader, identity index)."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_CATALOG = Path(__file__).resolve().parents[2] / "hardware_catalog"
_PACKAGED_CATALOG = Path(__file__).resolve().parents[1] / "_catalog"  # where a wheel puts it


def default_catalog_dir() -> Path:
    """$OEMKIT_CATALOG, else the catalog shipped in the wheel, else the one in the source checkout."""
    env = os.environ.get("OEMKIT_CATALOG")
    if env:
        return Path(env)
    return _PACKAGED_CATALOG if _PACKAGED_CATALOG.is_dir() else _REPO_CATALOG
