"""A twin as a libvirt domain: defined on any libvirt URI, the unit's appliance image booted on it, its console
followed to the agent's status, and nothing left behind.

Per twin — named `domain.domain_name(serial)`, so a twin left by a crashed or killed run is found and cleaned, never
duplicated — in the libvirt host's dir pool `oemkit-twins`:
- `<name>-image.raw`: the unit's image as the box's boot device holds it, uploaded through libvirt (a qcow2 unit is
  flattened first): the shipped file is only read, and the bytes booted are hashed on the way;
- `<name>-boot.qcow2` (and `-boot1.qcow2`, a VROC mirror's other half): a copy-on-write overlay on it as large as the
  model's boot device, where every write of the boot lands (the state, a blessing);
- `<name>-disk<i>.raw`: the datastore disks, sparse; `<name>-vars.fd`: the OEM-enrolled variable store the domain's
  NVRAM starts from; `<name>-console.log`: libvirt's log of the serial console.
The NVRAM and TPM state are libvirt's own, removed with the domain (undefine with the NVRAM and TPM flags). With
`keep`, all of it stays (the twin shut off) to be looked at; the next run for the serial cleans it first.
The console is read through libvirt (virDomainOpenConsole), so a remote burn-in host works as the local one does.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import libvirt

from oemkit.errors import OemkitError
from oemkit.image.tools import PATH
from oemkit.twin import domain
from oemkit.twin.appliance import BuiltUnit
from oemkit.twin.console import BootResult, follow
from oemkit.twin.session import TwinRun
from oemkit.twin.spec import BootDisk

POOL = "oemkit-twins"
POOL_DIR = domain.TWINS_DIR
CHUNK = 1 << 20
POWEROFF_WAIT = 60.0  # after the ready line, for the core to power the twin off as its OEM string asked
UNDEFINE = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)  # fmt: skip


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr, also the expected ones (no such domain yet): each is
    raised as libvirtError and reported by us, once."""


libvirt.registerErrorHandler(_quiet, None)


class TwinError(OemkitError):
    """libvirt could not run the twin (unreachable, a define, a volume, a start refused): an infrastructure failure,
    reported apart from a first boot that FAILED."""


@dataclass
class VirtRun:
    """One boot of a unit on a libvirt twin: the agent's result and what the run did around it."""

    result: BootResult
    uri: str
    name: str
    disk_sha256: str  # the boot device's bytes the twin booted (the flattened image)
    cleaned: list[str] = field(default_factory=list)  # what an earlier run had left, removed first
    kept: bool = False


def connect(uri: str) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise TwinError(f"cannot connect to {uri}: {exc.get_error_message()}") from None


def ensure_pool(conn: libvirt.virConnect) -> libvirt.virStoragePool:
    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        xml = f"<pool type='dir'><name>{POOL}</name><target><path>{POOL_DIR}</path></target></pool>"
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    return pool


def _ours(serial: str) -> re.Pattern[str]:
    """Exactly this twin's volumes: a prefix alone would also match another serial's (J30BER01 vs J30BER01-X)."""
    parts = r"(image\.raw|boot1?\.qcow2|disk\d+\.raw|vars\.fd|console\.log)"
    return re.compile(re.escape(domain.volume_name(serial, "")) + parts)


def clean(conn: libvirt.virConnect, pool: libvirt.virStoragePool, serial: str) -> list[str]:
    """Remove the twin of `serial` — domain (stopped first), NVRAM, TPM state, volumes — if any of it exists."""
    name = domain.domain_name(serial)
    removed = []
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        dom = None
    if dom is not None:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(UNDEFINE)
        removed.append(f"domain {name}")
    pool.refresh(0)
    for vol in pool.listAllVolumes(0):
        if _ours(serial).fullmatch(vol.name()):
            vol.delete(0)
            removed.append(vol.name())
    return removed


def _volume(pool: libvirt.virStoragePool, name: str, capacity: int, fmt: str, backing: str | None = None) -> Any:
    back = f"<backingStore><path>{backing}</path><format type='raw'/></backingStore>" if backing else ""
    xml = (f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity><allocation>0</allocation>"
           f"<target><format type='{fmt}'/></target>{back}</volume>")  # fmt: skip
    return pool.createXML(xml, 0)


def _upload(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, path: Path) -> tuple[Any, str]:
    """A new raw volume holding `path`'s bytes; their sha256."""
    size = path.stat().st_size
    vol = _volume(pool, name, size, "raw")
    digest = hashlib.sha256()
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)

    def chunk(_stream: Any, nbytes: int, fh: IO[bytes]) -> bytes:
        data = fh.read(min(nbytes, CHUNK))
        digest.update(data)
        return data

    with path.open("rb") as fh:
        stream.sendAll(chunk, fh)
    stream.finish()
    return vol, digest.hexdigest()


