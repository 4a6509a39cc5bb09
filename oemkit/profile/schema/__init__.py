"""Profile schemas by apiVersion: each released version is a frozen module; a document is read by its own version
and translated up to the current one, one version at a time (Ignition's chain), so lint and sealing only ever
see the current version. Today there is one, oemkit/v1 (schema/v1.py); tests/data/profiles/v1/ keeps proving that
v1 documents load. A v2 adds a module, an entry in VERSIONS and v1 → v2 in UPGRADES.

The translation works on a layer's annotated tree (profile/layers.py), so a value a translation moves keeps
pointing at the line that set it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from oemkit.profile.schema import v1
from oemkit.profile.schema.v1 import (
    API_VERSION,
    NAME_PATTERN,
    SERIAL_PATTERN,
    ApplianceProfile,
    DiskRule,
    Host,
    PortRule,
    SiteOverlay,
    UnitOverlay,
    hostname_problem,
    serial_problem,
)

if TYPE_CHECKING:
    from oemkit.profile.layers import Traced

VERSIONS: dict[str, ModuleType] = {v1.API_VERSION: v1}  # oldest first; the last is current
CURRENT = API_VERSION
# apiVersion → the translation of a layer's tree of that version into the next version's
UPGRADES: dict[str, Callable[[Traced], Traced]] = {}


def upgrade(tree: Traced, api_version: str, steps: Mapping[str, Callable[[Traced], Traced]] = UPGRADES) -> Traced:
    """A layer of `api_version` (a known one) as a layer of the current version."""
    order = list(VERSIONS)
    for version in order[order.index(api_version) : -1]:
        tree = steps[version](tree)
    return tree


__all__ = [
    "API_VERSION",
    "CURRENT",
    "NAME_PATTERN",
    "SERIAL_PATTERN",
    "UPGRADES",
    "VERSIONS",
    "ApplianceProfile",
    "DiskRule",
    "Host",
    "PortRule",
    "SiteOverlay",
    "UnitOverlay",
    "hostname_problem",
    "serial_problem",
    "upgrade",
]
