"""SMBIOS identity: what a box reports, and the one rule that decides whether it is a given model.

This module is shared by both sides on purpose: the factory's `catalog identify` and first boot's model check
call the same `IdentitySpec.match`, so a box the factory calls an R650 is an R650 to the agent too.
Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Strings firmware writes when a field was never filled in; they identify nothing.
_PLACEHOLDERS = {
    "",
    "--",
    "none",
    "(none)",
    "n/a",
    "na",
    "not specified",
    "not provided",
    "notprovided",
    "not applicable",
    "to be filled by o.e.m.",
    "default string",
    "system product name",
    "system manufacturer",
    "0123456789",
    "<out of spec>",
    "unknown",
    "invalid",
    "none provided",
}
# Lenovo/IBM append the machine type and model: "ThinkSystem SR650 -[7X06CTO1WW]-", "System x3650 M5: -[8871AC1]-".
_MT_SUFFIX = re.compile(r"-\[\s*([0-9A-Z]{4})[0-9A-Z]*\s*\]-", re.I)
# A bare Lenovo/IBM MTM such as "7X06CTO1WW", "7Z73CTO1WW", "8871AC1" (product name or SKU).
_BARE_MTM = re.compile(r"^([0-9][0-9A-Z]{3})(?:[0-9A-Z]{3}|[0-9A-Z]{6})$", re.I)
_DELL_SKU_MODEL = re.compile(r"ModelName=([^;]+)", re.I)


def clean(value: str | None) -> str | None:
    """Trim a raw SMBIOS string; placeholders become None."""
    if value is None:
        return None
    value = " ".join(value.split())
    return None if value.lower() in _PLACEHOLDERS else value


def fold(value: str | None) -> str:
    """Comparison key: case and runs of white space do not distinguish two SMBIOS strings."""
    return " ".join((value or "").split()).casefold()


@dataclass(frozen=True)
class SmbiosIdentity:
    """The strings a box reports about itself (names as in /sys/class/dmi/id)."""

    sys_vendor: str | None = None
    product_name: str | None = None
    product_version: str | None = None
    product_sku: str | None = None
    product_family: str | None = None
    product_serial: str | None = None
    product_uuid: str | None = None
    board_vendor: str | None = None
    board_name: str | None = None
    chassis_type: str | None = None
    bios_vendor: str | None = None
    bios_version: str | None = None

    @property
    def machine_type(self) -> str | None:
        """The 4-character Lenovo/IBM machine type, from the name's -[MTM]- suffix, a bare MTM name, or the SKU."""
        name = self.product_name or ""
        m = _MT_SUFFIX.search(name)
        if m:
            return m.group(1).upper()
        for candidate in (name, self.product_sku or ""):
            m = _BARE_MTM.match(candidate.strip())
            if m:
                return m.group(1).upper()
        return None

    @property
    def model_name(self) -> str | None:
        """The product name with what is not the model stripped: the MTM suffix, a trailing colon, the vendor's
        own name repeated in front ("IBM System x3550 M4 Server"), a generic " Server" tail.
        None when the name is only an MTM (then the machine type has to speak)."""
        name = self.product_name
        if not name and self.product_sku:
            m = _DELL_SKU_MODEL.search(self.product_sku)  # Dell: "SKU=0912;ModelName=PowerEdge R650"
            name = m.group(1) if m else None
        if not name:
            return None
        name = _MT_SUFFIX.sub("", name).strip().rstrip(":").strip()
        if _BARE_MTM.match(name):
            return None
        vendor = (self.sys_vendor or "").split()[0] if self.sys_vendor else ""
        if vendor and fold(name).startswith(fold(vendor) + " "):
            name = name[len(vendor) + 1 :]
        if fold(name).endswith(" server"):
            name = name[: -len(" server")]
        return " ".join(name.split()) or None


# The /sys/class/dmi/id files, in the order above: SmbiosIdentity's fields are named after them.
DMI_FIELDS = tuple(SmbiosIdentity.__dataclass_fields__)


@dataclass(frozen=True)
class IdentitySpec:
    """How one hardware model identifies itself: manufacturer spellings, model names, machine types."""

    manufacturers: tuple[str, ...]
    product_names: tuple[str, ...]
    machine_types: tuple[str, ...] = ()

    def mismatch(self, box: SmbiosIdentity) -> str | None:
        """None when `box` is this model; otherwise why not, in words fit for a console."""
        if fold(box.sys_vendor) not in {fold(m) for m in self.manufacturers}:
            return f"manufacturer is {box.sys_vendor!r}, expected one of {list(self.manufacturers)}"
        name = box.model_name
        sku_model = _DELL_SKU_MODEL.search(box.product_sku or "")
        if sku_model and name and fold(sku_model.group(1)) != fold(name):
            return f"product {name!r} and SKU model {sku_model.group(1)!r} disagree"
        mt = box.machine_type
        known_mts = {m.upper() for m in self.machine_types}
        if name is not None:
            if fold(name) not in {fold(n) for n in self.product_names}:
                return f"product is {box.product_name!r}, expected one of {list(self.product_names)}"
            # A name and a machine type that disagree is a box we cannot vouch for: never guess.
            if mt and known_mts and mt not in known_mts:
                return f"machine type {mt} does not belong to {self.product_names[0]} ({sorted(known_mts)})"
            return None
        if mt and mt in known_mts:
            return None
        if mt:
            return f"machine type {mt} is not one of {sorted(known_mts) or 'this model'}"
        return "the box reports no product name or machine type"
