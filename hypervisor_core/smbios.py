"""SMBIOS OEM strings (type 11): the one channel a twin has to tell the core something. A signed UKI's command line
is fixed, so a twin says "power off when done" (instead of idling as a box does) as an OEM string; so does systemd
(io.systemd.*). Only the names in HONOURED mean anything, and none of them can change what first boot applies:
a BMC that sets OEM strings can at most make the box power off after its status, or overcommit its memory.

Read from the raw table the kernel exports (/sys/firmware/dmi/tables/DMI, built in; no dmi-sysfs module needed).
`python3 -m hypervisor_core.smbios` prints the honoured strings present, one per line (the init reads them once)."""

from __future__ import annotations

import sys
from pathlib import Path

from hypervisor_core.fsutil import read_regular

TABLE = Path("/sys/firmware/dmi/tables/DMI")
MAX_TABLE = 1 << 20  # SMBIOS 3 allows larger in theory; real tables are a few KiB
OEM_STRINGS = 11
END = 127
POWEROFF = "oemkit:poweroff"
# A twin has less memory than the box it stands for (the factory machine's), so a profile's workloads would not
# start for want of RAM the box has: the twin lets the core overcommit (vm.overcommit_memory=1; QEMU backs only the
# pages a guest touches). Never set on a box: its workloads get the RAM they ask for.
OVERCOMMIT = "oemkit:overcommit-memory"
HONOURED = (POWEROFF, OVERCOMMIT)


def structures(table: bytes) -> list[tuple[int, bytes, list[bytes]]]:
    """Each structure's (type, formatted area, strings); stops at the end-of-table structure or a truncated one."""
    out, at = [], 0
    while at + 4 <= len(table):
        kind, length = table[at], table[at + 1]
        if length < 4 or at + length > len(table):
            break
        formatted = table[at : at + length]
        end = table.find(b"\0\0", at + length)
        if end < 0:
            break
        strings = [s for s in table[at + length : end].split(b"\0") if s]
        out.append((kind, formatted, strings))
        if kind == END:
            break
        at = end + 2
    return out


def oem_strings(table: bytes) -> list[str]:
    """Every type 11 string, in order, as text (undecodable bytes escaped: they can only fail to match)."""
    return [
        s.decode("ascii", "backslashreplace")
        for kind, _, strings in structures(table)
        if kind == OEM_STRINGS
        for s in strings
    ]


def present(table_path: Path = TABLE) -> list[str]:
    """The honoured OEM strings this box's firmware carries (none when the table cannot be read)."""
    try:
        strings = oem_strings(read_regular(table_path, MAX_TABLE))
    except OSError:
        return []
    return [name for name in HONOURED if name in strings]


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python3 -m hypervisor_core.smbios", file=sys.stderr)
        return 2
    for name in present():
        print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
