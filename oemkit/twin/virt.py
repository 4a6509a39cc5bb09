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
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import libvirt

from oemkit.errors import OemkitError
from oemkit.twin import domain, volumes
from oemkit.twin.appliance import BuiltUnit
from oemkit.twin.console import BootResult, follow
from oemkit.twin.session import TwinRun
from oemkit.twin.spec import BootDisk

POWEROFF_WAIT = 60.0  # after the ready line, for the core to power the twin off as its OEM string asked
# a fresh NVRAM from the template even if a file of that name survived (libvirt >= 8.1)
START = libvirt.VIR_DOMAIN_START_PAUSED | getattr(libvirt, "VIR_DOMAIN_START_RESET_NVRAM", 0)


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
    cleanup_failed: list[str] = field(default_factory=list)  # what could not be removed afterwards, and why


def connect(uri: str) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise TwinError(f"cannot connect to {uri}: {exc.get_error_message()}") from None


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
            if time.monotonic() >= end or (self.cancel is not None and self.cancel.is_set()):
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
        with contextlib.suppress(libvirt.libvirtError):
            self.stream.abort()  # ends a recv that would otherwise wait on a connection gone silent
        self.reader.join(5)


def _clean_after(conn: libvirt.virConnect, uri: str, serial: str) -> list[str]:
    """Remove the twin after its run, on a fresh connection when this one died (a qemu+ssh:// tunnel killed by the
    same Ctrl-C): what could not be removed, and why."""
    try:
        if not conn.isAlive():
            raise libvirt.libvirtError("the connection is gone")
        return volumes.clean(conn, volumes.ensure_pool(conn), serial)[1]
    except libvirt.libvirtError:
        try:
            fresh = connect(uri)
        except TwinError as exc:
            return [str(exc)]
        try:
            return volumes.clean(fresh, volumes.ensure_pool(fresh), serial)[1]
        except libvirt.libvirtError as exc:
            return [exc.get_error_message()]
        finally:
            fresh.close()


def _make(conn: libvirt.virConnect, pool: Any, run: TwinRun, built: BuiltUnit, device: BootDisk, vars_fd: Path,
          domain_type: str) -> tuple[libvirt.virDomain, str]:  # fmt: skip
    """The twin's volumes and its domain, defined (not started); the sha256 of the boot device's bytes."""
    vol = functools.partial(domain.volume_name, built.serial)
    with tempfile.TemporaryDirectory(prefix="oemkit-twin-") as tmp:
        image, sha = volumes.upload(conn, pool, vol("image.raw"), volumes.raw_image(built, Path(tmp)))
    size = max(device.size or 0, image.info()[1])
    halves = [volumes.volume(pool, vol(f"boot{i or ''}.qcow2"), size, "qcow2", image.path())
              for i in range(2 if device.mirror else 1)]  # fmt: skip
    disks = [volumes.volume(pool, vol(f"disk{i}.raw"), d.size_gib << 30, "raw") for i, d in enumerate(run.twin.disks)]
    template, _ = volumes.upload(conn, pool, vol("vars.fd"), vars_fd)
    console = volumes.volume(pool, vol("console.log"), 0, "raw")  # libvirt's log appends to it: a known volume
    paths = domain.DomainPaths(
        boot=halves[0].path(),
        boot_mirror=halves[1].path() if device.mirror else None,
        disks=tuple(d.path() for d in disks),
        nvram_template=template.path(),
        nvram=None,
        console_log=console.path(),
    )
    xml = domain.domain_xml(run.twin, device, paths, domain_type=domain_type, memory_mib=run.memory_mib,
                            oem_strings=run.oem_strings(poweroff=True))  # fmt: skip
    return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE), sha


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
    """Boot `built` on its twin at `uri` and follow it to the agent's status; clean up unless `keep` (a kept twin
    is always stopped). Setting `cancel` (from another thread) stops it within a second: Cancelled is raised after
    the twin is cleaned. TwinError when libvirt cannot run the twin; UnreadableInput for an image it cannot read."""
    conn = connect(uri)
    name = domain.domain_name(built.serial)
    dom = None
    try:
        try:
            pool = volumes.ensure_pool(conn)
            cleaned, stuck = volumes.clean(conn, pool, built.serial)
            if stuck:
                raise TwinError(f"libvirt at {uri}: a twin an earlier run left cannot be removed: {'; '.join(stuck)}")
            if cleaned and note:
                note(f"cleaned a twin an earlier run left: {', '.join(cleaned)}")
            dom, sha = _make(conn, pool, run, built, device, vars_fd, domain_type)
            dom.createWithFlags(START)  # paused: the console is open before the first byte
            machine = DomainMachine(conn, dom, cancel)
            started = time.monotonic()
            dom.resume()
        except BaseException as exc:  # a libvirt refusal, a bad image, Ctrl-C while uploading: no twin runs on
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
            if not keep:
                _clean_after(conn, uri, built.serial)
            if isinstance(exc, libvirt.libvirtError):
                raise TwinError(f"libvirt at {uri} could not run the twin {name}: {exc.get_error_message()}") from None
            raise
        try:
            result = follow(machine, started, timeout, log, echo, POWEROFF_WAIT, label="domain")
        finally:
            machine.stop()
            failed = [] if keep else _clean_after(conn, uri, built.serial)
            if failed and note:
                note(f"could not remove all of the twin {name}: {'; '.join(failed)}")
        return VirtRun(result, uri, name, sha, cleaned, keep, failed)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
