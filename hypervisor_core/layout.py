"""Every path and name of the appliance's state, once. The core's init (oemkit/image/core/files/init) declares the
same names in its layout block, and tests/test_layout.py compares the two, so the agent, the init and the factory
(which writes the config CD and the state disk) can never disagree about where something lives.

Paths are relative to a root: `/` on the appliance, a folder in a factory rehearsal (`--root DIR`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR = "var/lib/oemkit"  # first boot's own state: config, marker, journal, status, report
UNIT_CONFIG = f"{STATE_DIR}/unit.json"  # the sealed unit config, copied from the config CD
DONE_MARKER = f"{STATE_DIR}/firstboot.done"  # the content id applied; written only when every step succeeded
JOURNAL = f"{STATE_DIR}/journal.jsonl"  # one fsync'd line per step event: the audit trail
STATUS = f"{STATE_DIR}/status.json"  # RUNNING, then READY or FAILED: the object of the last console line
REPORT = f"{STATE_DIR}/report.json"  # the full report: steps with seconds and detail, what was resolved
IDENTITY = f"{STATE_DIR}/identity.json"  # the machine-id and SSH host key this agent generated
DISK_IMAGES = f"{STATE_DIR}/images"  # workloads' disk images by SHA-256
VOLUMES = f"{STATE_DIR}/volumes"  # <pool>/<volume>.done: a volume filled from its image completely
POOLS = f"{STATE_DIR}/pools"  # <pool>/: the libvirt storage pools' folders
# Zero-touch phone home (docs/zero-touch.md, hypervisor_core/phonehome.py): all under STATE_DIR, so it persists.
UNIT_KEY = f"{STATE_DIR}/unit.key"  # the unit key's 32-byte Ed25519 seed (0600), made once on the box
ENROL_TOKEN_NAME = "enrol.token"  # the enrolment token's name on the config partition, beside CONFIG_NAME
ENROL_TOKEN = f"{STATE_DIR}/{ENROL_TOKEN_NAME}"  # copied there on first boot; removed once enrolment succeeded
PHONEHOME = f"{STATE_DIR}/phonehome"
PHONEHOME_SEQ = f"{PHONEHOME}/seq"  # the last report sequence number used (decimal)
PHONEHOME_ENROLLED = f"{PHONEHOME}/enrolled"  # present once the service bound the unit key
PHONEHOME_LAST_REPORT = f"{PHONEHOME}/last-report"  # the SHA-256 of the report.json spooled last: once, not per boot
PHONEHOME_SPOOL = f"{PHONEHOME}/spool"  # <ns-time>-<id>.json: reports not yet delivered
PHONEHOME_REJECTED = f"{PHONEHOME_SPOOL}/rejected"  # entries set aside (malformed, refused), each with a .reason

# The host files first boot writes (docs/host-config.md); the init restores them at every boot.
MACHINE_ID = "etc/machine-id"
HOSTNAME = "etc/hostname"
HOSTS = "etc/hosts"
RESOLV_CONF = "etc/resolv.conf"
TIMEZONE = "etc/timezone"
SSH_DIR = "etc/ssh"
SSH_HOST_KEY = f"{SSH_DIR}/ssh_host_ed25519_key"  # and .pub beside it
HOME = "home"  # <admin>/.ssh/authorized_keys
HOST_CONFIG = "etc/oemkit"  # <name>.json: host config the init applies at every boot
NETWORK_CONFIG = f"{HOST_CONFIG}/network.json"
FACTORY_KEY = "usr/share/oemkit/factory.pub"  # read-only in the image: never state, so no disk brings its own

# What the init keeps on the OEMKIT-STATE filesystem: folders bound onto it, files copied there and back.
PERSISTENT_DIRS = (STATE_DIR, HOST_CONFIG, SSH_DIR, HOME, "var/lib/libvirt", "etc/libvirt/qemu", "etc/libvirt/storage")
PERSISTENT_FILES = (HOSTNAME, HOSTS, RESOLV_CONF, TIMEZONE, MACHINE_ID)

STATUS_LINE = "OEMKIT-STATUS"  # the console's last line starts with it, then a space and the status as JSON
STATE_LABEL = "OEMKIT-STATE"  # ext4 label of the state filesystem on a fixed disk
CONFIG_PART_NAME = "oemkit-config"  # GPT name of the appliance image's config partition (FAT, CONFIG_PARTITION_LABEL)
STATE_PART_NAME = "oemkit-datastore"  # GPT name of the partition first boot moved the state to (statedisk.py)
CONFIG_LABEL = "OEMKIT_CONFIG"  # ISO 9660 volume id of the config CD (d-characters only)
CONFIG_PARTITION_LABEL = "OEMKIT-CFG"  # FAT label of the appliance image's config partition (11 characters at most)
CONFIG_NAME = "unit.json"  # the config's name on that CD


@dataclass(frozen=True)
class Layout:
    """The state paths under one root."""

    root: Path

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def unit_config(self) -> Path:
        return self.root / UNIT_CONFIG

    @property
    def done_marker(self) -> Path:
        return self.root / DONE_MARKER

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL

    @property
    def status(self) -> Path:
        return self.root / STATUS

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def identity(self) -> Path:
        return self.root / IDENTITY

    @property
    def disk_images(self) -> Path:
        return self.root / DISK_IMAGES

    @property
    def factory_key(self) -> Path:
        return self.root / FACTORY_KEY

    @property
    def unit_key(self) -> Path:
        return self.root / UNIT_KEY

    @property
    def enrol_token(self) -> Path:
        return self.root / ENROL_TOKEN

    @property
    def phonehome(self) -> Path:
        return self.root / PHONEHOME

    @property
    def phonehome_seq(self) -> Path:
        return self.root / PHONEHOME_SEQ

    @property
    def phonehome_enrolled(self) -> Path:
        return self.root / PHONEHOME_ENROLLED

    @property
    def phonehome_last_report(self) -> Path:
        return self.root / PHONEHOME_LAST_REPORT

    @property
    def spool(self) -> Path:
        return self.root / PHONEHOME_SPOOL

    @property
    def spool_rejected(self) -> Path:
        return self.root / PHONEHOME_REJECTED

    def host_config(self, name: str) -> Path:
        return self.root / HOST_CONFIG / f"{name}.json"

    def pool_dir(self, pool: str) -> Path:
        return self.root / POOLS / pool

    def volume_marker(self, pool: str, volume: str) -> Path:
        return self.root / VOLUMES / pool / f"{volume}.done"
