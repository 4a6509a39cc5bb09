"""Profile schemas by apiVersion. A layer of an older version (profile, site or unit overlay) is translated up to the
current one, one version at a time (Ignition's chain), then validated by the current schema, so lint and sealing
only ever see the current version. The translation works on the layer's annotated tree (profile/layers.py): a value
a translation moves keeps the file and line that set it, so the author is pointed into the old file. Today there is
one version, oemkit/v1 (schema/v1.py, frozen once released); tests/data/profiles/v1/ keeps proving v1 documents
load. A v2 adds a module, its name at the end of VERSIONS and the v1 → v2 step in UPGRADES.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from oemkit.profile.schema.rules import NAME_PATTERN, SERIAL_PATTERN, hostname_problem, serial_problem
from oemkit.profile.schema.v1 import (
    API_VERSION,
    ApplianceProfile,
    DiskRule,
    Host,
    PortRule,
    SiteOverlay,
    StaticAddress,
    UnitOverlay,
)

if TYPE_CHECKING:
    from oemkit.profile.layers import Traced

VERSIONS: tuple[str, ...] = (API_VERSION,)  # every apiVersion this oemkit reads, oldest first; the last is current
CURRENT = VERSIONS[-1]
# apiVersion → the translation of a document's tree of that version (any kind) into the next version's
UPGRADES: dict[str, Callable[[Traced], Traced]] = {}


def upgrade(tree: Traced, api_version: str, steps: Mapping[str, Callable[[Traced], Traced]] = UPGRADES) -> Traced:
    """A document of `api_version` (a known one) as a document of the current version."""
    for version in VERSIONS[VERSIONS.index(api_version) : -1]:
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
    "StaticAddress",
    "UnitOverlay",
    "hostname_problem",
    "serial_problem",
    "upgrade",
]
