#!/usr/bin/env python3
"""Boot a core built by build.py under plain QEMU (direct kernel boot) and time it.

    python3 boot.py --core out/xz [--timeout 600] [--start-vm] [--accel auto|tcg|kvm] [--log FILE]

Presents a Dell PowerEdge R650 identity via -smbios, 2 virtio-net NICs at fixed PCI addresses,
a virtio-scsi controller with 2 disks and one virtio-blk disk. Prints a JSON summary with the
host-side wall-clock time of each CORE-T line and of the OEMKIT-PROTO-OK marker.
"""
import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMBIOS = [
    "type=0,vendor=Dell Inc.,version=1.13.2",
    "type=1,manufacturer=Dell Inc.,product=PowerEdge R650,serial=J30ABC12,sku=SKU=0A;ModelName=PowerEdge R650,"
    "family=PowerEdge,uuid=4c4c4544-0030-3310-8041-cac04f424332",
    "type=2,manufacturer=Dell Inc.,product=0Y2G81,serial=.J30ABC12.CNFCP0022B0042.",
    "type=3,manufacturer=Dell Inc.,serial=J30ABC12",
]


def kvm_usable() -> bool:
    """Detect, don't assume: /dev/kvm may exist while a KVM guest cannot run (nested paravirtual host)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        r = subprocess.run(["qemu-system-x86_64", "-accel", "kvm", "-machine", "none", "-nographic",
                            "-monitor", "none", "-serial", "none", "-S"], timeout=3, capture_output=True)
        return r.returncode == 0
    except subprocess.TimeoutExpired:
        return True  # it started and waited (-S): KVM opened; a real boot test is still needed
    # NOTE: on this machine /dev/kvm opens but a Linux guest hangs under KVM, so default accel is tcg.


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--core", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--start-vm", action="store_true")
    ap.add_argument("--log", type=Path)
    ap.add_argument("--mem", default="2048")
    ap.add_argument("--cpu", default="max")
    ap.add_argument("--append-extra", default="")
    ap.add_argument("--no-quiet", action="store_true")
    a = ap.parse_args()
    accel = a.accel
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    tmp = Path(tempfile.mkdtemp(prefix="coreboot-"))
    for name, size in (("sda", 1 << 30), ("sdb", 4 << 30), ("vda", 2 << 30)):
        with open(tmp / f"{name}.raw", "wb") as f:
            f.truncate(size)
    append = "console=ttyS0 panic=-1" + ("" if a.no_quiet else " quiet") + (" core.start=1" if a.start_vm else "")
    append += (" " + a.append_extra) if a.append_extra else ""
    cmd = [
        "qemu-system-x86_64", "-accel", accel, "-machine", "q35", "-cpu", a.cpu, "-smp", "2", "-m", a.mem,
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor", "none",
        "-kernel", str(a.core / "vmlinuz"), "-initrd", str(a.core / "initrd.img"), "-append", append,
    ]
    for s in SMBIOS:
        cmd += ["-smbios", s]
    cmd += [
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,addr=0x3,mac=52:54:00:00:00:10",
        "-netdev", "user,id=n1,restrict=on", "-device", "virtio-net-pci,netdev=n1,addr=0x4,mac=52:54:00:00:00:11",
        "-device", "virtio-scsi-pci,id=scsi0,addr=0x5",
        "-drive", f"if=none,id=d0,format=raw,file={tmp}/sda.raw",
        "-device", "scsi-hd,drive=d0,bus=scsi0.0,scsi-id=0,lun=0,serial=S0SDA0001",
        "-drive", f"if=none,id=d1,format=raw,file={tmp}/sdb.raw",
        "-device", "scsi-hd,drive=d1,bus=scsi0.0,scsi-id=1,lun=0,serial=S0SDB0002",
        "-drive", f"if=none,id=d2,format=raw,file={tmp}/vda.raw",
        "-device", "virtio-blk-pci,drive=d2,addr=0x6,serial=VBLK0003",
    ]
    logf = open(a.log, "w", buffering=1) if a.log else None
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    marks, result, rc_line = {}, None, None
    deadline = t0 + a.timeout
    def lines():
        """stdout lines, giving up at the deadline even if the guest prints nothing."""
        buf = b""
        fd = p.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                if buf:
                    yield buf
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line

    try:
        for raw in lines():
            now = time.monotonic() - t0
            line = raw.decode(errors="replace").rstrip("\r\n")
            for tag in ("CORE-T ", "OEMKIT-PROTO-OK ", "OEMKIT-PROTO-DONE"):
                if tag in line:
                    line = line[line.index(tag):]  # drop terminal escapes printed before it
            if logf:
                logf.write(f"{now:8.3f} {line}\n")
            if line.startswith("CORE-T "):
                f = line.split()
                marks[f[1]] = {"host_s": round(now, 2), "guest_uptime_s": float(f[2])}
            elif line.startswith("OEMKIT-PROTO-OK "):
                result = json.loads(line[len("OEMKIT-PROTO-OK "):])
                marks["marker"] = {"host_s": round(now, 2)}
            elif line.startswith("OEMKIT-PROTO-DONE"):
                rc_line = line
            elif line.startswith(("Traceback", "CORE-W")) or "Error" in line:
                print(line, file=sys.stderr)
            if time.monotonic() > deadline:
                break
        p.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    total = time.monotonic() - t0
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    out = {"accel": accel, "qemu_exit": p.returncode, "total_s": round(total, 2), "marks": marks,
           "done": rc_line, "result": result}
    print(json.dumps(out, indent=1))
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
