"""The data disks of a rehearsed box: the `--disks` spec, and the disks a unit's datastore rule asks for.

One place for what the facts tree (`facts from-dmi`), the QEMU twin and `profile init` all need to agree on, so a
profile scaffolded for a model is satisfied by that model's default rehearsal box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypervisor_core.config import DiskRule
from oemkit.catalog.schema import HardwareModel
from oemkit.errors import UnreadableInput

SIZES_GIB = (240, 480, 960, 1920, 3840, 7680, 15360)  # drive sizes vendors sell
DEFAULT_SIZE_GIB = 960
_SPEC = re.compile(r"^(sata|sas|nvme)(?::(ssd|hdd))?:(\d+)(?:x(\d+))?$")


@dataclass(frozen=True)
class DiskSpec:
    interface: str  # sata | sas | nvme
    ssd: bool
    size_gib: int
    count: int


def parse_disks(spec: str) -> list[DiskSpec]:
    """`sata:ssd:960x2,nvme:1920x4` → disk specs (ssd is the default)."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        m = _SPEC.fullmatch(item)
        if not m:
            raise UnreadableInput(f"disk spec {item!r} is not IFACE[:ssd|hdd]:SIZE_GIB[xCOUNT], e.g. sata:ssd:960x2")
        out.append(DiskSpec(m.group(1), m.group(2) != "hdd", int(m.group(3)), int(m.group(4) or 1)))
    return out


def main_interface(model: HardwareModel) -> str:
    """The drive interface of the model's largest bay configuration (SATA before SAS before NVMe)."""
    bays = max(model.storage.bays, key=lambda b: b.count)
    return next(i for i in ("sata", "sas", "nvme") if i in bays.interfaces)


def disks_for_rule(model: HardwareModel, rule: DiskRule | None) -> list[DiskSpec]:
    """Disks that satisfy a datastore rule (its interface, SSD/HDD, the smallest drive size sold that fits, its
    count); without a rule, two 960 GiB SSDs on the model's main bays (one when it has a single bay)."""
    if rule is None:
        bays = max(model.storage.bays, key=lambda b: b.count)
        return [DiskSpec(main_interface(model), True, DEFAULT_SIZE_GIB, max(1, min(2, bays.count)))]
    need = rule.min_size_gib or 0
    size = next((s for s in SIZES_GIB if s >= need), need)
    return [DiskSpec(rule.interface or main_interface(model), rule.rotational is not True, size, rule.count)]


def scsi_name(n: int) -> str:
    """The kernel's (and libvirt's) name of the n-th SCSI-class disk: sda … sdz, sdaa …"""
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("a") + r) + letters
    return f"sd{letters}"
