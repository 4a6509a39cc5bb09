"""Where a command writes: one policy for every output a person names (`-o`, `--log`).

- An existing output is refused unless the command was given `--force` (then it is replaced, atomically).
- A symlink, a device, a FIFO or a folder is never replaced, with or without `--force`: writing "to" /dev/sda
  or through a link someone planted is not what anybody asked for.
- A file is written whole or not at all (`fsutil.atomic_file`): a refused or interrupted run leaves neither a
  half-written output nor a temporary file.

The exceptions, each for a reason the docs give: `keys init` never replaces a key (not even with --force: rotating
the factory key is a deliberate act), `facts from-dmi` only fills a new or empty folder (it never deletes a tree),
`core build` replaces only an earlier core folder (a build artifact, like make's), `boot --state-disk` reuses its
disk (that is its purpose). Each refuses a link where its output should be.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO

from hypervisor_core.fsutil import WriteRefused, check_target, kind_of, write_atomic
from oemkit.errors import OutputRefused

FORCE_HINT = "give --force to replace it"


def check_new(path: Path, force: bool) -> None:
    """Refuse `path` before any work is done: it exists (unless `force`), or it is not a regular file."""
    try:
        check_target(path)
    except WriteRefused as exc:
        raise OutputRefused(exc.strerror or "not a regular file", file=str(path)) from None
    if not force and os.path.lexists(path):
        raise OutputRefused("exists; refusing to replace it", file=str(path), hint=FORCE_HINT)


def write_output(path: Path, data: bytes | str, *, force: bool, mode: int | None = None, durable: bool = True) -> None:
    """Write `data` to `path` whole, under the policy above; OutputRefused otherwise (nothing written)."""
    try:
        write_atomic(path, data, mode, durable=durable, exclusive=not force)
    except FileExistsError:
        raise OutputRefused("exists; refusing to replace it", file=str(path), hint=FORCE_HINT) from None
    except OSError as exc:  # WriteRefused included: its strerror names what the target is
        raise OutputRefused(f"cannot write: {exc.strerror or exc}", file=str(path)) from None


def sync_filesystem(folder: Path) -> None:
    """Flush the filesystem that holds `folder` (syncfs(2)), not every filesystem of the build host as sync(2)
    would; sync(2) where libc has no syncfs."""
    import ctypes

    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def open_stream(path: Path, *, force: bool) -> TextIO:
    """A text file to stream into (a console log, written as it comes, so it cannot be atomic), under the same
    policy: created exclusively, or truncated with --force; never through a symlink, never onto a device."""
    check_new(path, force)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        raise OutputRefused("exists; refusing to replace it", file=str(path), hint=FORCE_HINT) from None
    except OSError as exc:
        raise OutputRefused(f"cannot write: {exc.strerror or exc}", file=str(path)) from None
    # O_NOFOLLOW refused a link; a device swapped in since check_new is caught on the descriptor itself
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OutputRefused(f"{kind_of(mode)}: refusing to write to it", file=str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "w", encoding="utf-8")
