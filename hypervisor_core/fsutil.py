"""The one way oemkit reads an input file and writes a file.

Reading: opened once, without blocking (a FIFO never hangs the caller), checked on the open descriptor to be a
regular file, and read with a bound before the bytes are in memory (`/dev/zero` is refused, not read until the
process dies). Writing: atomically, durably, and never over something that is not a regular file.

Both sides use it (the factory may import the appliance's modules, never the reverse): every profile, key, unit
config, order, dump and facts file is read here; a sealed unit config, a host file under a target root, a cache
entry, a downloaded disk image and a journal line are all written here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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


class ReadRefused(OSError):
    """The input is not a regular file, or is larger than the caller's bound: refused before reading it."""


def kind_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them.

    A symlink to a regular file is followed (inputs are often linked into place); anything else — a FIFO, a
    device, a socket, a folder — raises ReadRefused before a byte is read, and so does a file over `limit`
    (checked on the size, and again on what is read: /proc and sysfs files report a size that is not theirs)."""
    # stat before open: opening a device can act (a watchdog arms, a tape rewinds), so anything but a regular file
    # is refused unopened. Then O_NONBLOCK (a FIFO swapped in since never blocks the open), O_NOCTTY, and the same
    # check again on the descriptor, which is what is read.
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ReadRefused(0, f"{kind_of(mode)}, not a regular file: refused", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadRefused(0, f"{kind_of(st.st_mode)}, not a regular file: refused", str(path))
        if st.st_size > limit:
            raise ReadRefused(0, f"{st.st_size} bytes; the limit is {limit}", str(path))
        chunks, size = [], 0
        while chunk := os.read(fd, min(limit + 1 - size, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ReadRefused(0, f"more than {limit} bytes; the limit is {limit}", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_target(path: Path) -> None:
    """Refuse a target that exists and is not a regular file (a symlink is refused, not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise WriteRefused(0, f"{kind_of(st.st_mode)}: refusing to replace it", str(path))


def link_on_the_way(root: Path, path: Path) -> Path | None:
    """The first folder between `root` and `path` (both excluded) that is a symbolic link, or None. A target root
    is a boundary: a link inside it (T/etc -> /etc) would carry a write outside it."""
    try:
        parts = Path(path).relative_to(root).parts[:-1]
    except ValueError:
        return Path(path)  # not under root at all
    here = Path(root)
    for part in parts:
        here = here / part
        if here.is_symlink():
            return here
    return None


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: Path, mode: int | None = None, *, mkdir: bool = False, durable: bool = True, exclusive: bool = False
) -> Iterator[BinaryIO]:
    """A file object whose content becomes `path` only when the block ends without an exception: a temporary file
    in the same folder, fsync, rename, fsync of the folder — after a crash `path` is the old file or the new one,
    never half of either — and the temporary file removed whatever happens.

    mode: the file's permissions, set from the start (a private key is never readable by others, not even for a
    moment); None: 0666 less the umask, like any file the user creates. durable=False leaves the fsyncs to the
    caller (an order of thousands of files syncs once at its end). exclusive: never replace an existing file.
    Raises WriteRefused when `path` is a symlink, a device, a FIFO or a folder; FileExistsError when exclusive."""
    path = Path(path)
    check_target(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    # named after the target (a leftover says whose it was), unless that would pass NAME_MAX (255) for a long name
    stem = path.name if len(path.name) <= 200 else path.name[:200]
    tmp = path.with_name(f".{stem}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as out:
            if mode is not None:
                os.fchmod(out.fileno(), mode)  # the umask may have narrowed it
            yield out
            out.flush()
            if durable:
                os.fsync(out.fileno())
        check_target(path)  # it may have changed while we wrote
        if exclusive:
            _link_or_rename(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def _link_or_rename(tmp: Path, path: Path) -> None:
    """Put `tmp` at `path` only if nothing is there. link(2) does it atomically; a filesystem without hard links
    (vfat, exFAT, many FUSE and SMB mounts) gets a check then a rename, with a race no build line can hit."""
    try:
        os.link(tmp, path)  # fails if it exists, where a rename would replace it
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)


def write_atomic(
    path: Path,
    data: bytes | str,
    mode: int | None = None,
    *,
    mkdir: bool = False,
    durable: bool = True,
    exclusive: bool = False,
) -> None:
    """Write `data` to `path` through `atomic_file` (same options)."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_file(path, mode, mkdir=mkdir, durable=durable, exclusive=exclusive) as out:
        out.write(raw)


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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks (disk images are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
