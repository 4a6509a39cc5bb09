"""The one way oemkit writes a file: atomically, durably, and never over something that is not a regular file.

Both sides use it (the factory may import the appliance's modules, never the reverse): a sealed unit config, a
host file under a target root, a cache entry and a journal line are all written here.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


class WriteRefused(OSError):
    """The target exists and is not a regular file: replacing it would destroy a link, a device or a folder."""


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_target(path: Path) -> None:
    """Refuse a target that exists and is not a regular file (a symlink is refused, not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise WriteRefused(0, f"{_kind(st.st_mode)}: refusing to replace it", str(path))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644, *, mkdir: bool = True) -> None:
    """Write `data` to `path` so that after a crash it is the old file or the new one, never half of either:
    a temporary file in the same folder, fsync, rename, fsync the folder. The temporary file is created with
    `mode` from the start (a private key is never world-readable, not even for a moment) and never left behind
    when the write fails. Raises WriteRefused when `path` is a symlink, a device, a FIFO or a folder."""
    path = Path(path)
    check_target(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # the umask may have narrowed it
            os.fsync(fd)
        finally:
            os.close(fd)
        check_target(path)  # it may have changed while we wrote
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def append_line(path: Path, line: str, mode: int = 0o600) -> None:
    """Append one line and fsync it (the journal): a crash loses at most the line being written, and a reader
    skips a torn last line. A line after a torn one starts on a line of its own, so it is never lost with it."""
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        view = memoryview(("\n" if torn else "").encode() + (line.rstrip("\n") + "\n").encode())
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
