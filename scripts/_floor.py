"""The boot floor for bench_core.py: the core's own kernel on the twin's QEMU machine (no devices attached) with a
busybox-only initramfs whose /init prints one line and powers off. What any userland on that kernel and machine
costs at least: the rest of the core's boot is ours."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import _common  # noqa: F401  (the checkout on sys.path)

from oemkit.image import buildcache
from oemkit.image.core import elf
from oemkit.image.core.cpio import write_newc
from oemkit.image.core.selection import Inode
from oemkit.twin import qemu
from oemkit.twin.session import TwinRun

MARK = "oemkit-floor: userland"
INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
read -r up _ < /proc/uptime
echo "{MARK} t=$up"
/bin/busybox poweroff -f
"""
_LINE = re.compile(re.escape(MARK) + r" t=([0-9.]+)")


def staged_busybox() -> Path:
    """bin/busybox of the core build cache's staged userland (Debian's busybox-static): the newest stage that has
    one, and it must be static, since the floor's initramfs holds nothing else."""
    stage = buildcache.default_dir() / "stage"
    found = [p for p in stage.glob("*/bin/busybox") if p.is_file()]
    if not found:
        raise SystemExit(f"no staged busybox under {stage}/<key>/bin/busybox: build a core first")
    path = max(found, key=lambda p: p.stat().st_mtime)
    d = elf.deps(path.read_bytes())
    if d.interp or d.needed:
        raise SystemExit(f"{path} is not a static busybox (loader {d.interp}, needs {', '.join(d.needed)})")
    return path


def write_initramfs(out: Path, busybox: Path) -> Path:
    """An uncompressed newc cpio: /init, /bin/busybox, /dev/console (PID 1's console, as the core has) and /proc."""
    nodes = {
        "/init": Inode.blob(INIT.encode(), 0o755),
        "/bin/busybox": Inode.file(busybox, 0o755),
        "/dev/console": Inode.chr(5, 1),
        "/proc": Inode.dir(),
    }
    out.write_bytes(write_newc(nodes, 0))
    return out


def argv(run: TwinRun, kernel: Path, initrd: Path, accel: str) -> list[str]:
    """The twin's own command line (accel, q35, -cpu, memory, console, -no-reboot, kernel arguments, SMBIOS) minus
    its NICs, disks and config CD."""
    bare = replace(run.twin, nics=(), disks=())
    return qemu.qemu_argv(
        bare,
        kernel=str(kernel),
        initrd=str(initrd),
        disk_paths=[],
        config_iso=None,
        accel=accel,
        memory_mib=run.memory_mib,
    )


def boot(cmd: list[str], timeout: float = 300.0) -> dict[str, float]:
    """Wall seconds from QEMU start to the marker line ("marker") and to QEMU's exit ("exit"), and the guest's
    uptime at the marker ("uptime")."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd, buf, tail = proc.stdout.fileno(), b"", []
    marker: float | None = None
    uptime: float | None = None
    try:
        while True:
            left = started + timeout - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").replace("\r", "").rstrip()
                tail = [*tail, line][-20:]
                hit = _LINE.search(line)
                if hit and marker is None:
                    marker, uptime = time.monotonic() - started, float(hit.group(1))
        code = proc.wait(max(1.0, started + timeout - time.monotonic()))
        end = time.monotonic() - started
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if marker is None or code is None:
        how = "no exit" if code is None else f"QEMU exit {code}"
        raise SystemExit(f"floor boot: no marker line or no exit within {timeout:.0f} s ({how}):\n" + "\n".join(tail))
    return {"marker": marker, "exit": end, "uptime": uptime or 0.0}
