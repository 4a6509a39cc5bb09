"""Which files of the staged Debian root go into the core, and into which part.

Paths are followed component by component so every symlink met on the way (/lib64/ld-linux-x86-64.so.2,
/usr/bin/python3, /sbin/ip) is shipped as the same symlink; binaries bring their DT_NEEDED closure and loader.
A path is owned by the first part that asks for it (rest → libvirt → qemu → python), so shared libraries are
counted once."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from oemkit.errors import OemkitError
from oemkit.image.core import elf
from oemkit.image.core.recipe import LIBDIRS


class SelectError(OemkitError):
    """A root, library or data file the recipe names is not in the staged root."""


@dataclass(frozen=True)
class Inode:
    """One initrd entry. `file` reads `src` at archive time; `data` carries its bytes; `mode` is the permission."""

    kind: str  # "file" | "data" | "link" | "dir" | "chr"
    src: Path | None = None
    data: bytes = b""
    target: str = ""
    mode: int | None = None
    rdev: tuple[int, int] = (0, 0)

    @staticmethod
    def file(src: Path, mode: int | None = None) -> Inode:
        return Inode("file", src=src, mode=mode)

    @staticmethod
    def blob(data: bytes, mode: int = 0o644) -> Inode:
        return Inode("data", data=data, mode=mode)

    @staticmethod
    def link(target: str) -> Inode:
        return Inode("link", target=target)

    @staticmethod
    def dir(mode: int = 0o755) -> Inode:
        return Inode("dir", mode=mode)

    @staticmethod
    def chr(major: int, minor: int, mode: int = 0o600) -> Inode:
        return Inode("chr", mode=mode, rdev=(major, minor))

    def size(self) -> int:
        if self.kind == "file":
            return self.src.stat().st_size  # type: ignore[union-attr]
        return len(self.data) if self.kind == "data" else len(self.target.encode()) if self.kind == "link" else 0

    def content(self) -> bytes:
        if self.kind == "file":
            return self.src.read_bytes()  # type: ignore[union-attr]
        return self.data if self.kind == "data" else self.target.encode() if self.kind == "link" else b""

    def permissions(self) -> int:
        if self.mode is not None:
            return self.mode
        if self.kind == "file":
            # as packaged, minus set-id and group/other write: nothing in the core runs as anyone but root
            return stat.S_IMODE(self.src.stat().st_mode) & 0o755  # type: ignore[union-attr]
        return 0o777 if self.kind == "link" else 0o755


class Initramfs:
    """The core's initramfs being assembled: path → Inode, and the part each path belongs to."""

    def __init__(self) -> None:
        self.nodes: dict[str, Inode] = {}
        self.owner: dict[str, str] = {}

    def put(self, path: str, node: Inode, part: str, *, replace: bool = False) -> None:
        if replace or path not in self.nodes:
            self.nodes[path] = node
            self.owner[path] = part

    def part(self, name: str) -> dict[str, Inode]:
        return {p: n for p, n in self.nodes.items() if self.owner[p] == name}

    def __contains__(self, path: str) -> bool:
        return path in self.nodes


def _normalise(components: Iterable[str]) -> list[str]:
    out: list[str] = []
    for c in components:
        if c == "..":
            if out:
                out.pop()
        elif c not in ("", "."):
            out.append(c)
    return out


class Selector:
    """Adds files of the staged root `root` to an Initramfs; a path present in `overlay` (the packages rebuilt
    from source, rebuild.py) is taken from there instead."""

    def __init__(self, root: Path, image: Initramfs, overlay: Path | None = None) -> None:
        self.root = root
        self.overlay = overlay
        self.image = image
        self._closed: set[str] = set()

    def host(self, path: str) -> Path:
        # rebuild.check_overlay made sure no folder of the overlay stands where the stage has a link
        if self.overlay is not None and os.path.lexists(shadow := self.overlay / path.lstrip("/")):
            return shadow
        return self.root / path.lstrip("/")

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.host(path))

    def add_path(self, path: str, part: str) -> str:
        """Add `path` and every symlink on the way to it; returns its real path inside the root."""
        todo = _normalise(path.split("/"))
        cur = ""
        hops = 0
        while todo:
            nxt = f"{cur}/{todo.pop(0)}"
            host = self.host(nxt)
            if host.is_symlink():
                hops += 1
                if hops > 40:
                    raise SelectError(f"symlink loop at {path}")
                target = os.readlink(host)
                self.image.put(nxt, Inode.link(target), part)
                base = [] if target.startswith("/") else cur.split("/")
                todo = _normalise([*base, *target.split("/"), *todo])
                cur = ""
                continue
            cur = nxt
        host = self.host(cur)
        if host.is_dir():
            self.image.put(cur, Inode.dir(), part)
        elif host.is_file():
            self.image.put(cur, Inode.file(host), part)
        else:
            raise SelectError(f"{path} is not in the staged Debian root")
        return cur

    def add_tree(self, path: str, part: str) -> None:
        real = self.add_path(path, part)
        found: set[str] = set()
        for base in (self.root, self.overlay):  # a folder may hold files of both
            if base is not None and (base / real.lstrip("/")).is_dir():
                found.update("/" + p.relative_to(base).as_posix() for p in (base / real.lstrip("/")).rglob("*"))
        for p in sorted(found):
            self.add_path(p, part)

    def find_lib(self, soname: str, needed_by: str) -> str:
        for d in LIBDIRS:
            if os.path.lexists(self.host(f"{d}/{soname}")):
                return f"{d}/{soname}"
        raise SelectError(f"{soname} (needed by {needed_by}) is not in the staged Debian root")

    def add_elf_closure(self, roots: Iterable[str], part: str) -> None:
        """Each root, its loader and the transitive DT_NEEDED libraries (each file parsed once per build)."""
        todo = list(roots)
        while todo:
            path = todo.pop()
            real = self.add_path(path, part)
            if real in self._closed:
                continue
            self._closed.add(real)
            with open(self.host(real), "rb") as fh:
                if not elf.is_elf(fh.read(4)):
                    continue
                fh.seek(0)
                found = elf.deps(fh.read())
            if found.interp:
                todo.append(found.interp)
            todo.extend(self.find_lib(n, real) for n in found.needed)
