"""The appliance's boot banks (names, systemd-boot's variables, blessing) and the SMBIOS OEM strings a twin uses to
talk to a core whose command line is signed. The real proofs are boots (tests/test_appliance_boot.py); these pin the
pieces a boot cannot isolate."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hypervisor_core import bank, smbios

from .conftest import samples_dir


def _efivar(folder: Path, name: str, value: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-{bank.LOADER_GUID}").write_bytes(b"\x06\0\0\0" + value.encode("utf-16-le") + b"\0\0")


def test_bank_names_round_trip_and_count() -> None:
    fresh = bank.new_entry(2, "b", counting=True)
    assert fresh.name == "oemkit-2-b+3-0.efi"
    assert bank.parse(fresh.name) == fresh
    assert bank.parse("\\EFI\\Linux\\OEMKIT-2-B+1-2.EFI") == bank.Entry(2, "b", 1, 2)  # FAT: any case
    assert bank.parse("oemkit-1-a.efi") == bank.new_entry(1, "a", counting=False)
    assert bank.Entry(2, "b", 0, 3).blessed.name == "oemkit-2-b.efi"
    for other in ("oemkit-1-c.efi", "oemkit--a.efi", "linux.efi", "oemkit-1-a.efi.bak", "oemkit-1-a+x.efi"):
        assert bank.parse(other) is None, other
    with pytest.raises(ValueError):
        bank.new_entry(1, "c", counting=False)


def test_booted_bank_and_count_path_come_from_systemd_boots_variables(tmp_path: Path) -> None:
    assert bank.booted(tmp_path) is None and bank.counting_path(tmp_path) is None
    _efivar(tmp_path, "LoaderEntrySelected", "oemkit-2-b.efi")
    _efivar(tmp_path, "LoaderBootCountPath", "\\EFI\\Linux\\oemkit-2-b+2-1.efi")
    assert bank.booted(tmp_path) == bank.Entry(2, "b")
    assert bank.counting_path(tmp_path) == "\\EFI\\Linux\\oemkit-2-b+2-1.efi"


def test_blessing_renames_the_counted_file_only(tmp_path: Path) -> None:
    linux = tmp_path / "EFI" / "Linux"
    linux.mkdir(parents=True)
    (linux / "oemkit-1-a.efi").write_bytes(b"A")
    (linux / "OEMKIT-2-B+2-1.EFI").write_bytes(b"B")  # as a FAT mount may show it
    assert bank.bless(tmp_path, "\\EFI\\Linux\\oemkit-2-b+2-1.efi") == "oemkit-2-b.efi"
    assert sorted(p.name for p in linux.iterdir()) == ["oemkit-1-a.efi", "oemkit-2-b.efi"]
    assert (linux / "oemkit-2-b.efi").read_bytes() == b"B"
    with pytest.raises(ValueError):
        bank.bless(tmp_path, "\\EFI\\Linux\\oemkit-1-a.efi")  # blessed already: nothing is counted
    with pytest.raises(FileNotFoundError):
        bank.bless(tmp_path, "\\EFI\\Linux\\oemkit-3-a+2-1.efi")


def _table(structures: list[tuple[int, bytes, list[str]]]) -> bytes:
    out = b""
    for handle, (kind, body, strings) in enumerate(structures):
        head = struct.pack("<BBH", kind, 4 + len(body), handle) + body
        tail = b"".join(s.encode() + b"\0" for s in strings) + b"\0" if strings else b"\0\0"
        out += head + tail
    return out


def _dell_oem_strings() -> list[str]:
    """The type 11 strings of a real PowerEdge R640 dump."""
    lines = (samples_dir() / "dell/PowerEdge-R640/34DAF9822B89.txt").read_text().splitlines()
    start = lines.index("OEM Strings")
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("\tString "):
            break
        out.append(line.split(": ", 1)[1])
    return out


def test_oem_strings_are_read_from_the_raw_table() -> None:
    dell = _dell_oem_strings()
    assert dell[0] == "Dell System" and len(dell) > 3
    table = _table([
        (1, b"\x01\x02\x03\x04", ["Dell Inc.", "PowerEdge R640", "34DAF9822B89"]),
        (11, bytes([len(dell)]), dell),
        (11, b"\x01", [smbios.POWEROFF]),
        (127, b"", []),
        (11, b"\x01", ["after the end: never read"]),
    ])  # fmt: skip
    assert smbios.oem_strings(table) == [*dell, smbios.POWEROFF]
    assert smbios.oem_strings(table[:20]) == []  # truncated: nothing, no error


def test_only_honoured_strings_are_reported(tmp_path: Path) -> None:
    table = tmp_path / "DMI"
    table.write_bytes(_table([(11, b"\x03", ["oemkit:anything-else", smbios.POWEROFF, "Dell System"]), (127, b"", [])]))
    assert smbios.present(table) == [smbios.POWEROFF]
    assert smbios.present(tmp_path / "absent") == []
