"""Running the build host's tools for an image build: a fixed PATH, a located error instead of a traceback."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from oemkit.errors import OemkitError

# Build tools are looked up here, not in the caller's PATH (a sudo or cron PATH may lack /usr/sbin).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHROOT = "/usr/sbin/chroot"


class BuildError(OemkitError):
    """A build step failed (a tool, the network, the archive)."""


def run_tool(cmd: list[str], *, what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a build tool; on failure a BuildError naming the step and the end of its stderr, never a traceback."""
    kwargs.setdefault("capture_output", True)
    env = kwargs.pop("env", None) or {**os.environ, "PATH": PATH, "LC_ALL": "C.UTF-8"}
    try:
        done = subprocess.run(cmd, env=env, check=False, **kwargs)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found") from None
    if done.returncode != 0:
        err = done.stderr if isinstance(done.stderr, str) else (done.stderr or b"").decode(errors="replace")
        tail = " | ".join(line for line in err.strip().splitlines()[-4:])
        raise BuildError(f"{what} failed (exit {done.returncode}): {tail or 'no message'}")
    return done
