"""Where everything sits on an appliance disk, and the names that derive from a core or a unit — said once, so the
builder, the qcow2 overlay, `image verify` and `image upgrade` agree byte for byte.

| bytes | what |
|---|---|
| 0 .. 1 MiB | protective MBR, primary GPT header and entries (the rest of the MiB is zero) |
| 1 MiB .. 97 MiB | the ESP: FAT32 `OEMKIT-ESP` — systemd-boot, loader.conf, the two banks' UKIs |
| 97 MiB .. 105 MiB | `oemkit-config`: FAT `OEMKIT-CFG` holding `unit.json` |
| 105 MiB .. 137 MiB | `oemkit-state`: an empty ext4 `OEMKIT-STATE`, last, grown on the box to its device's end |
| 137 MiB .. 138 MiB | backup GPT entries and header in the last 33 sectors |

A unit differs from its core's base disk only in the GPT (its own GUIDs) and the config partition: everything
else is the same bytes for every unit of a core, which is what makes a qcow2 unit a few clusters over a shared
base."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from hypervisor_core import bank
from hypervisor_core.layout import CONFIG_PART_NAME, CONFIG_PARTITION_LABEL, STATE_LABEL
from oemkit.image.appliance import uki
from oemkit.image.appliance.disk import ALIGN_SECTORS, SECTOR, MiB

ESP_MIB = 96  # systemd-boot and two banks of ~34 MB, with room for an upgrade's larger core
CONFIG_MIB = 8
STATE_MIB = 32  # grown on first boot (a fixed boot device) or refused (SD, USB: flash that wears out)
ESP_NAME, CONFIG_NAME, STATE_NAME = "ESP", CONFIG_PART_NAME, "oemkit-state"  # GPT names (verify reads them back)
ESP_LABEL = bank.ESP_LABEL  # the init finds the ESP by it to bless a bank
CONFIG_LABEL = CONFIG_PARTITION_LABEL  # the init finds the config partition by it
STATE_FS_LABEL = STATE_LABEL  # the init finds the state filesystem by it
LOADER_CONF = b"timeout 0\nconsole-mode keep\neditor no\n"  # no command-line editing at the console
NAMESPACE = uuid.UUID("1f0c6a3e-6b5e-4f4e-9a57-0e6b1d7a0c11")  # oemkit's: GUIDs of an image derive from it
BASE = ".base"  # the identity part that stands for "no unit": a serial can never start with a dot
LAYOUT = 3  # bump when anything on this page changes: part of the shared base's cache key

ESP_START = ALIGN_SECTORS * SECTOR
CONFIG_START = ESP_START + ESP_MIB * MiB
CONFIG_END = CONFIG_START + CONFIG_MIB * MiB
STATE_START = CONFIG_END
STATE_END = STATE_START + STATE_MIB * MiB
DISK_BYTES = STATE_END + ALIGN_SECTORS * SECTOR  # room for the backup GPT
GPT_HEAD = 34 * SECTOR  # protective MBR, header, 128 entries of 128 bytes
GPT_TAIL = 33 * SECTOR  # backup entries and header


@dataclass(frozen=True)
class Extent:
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


# where a unit may differ from its base: the GPT's MiB at each end and the config partition
UNIT_EXTENTS = (
    Extent(0, ESP_START),
    Extent(CONFIG_START, CONFIG_END - CONFIG_START),
    Extent(STATE_END, DISK_BYTES - STATE_END),
)
ESP = Extent(ESP_START, ESP_MIB * MiB)
CONFIG = Extent(CONFIG_START, CONFIG_MIB * MiB)
STATE = Extent(STATE_START, STATE_MIB * MiB)
PARTITIONS = {ESP_NAME: ESP, CONFIG_NAME: CONFIG}  # the FAT ones, whose files the manifest lists
GPT_PARTITIONS = {**PARTITIONS, STATE_NAME: STATE}  # every partition, in disk order


def guid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def volume_id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8].upper()


def state_uuid(core_id: str) -> str:
    """The state filesystem's UUID: the core's, like everything in the base, so a unit's overlay stays a few
    clusters (ext4 seeds its metadata checksums with it: a per-unit UUID would rewrite much of the partition)."""
    return guid(BASE, core_id, "state-fs")


def esp_volume_id(core_id: str, db: str) -> str:
    """The ESP's volume id: the core and the db certificate only, so the ESP is the same bytes on every unit."""
    return volume_id(core_id, db, "esp")


def bank_names() -> dict[str, str]:
    """What the factory writes: bank A the active one (the higher generation), B a known-good fallback."""
    return {"a": bank.new_entry(1, "a", counting=False).name, "b": bank.new_entry(0, "b", counting=False).name}


def uki_path(name: str) -> str:
    return f"/{bank.UKI_DIR}/{name}"


def base_name(core_id: str, db: str) -> str:
    """The shared base disk of a core and db key: every input of its bytes is in the name."""
    return f"{core_id}-{db[:16]}-u{uki.FORMAT}-l{LAYOUT}.raw"


def allowed_overlay(cluster: int, esp_too: bool) -> list[Extent]:
    """What a unit's qcow2 overlay may allocate (cluster-rounded): the two GPT copies and the config partition,
    and the ESP once an upgrade has written a bank into it."""
    tail = (DISK_BYTES - GPT_TAIL) // cluster * cluster
    head = -(-GPT_HEAD // cluster) * cluster
    out = [Extent(0, head), CONFIG, Extent(tail, DISK_BYTES - tail)]
    return [*out, ESP] if esp_too else out
