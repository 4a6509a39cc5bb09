"""The seed of libvirt's QEMU capabilities cache: probed once at build time by booting the finished core, shipped
read-only, installed by the init before libvirtd starts.

Without it libvirt probes QEMU on the first define of every boot (3 s under emulation: twins and burn-in boot the
same emulated CPU thousands of times). The harvest boots the core just built — every part but the seed — under the
twin's TCG machine (q35, `-cpu max`: the CPU a twin emulates on any host) with `oemkit.harvest-caps`, which makes
the init let libvirt probe and print the cache file. The three build-time stamps libvirt checks against the files
(<qemuctime>, <selfctime>, <qemumoddirmtime>) are set to 0 here — the init writes this boot's in — so the seed
depends only on the kernel, QEMU, libvirt and the emulated CPU: two cold builds give the same bytes. It is cached
by the parts the probe depends on, the harvest machine and the host QEMU's version (agent changes keep it).

Where the CPU, kernel or KVM settings differ (a real server, a KVM-accelerated twin), libvirt rejects the seed and
probes as it always did: never wrong, only no faster. The init marks whether the seed was kept."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypervisor_core.fsutil import write_atomic
from oemkit.image.tools import PATH, BuildError, run_tool

SEED_PATH = "/usr/share/oemkit/qemu-capabilities.xml"  # the init's CAPS_SEED
QEMU = "/usr/bin/qemu-system-x86_64"
CACHE_NAME = hashlib.sha256(QEMU.encode()).hexdigest() + ".xml"  # libvirt names the file after the binary's path
STAMPS = ("qemuctime", "selfctime", "qemumoddirmtime")
# the twin's machine under TCG (oemkit/twin/qemu.py): the CPU model is what makes the seed valid in a twin
MACHINE = ["-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "2", "-m", "2048"]
HARVEST_TIMEOUT = 900  # seconds: a TCG boot to libvirtd plus one probe, on a busy build host
BEGIN, END = "OEMKIT-CAPS-BEGIN", "OEMKIT-CAPS-END"


def host_qemu() -> str:
    done = run_tool(["qemu-system-x86_64", "--version"], what="qemu-system-x86_64 --version", text=True)
    return done.stdout.splitlines()[0].strip()


def key(kernel: bytes, raws: dict[str, bytes], qemu_version: str) -> str:
    """What the probe's answer depends on: the kernel, every part but Python and the agent, the machine."""
    h = hashlib.sha256(kernel)
    for name in sorted(raws):
        if name not in ("python", "agent"):
            h.update(name.encode() + hashlib.sha256(raws[name]).digest())
    h.update(json.dumps([MACHINE, qemu_version, STAMPS]).encode())
    return h.hexdigest()[:20]


def normalise(xml: bytes) -> bytes:
    """The stamps that differ per boot set to 0; refuses a file that is not libvirt's QEMU capabilities cache."""
    text = xml.decode()
    if not text.startswith("<qemuCaps>") or f"<emulator>{QEMU}</emulator>" not in text:
        raise BuildError("the harvested capabilities are not libvirt's QEMU cache file")
    for stamp in STAMPS:
        text, n = re.subn(rf"<{stamp}>\d+</{stamp}>", f"<{stamp}>0</{stamp}>", text)
        if n != 1:
            raise BuildError(f"the harvested capabilities have {n} <{stamp}> elements, expected 1")
    return text.encode()


def parse_console(console: str) -> bytes:
    """The cache file the harvest boot printed (base64 between the markers)."""
    match = re.search(rf"^{BEGIN} (\S+)\r?\n(.*?)^{END}", console, re.S | re.M)
    if match is None:
        tail = " | ".join(console.strip().splitlines()[-3:])
        raise BuildError(f"the harvest boot printed no capabilities: {tail or 'no output'}")
    if match.group(1) != CACHE_NAME:
        raise BuildError(f"libvirt wrote {match.group(1)}, the init installs the seed as {CACHE_NAME}")
    try:
        return base64.b64decode("".join(match.group(2).split()), validate=True)
    except binascii.Error as exc:
        raise BuildError(f"the harvested capabilities are garbled on the console: {exc}") from None


def harvest(vmlinuz: Path, initrd: bytes) -> bytes:
    """Boot the core (without a seed) once and return the normalised capabilities XML."""
    with tempfile.NamedTemporaryFile(prefix="oemkit-harvest-", suffix=".img") as image:
        image.write(initrd)
        image.flush()
        cmd = ["qemu-system-x86_64", *MACHINE, "-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio"]
        cmd += ["-monitor", "none", "-kernel", str(vmlinuz), "-initrd", image.name]
        cmd += ["-append", "console=ttyS0 panic=-1 quiet oemkit.harvest-caps"]
        try:
            done = subprocess.run(
                cmd, capture_output=True, timeout=HARVEST_TIMEOUT, env={"PATH": PATH, "LC_ALL": "C.UTF-8"}
            )
        except FileNotFoundError:
            raise BuildError("qemu-system-x86_64 not found: the capabilities harvest boots the core") from None
        except subprocess.TimeoutExpired:
            raise BuildError(f"the capabilities harvest boot did not finish in {HARVEST_TIMEOUT} s") from None
    return normalise(parse_console(done.stdout.decode(errors="replace")))


def seed(
    cache: Path, vmlinuz: Path, raws: dict[str, bytes], initrd: bytes, log: Callable[[str], None]
) -> tuple[bytes, dict]:
    """The seed (cached) and what core.json records about it."""
    version = host_qemu()
    k = key(vmlinuz.read_bytes(), raws, version)
    path = cache / "capseed" / f"{k}.xml"
    if path.is_file():
        xml = path.read_bytes()
    else:
        log("harvesting libvirt's QEMU capabilities: one boot of the new core under TCG (a minute, once)")
        xml = harvest(vmlinuz, initrd)
        write_atomic(path, xml, mkdir=True)
    record = {"path": SEED_PATH, "sha256": hashlib.sha256(xml).hexdigest(), "key": k,
              "harvested_on": {"qemu": version, "machine": " ".join(MACHINE)}}  # fmt: skip
    return xml, record
