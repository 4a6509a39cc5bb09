"""The two things the core builder needs from an ELF file: its DT_NEEDED libraries and its interpreter.

A small reader of 64-bit little-endian ELF (all the core is x86-64) instead of running `ldd`, which would execute
the staged binaries' loader on the build host. Anything else (a script, a static binary) has no needs."""

from __future__ import annotations

import struct
from dataclasses import dataclass

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5


class ElfError(ValueError):
    """A file that says it is ELF but whose tables do not add up."""


@dataclass(frozen=True)
class ElfDeps:
    needed: tuple[str, ...] = ()  # sonames, in the file's order
    interp: str | None = None  # PT_INTERP (the dynamic loader) of an executable


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def deps(data: bytes) -> ElfDeps:
    """DT_NEEDED and PT_INTERP of a 64-bit little-endian ELF file; empty for a static binary or a non-ELF file."""
    if not is_elf(data) or len(data) < 64 or data[4] != 2 or data[5] != 1:
        return ElfDeps()
    try:
        return _deps(data)
    except (struct.error, IndexError, ValueError) as exc:
        raise ElfError(f"malformed ELF: {exc}") from None


def _deps(data: bytes) -> ElfDeps:
    (e_phoff,) = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []
    dynamic: tuple[int, int] | None = None
    interp: str | None = None
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()
    if dynamic is None:
        return ElfDeps(interp=interp)

    def file_offset(vaddr: int) -> int:
        for va, off, size in loads:
            if va <= vaddr < va + size:
                return vaddr - va + off
        raise ElfError(f"address {vaddr:#x} is in no loaded segment")

    name_offsets: list[int] = []
    strtab: int | None = None
    off, end = dynamic[0], dynamic[0] + dynamic[1]
    while off + 16 <= end:
        tag, value = struct.unpack_from("<qQ", data, off)
        off += 16
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            name_offsets.append(value)
        elif tag == DT_STRTAB:
            strtab = file_offset(value)
    if name_offsets and strtab is None:
        raise ElfError("DT_NEEDED without a string table")
    needed = []
    for n in name_offsets:
        start = strtab + n  # type: ignore[operator]
        needed.append(data[start : data.index(b"\0", start)].decode())
    return ElfDeps(tuple(needed), interp)


def section(data: bytes, name: str) -> bytes | None:
    """The bytes of the named section of a 64-bit little-endian ELF file (a kernel module's `.modinfo`), or
    None when it has none."""
    if not is_elf(data) or len(data) < 64 or data[4] != 2 or data[5] != 1:
        return None
    try:
        (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        if e_shoff == 0 or e_shnum == 0:
            return None
        if e_shentsize < 64 or e_shstrndx >= e_shnum:
            raise ElfError(f"section header table: entries of {e_shentsize} bytes, names in {e_shstrndx}/{e_shnum}")

        def header(i: int) -> tuple[int, int, int]:
            sh_name, _type, _flags, _addr, sh_offset, sh_size = struct.unpack_from(
                "<IIQQQQ", data, e_shoff + i * e_shentsize
            )
            return sh_name, sh_offset, sh_size

        _, names_at, _ = header(e_shstrndx)
        for i in range(e_shnum):
            sh_name, offset, size = header(i)
            start = names_at + sh_name
            if data[start : data.index(b"\0", start)].decode() == name:
                if offset + size > len(data):
                    raise ElfError(f"section {name} runs past the end of the file")
                return data[offset : offset + size]
    except (struct.error, IndexError, ValueError) as exc:
        raise ElfError(f"malformed ELF: {exc}") from None
    return None
