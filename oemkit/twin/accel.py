"""KVM or TCG for the twin: detected by trying, never assumed.

/dev/kvm can open and still be useless: on a host that is itself a guest with a paravirtual KVM, a stock Debian
kernel hangs right after its real-mode setup. So the probe boots the core's own kernel under KVM for a few seconds
and looks for its first console line. The answer is cached per (host kernel, QEMU, core kernel).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import subprocess
import time
from pathlib import Path

from hypervisor_core.fsutil import write_atomic
from oemkit.inputs import read_input
from oemkit.paths import cache_dir

TCG_TTL = 86_400
PROBE_SECONDS = 15.0  # a stock kernel prints "Linux version" within ~1 s under KVM; TCG is not tried here


def _cache_file() -> Path:
    return cache_dir("accel.json")


def _qemu_version() -> str:
    done = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "?"


def _kvm_boots(kernel: Path) -> bool:
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "q35", "-cpu", "host", "-m", "512", "-nographic"]
    argv += ["-nodefaults", "-no-reboot", "-serial", "stdio", "-monitor", "none", "-kernel", str(kernel)]
    argv += ["-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    seen, deadline = b"", time.monotonic() + PROBE_SECONDS
    try:
        while time.monotonic() < deadline and b"Linux version" not in seen:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen = seen[-4096:] + chunk
        return b"Linux version" in seen
    finally:
        proc.kill()
        proc.wait()


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def detect(kernel: Path) -> tuple[str, str]:
    """("kvm" | "tcg", why)."""
    if not kvm_usable():
        return "tcg", "/dev/kvm is missing or not accessible"
    kernel_id = hashlib.sha256(read_input(kernel, "kernel")).hexdigest()
    key = hashlib.sha256(json.dumps([os.uname().release, _qemu_version(), kernel_id]).encode()).hexdigest()[:16]
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError, RecursionError):
        known = {}
    # KVM that worked stays known; a "no" is rechecked after a day, in case a busy host made the probe miss
    if key in known and (known[key]["accel"] == "kvm" or time.time() - known[key].get("at", 0) < TCG_TTL):
        return known[key]["accel"], known[key]["why"] + " (cached)"
    if _kvm_boots(kernel):
        result = {"accel": "kvm", "why": "a probe boot of the core's kernel ran under KVM"}
    else:
        result = {"accel": "tcg", "why": f"the core's kernel printed nothing under KVM in {PROBE_SECONDS:.0f} s"}
    known[key] = {**result, "at": int(time.time())}
    with contextlib.suppress(OSError):  # a read-only home only costs the probe next time
        write_atomic(cache, json.dumps(known, indent=1), mkdir=True)
    return result["accel"], result["why"]
