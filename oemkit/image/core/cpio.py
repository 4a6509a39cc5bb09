"""Reproducible newc cpio archives (the format the kernel unpacks into its initramfs), and a reader for checks.

Same entries → same bytes, whatever order they were added in: paths sorted by component with every parent
first, one fixed mtime (SOURCE_DATE_EPOCH), uid/gid 0, nlink 1 (2 for folders), inode numbers in that order."""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass

from oemkit.image.core.selection import Inode

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_FIELDS = 13  # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], namesize: int) -> bytes:
    values = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    return MAGIC + "".join(f"{v:08x}" for v in values).encode()


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _with_parents(nodes: Mapping[str, Inode]) -> dict[str, Inode]:
    out = dict(nodes)
    for path in nodes:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            out.setdefault("/" + "/".join(parts[:i]), Inode.dir())
    return out


def write_newc(nodes: Mapping[str, Inode], mtime: int) -> bytes:
    """The archive of `nodes` (absolute paths), parents created as 0755 folders, padded to 512 bytes."""
    out = bytearray()
    everything = _with_parents(nodes)
    for ino, path in enumerate(sorted(everything, key=lambda p: p.strip("/").split("/")), start=1):
        node = everything[path]
        name = path.strip("/").encode() + b"\0"
        kind = {"dir": stat.S_IFDIR, "link": stat.S_IFLNK, "chr": stat.S_IFCHR}.get(node.kind, stat.S_IFREG)
        data = node.content()
        nlink = 2 if node.kind == "dir" else 1
        out += _header(ino, kind | node.permissions(), nlink, mtime, len(data), node.rdev, len(name))
        out += name
        out += _pad(len(out))
        out += data
        out += _pad(len(out))
    name = TRAILER.encode() + b"\0"
    out += _header(0, 0, 1, 0, 0, (0, 0), len(name)) + name
    out += _pad(len(out))
    out += b"\0" * (-len(out) % 512)
    return bytes(out)


@dataclass(frozen=True)
class Member:
    """One entry of an archive as read back (for checks)."""

    name: str
    mode: int
    uid: int
    gid: int
    mtime: int
    rdev: tuple[int, int]
    data: bytes

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


def read_newc(data: bytes) -> list[Member]:
    """Every entry of one newc archive (up to its trailer); raises ValueError on anything else."""
    entries: list[Member] = []
    off = 0
    while True:
        if data[off : off + 6] != MAGIC:
            raise ValueError(f"no newc header at offset {off}")
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(_FIELDS)]
        _ino, mode, uid, gid, _nlink, mtime, size, _maj, _min, rmaj, rmin, namesize, _check = fields
        off += 110
        name = data[off : off + namesize - 1].decode()
        off += namesize
        off += -off % 4
        body = data[off : off + size]
        off += size
        off += -off % 4
        if name == TRAILER:
            return entries
        entries.append(Member(name, mode, uid, gid, mtime, (rmaj, rmin), body))
