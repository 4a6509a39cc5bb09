"""The appliance's two boot banks: how their UKIs are named on the ESP, which one this boot came from, and blessing
a bank after it reached READY. Standard library only: the init runs `python3 -m hypervisor_core.bank`.

Each bank is one signed UKI in \\EFI\\Linux: `oemkit-<generation>-<bank>.efi`, e.g. `oemkit-1-a.efi`. systemd-boot
(252) sorts entries with tries left by their file name, newest version first, and picks the first: the higher
generation wins, so an upgrade writes the other bank with the next generation and boot counting, `oemkit-2-b+3-0.efi`.
systemd-boot renames it `+2-1`, `+1-2`, `+0-3` as it tries it; an entry with no tries left sorts last, so after three
boots that never blessed it the older bank boots again (rollback). Blessing is renaming the file back without the
counter, done only after READY. The UKI's os-release carries no version for the same reason: bank order must come
from the file name, not from core ids (content hashes, in no order).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

UKI_DIR = "EFI/Linux"
ESP_LABEL = "OEMKIT-ESP"  # the ESP's FAT label: how the init finds it to bless a bank
BANKS = ("a", "b")
TRIES = 3  # boots a new bank gets before systemd-boot falls back to the other
# systemd-boot's variables (the Boot Loader Interface's vendor GUID)
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = Path("/sys/firmware/efi/efivars")
_NAME = re.compile(
    r"oemkit-(?P<gen>[0-9]{1,9})-(?P<bank>[ab])(?:\+(?P<left>[0-9]{1,4})(?:-(?P<done>[0-9]{1,4}))?)?\.efi"
)


@dataclass(frozen=True)
class Entry:
    generation: int
    bank: str
    tries_left: int | None = None  # None: blessed (no counter)
    tries_done: int = 0

    @property
    def name(self) -> str:
        counter = "" if self.tries_left is None else f"+{self.tries_left}-{self.tries_done}"
        return f"oemkit-{self.generation}-{self.bank}{counter}.efi"

    @property
    def blessed(self) -> Entry:
        return Entry(self.generation, self.bank)


def parse(name: str) -> Entry | None:
    """The entry a UKI file name stands for; None for any other name."""
    m = _NAME.fullmatch(PurePosixPath(name.replace("\\", "/")).name.lower())
    if m is None:
        return None
    left = None if m["left"] is None else int(m["left"])
    return Entry(int(m["gen"]), m["bank"], left, int(m["done"] or 0))


def new_entry(generation: int, bank: str, counting: bool) -> Entry:
    """A bank written at the factory (`counting` False: it is known good) or by an upgrade (it must prove itself)."""
    if bank not in BANKS or generation < 0:
        raise ValueError(f"no bank {bank!r} generation {generation}")
    return Entry(generation, bank, TRIES if counting else None)


def read_efivar(name: str, root: Path = EFIVARS) -> str | None:
    """A systemd-boot string variable (4 attribute bytes, then UTF-16LE, NUL-terminated), or None."""
    try:
        raw = (root / f"{name}-{LOADER_GUID}").read_bytes()
    except OSError:
        return None
    return raw[4:].decode("utf-16-le", errors="replace").split("\0", 1)[0] or None


def booted(root: Path = EFIVARS) -> Entry | None:
    """The entry systemd-boot started this boot from (LoaderEntrySelected: the file name without its counter)."""
    selected = read_efivar("LoaderEntrySelected", root)
    return parse(selected) if selected else None


def counting_path(root: Path = EFIVARS) -> str | None:
    """The ESP path of the booted UKI while it is still being counted (systemd-boot sets LoaderBootCountPath only
    then, after its own rename), e.g. \\EFI\\Linux\\oemkit-2-b+2-1.efi."""
    return read_efivar("LoaderBootCountPath", root)


def bless(esp: Path, count_path: str) -> str:
    """Rename the counted UKI at `count_path` on the mounted ESP `esp` to its blessed name; the new name."""
    entry = parse(count_path)
    rel = PurePosixPath(count_path.replace("\\", "/").lstrip("/"))
    if entry is None or entry.tries_left is None:
        raise ValueError(f"{count_path} is not a counted oemkit bank")
    # FAT is case-insensitive but a Linux mount shows the stored case: find the file as stored
    folder = esp / rel.parent
    stored = next((p for p in folder.iterdir() if p.name.lower() == rel.name.lower()), None)
    if stored is None:
        raise FileNotFoundError(f"{rel} is not on the ESP")
    target = folder / entry.blessed.name
    stored.rename(target)
    return target.name


def _bless_on_esp(count_path: str) -> str:
    """Mount the ESP (found by its label), bless, sync, unmount."""
    dev = subprocess.run(["findfs", f"LABEL={ESP_LABEL}"], capture_output=True, text=True, check=False).stdout.strip()
    if not dev:
        raise FileNotFoundError(f"no filesystem labelled {ESP_LABEL}")
    mnt = Path("/run/oemkit/esp")
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "vfat", "-o", "nosuid,nodev,noexec", dev, str(mnt)], check=True)
    try:
        name = bless(mnt, count_path)
        subprocess.run(["sync"], check=False)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    return name


def main(argv: list[str]) -> int:
    """`bank`: print the booted bank (a, b, or "-" without systemd-boot's variables) and its tries, for the init's
    mark; `bank bless`: bless the booted bank if it is being counted (no-op otherwise)."""
    if argv == ["bless"]:
        path = counting_path()
        if path is None:
            print("nothing to bless")
            return 0
        try:
            print(f"blessed {_bless_on_esp(path)}")
        except (OSError, ValueError, subprocess.CalledProcessError) as exc:
            print(f"not blessed: {exc}")
            return 1
        return 0
    if argv:
        print("usage: python -m hypervisor_core.bank [bless]", file=sys.stderr)
        return 2
    entry, path = booted(), counting_path()
    if entry is None:
        print("-")
    else:
        counted = parse(path) if path else None
        tries = ""
        if counted is not None and counted.tries_left is not None:
            tries = f" tries={counted.tries_left}-{counted.tries_done}"
        print(f"{entry.bank} generation={entry.generation}{tries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
