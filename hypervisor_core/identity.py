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
# Vendors append a variant to the SKU's model name after a comma ("ModelName=PowerEdge R640,XL"): letters only. The
# model is what precedes the comma, compared whole, so "PowerEdge R6405,XL" is never an R640 nor an R640 an R6405.
_SKU_VARIANT = re.compile(r"^(?P<model>[^,]*[^,\s])\s*,\s*[A-Za-z]+$")


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
    def sku_model(self) -> str | None:
        """The model the SKU names (Dell: "SKU=0912;ModelName=PowerEdge R650"), as written, or None. A variant
        suffix ("PowerEdge R640,XL") is dropped; anything else after a comma is kept, so it cannot agree."""
        m = _DELL_SKU_MODEL.search(self.product_sku or "")
        if not m:
            return None
        model = m.group(1).strip()
        variant = _SKU_VARIANT.match(model)
        return variant.group("model") if variant else model or None

    @property
    def model_name(self) -> str | None:
        """The product name with what is not the model stripped: the MTM suffix, a trailing colon, the vendor's
        own name repeated in front ("IBM System x3550 M4 Server"), a generic " Server" tail.
        None when the name is only an MTM (then the machine type has to speak).
        Without a product name, the SKU's model (its variant suffix dropped) stands in for it."""
        return _normalise(self.product_name or self.sku_model, self.sys_vendor)


def _normalise(name: str | None, sys_vendor: str | None) -> str | None:
    """A product name (or a SKU's model) without what is not the model (see SmbiosIdentity.model_name)."""
    if not name:
        return None
    name = _MT_SUFFIX.sub("", name).strip().rstrip(":").strip()
    if _BARE_MTM.match(name):
        return None
    vendor = sys_vendor.split()[0] if sys_vendor and sys_vendor.split() else ""
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
        sku_model = box.sku_model
        # The SKU's model, normalised as the name is, must be the very same model: only a variant suffix after a
        # comma may differ, never a letter of the model ("PowerEdge R740xd" is not an R740).
        if sku_model and name and fold(_normalise(sku_model, box.sys_vendor)) != fold(name):
            written = _DELL_SKU_MODEL.search(box.product_sku or "")
            as_written = written.group(1).strip() if written else sku_model
            return f"product {name!r} and SKU model {as_written!r} disagree"
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
