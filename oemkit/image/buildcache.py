"""The image build cache: every stage is a folder or file named by its inputs, written under a temporary name and
renamed into place only when complete, so an interrupted build never leaves a half stage that is later trusted.
Files go through the one atomic writer (hypervisor_core/fsutil.py); folders through `building`."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from oemkit.paths import cache_dir

TMP_PREFIX = ".tmp-"


def default_dir() -> Path:
    """$OEMKIT_CORE_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/oemkit/core."""
    env = os.environ.get("OEMKIT_CORE_CACHE")
    return Path(env) if env else cache_dir("core")


def tmp_name(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}-{final.name}")


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success it becomes `final` (a concurrent build that got
    there first wins, ours is dropped); on failure it is removed."""
    tmp = tmp_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(root: Path) -> None:
    """Remove what interrupted builds left: temporaries of processes that no longer exist (two levels deep)."""
    if not root.is_dir():
        return
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))]:
        for leftover in folder.glob(f"{TMP_PREFIX}*"):
            pid = leftover.name[len(TMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)) and int(pid) != os.getpid():
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