def _raw(built: BuiltUnit, work: Path) -> Path:
    """The unit's image as raw bytes (a qcow2 one through its backing file), read-only."""
    if built.fmt == "raw":
        return built.image
    out = work / "image.raw"
    argv = ["qemu-img", "convert", "-f", built.fmt, "-O", "raw", str(built.image), str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env={"PATH": PATH, "LC_ALL": "C.UTF-8"}, check=False)
    if done.returncode != 0:
        raise TwinError(f"cannot read the image: {done.stderr.strip()}", file=str(built.image))
    return out


class Cancelled(Exception):
    """The run was asked to stop (a burn-in interrupted): the twin is destroyed and cleaned on the way out."""


class DomainMachine:
    """A started domain as the console follower sees it (oemkit.twin.console.Machine): the serial console through
    a libvirt stream, read by a thread so a silent guest never blocks the deadline."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, cancel: threading.Event | None) -> None:
        self.dom = dom
        self.cancel = cancel
        self.stream = conn.newStream(0)
        dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self.chunks: queue.Queue[bytes] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                data = self.stream.recv(65536)
                if isinstance(data, int):  # -2: nothing yet (non-blocking only); -1: an error
                    if data == -2:
                        continue
                    break
                if not data:
                    break
                self.chunks.put(data)
        except libvirt.libvirtError:
            pass
        self.chunks.put(b"")

    def read(self, timeout: float) -> bytes | None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("interrupted")
        try:
            return self.chunks.get(timeout=min(timeout, 0.5))
        except queue.Empty:
            return None

    def running(self) -> bool:
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError:
            return False

    def wait(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while self.running():
            if time.monotonic() >= end:
                return None
            time.sleep(0.2)
        try:
            state, reason = self.dom.state()
        except libvirt.libvirtError:
            return 1
        return 0 if (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN) else 1

    def stop(self) -> None:
        if self.running():
            with contextlib.suppress(libvirt.libvirtError):
                self.dom.destroy()
        self.reader.join(5)


def boot(
    run: TwinRun,
    built: BuiltUnit,
    device: BootDisk,
    vars_fd: Path,
    *,
    uri: str,
    domain_type: str,
    timeout: float,
    keep: bool = False,
    log: IO[str] | None = None,
    echo: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> VirtRun:
    """Boot `built` on its twin at `uri` and follow it to the agent's status; clean up unless `keep`. Setting
    `cancel` (from another thread) stops it within a second: Cancelled is raised after the twin is cleaned."""
    conn = connect(uri)
    name = domain.domain_name(built.serial)
    try:
        pool = ensure_pool(conn)
        cleaned = clean(conn, pool, built.serial)
        if cleaned and note:
            note(f"cleaned a twin an earlier run left: {', '.join(cleaned)}")
        try:
            vol = functools.partial(domain.volume_name, built.serial)
            with tempfile.TemporaryDirectory(prefix="oemkit-twin-") as tmp:
                image, sha = _upload(conn, pool, vol("image.raw"), _raw(built, Path(tmp)))
            size = max(device.size or 0, image.info()[1])
            halves = [_volume(pool, vol(f"boot{i or ''}.qcow2"), size, "qcow2", image.path())
                      for i in range(2 if device.mirror else 1)]  # fmt: skip
            disks = [_volume(pool, vol(f"disk{i}.raw"), d.size_gib << 30, "raw") for i, d in enumerate(run.twin.disks)]
            template, _ = _upload(conn, pool, vol("vars.fd"), vars_fd)
            paths = domain.DomainPaths(
                boot=halves[0].path(),
                boot_mirror=halves[1].path() if device.mirror else None,
                disks=tuple(d.path() for d in disks),
                nvram_template=template.path(),
                nvram=None,
                console_log=f"{POOL_DIR}/{vol('console.log')}",
            )
            xml = domain.domain_xml(run.twin, device, paths, domain_type=domain_type, memory_mib=run.memory_mib,
                                    oem_strings=run.oem_strings(poweroff=True))  # fmt: skip
            dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)  # the console is open before the first byte
            machine = DomainMachine(conn, dom, cancel)
            started = time.monotonic()
            dom.resume()
        except BaseException as exc:  # a libvirt refusal, or Ctrl-C while uploading: no half-made twin stays
            if not keep:
                clean(conn, pool, built.serial)
            if isinstance(exc, libvirt.libvirtError):
                raise TwinError(f"libvirt at {uri} could not run the twin {name}: {exc.get_error_message()}") from None
            raise
        try:
            result = follow(machine, started, timeout, log, echo, POWEROFF_WAIT, label="domain")
        finally:
            machine.stop()
            if not keep:
                clean(conn, pool, built.serial)
        return VirtRun(result, uri, name, sha, cleaned, keep)
    except libvirt.libvirtError as exc:
        raise TwinError(f"libvirt at {uri}: {exc.get_error_message()}") from None
    finally:
        conn.close()
