"""What a burn-in boots, checked before any twin starts: OUT's built units (`discover`), the libvirt hosts, the
variable store, the outputs (no earlier burn-in's report or logs replaced without --force), KVM or TCG decided as
`oemkit boot` decides it — a problem here is the CLI's exit 2."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import libvirt

from oemkit.catalog.store import Catalog
from oemkit.errors import OemkitError, OutputRefused, UnreadableInput
from oemkit.inputs import read_input
from oemkit.outputs import check_new
from oemkit.profile.schema import serial_problem
from oemkit.twin import accel as accel_mod
from oemkit.twin import appliance, session, virt, volumes

BURNIN_DIR = ".burnin"  # OUT/.burnin/: never inside a unit's folder, so `image verify` still holds after a burn-in
REPORT = "report.json"
DEFAULT_URI = "qemu:///system"


@dataclass(frozen=True)
class Unit:
    """A built unit folder as found in OUT; `problem` says why it cannot be booted (it is then an ERROR)."""

    serial: str
    folder: Path
    model: str | None
    problem: str | None = None


@dataclass(frozen=True)
class Job:
    """What a burn-in needs, checked."""

    out: Path
    units: tuple[Unit, ...]
    uris: tuple[str, ...]
    parallel: int
    timeout: float
    vars_fd: Path
    catalog: Catalog | None  # None only when the tests inject the boot
    force: bool = False
    accel: str = "tcg"
    accel_why: str = "asked for"
    cleaned: dict[str, list[str]] = field(default_factory=dict)  # by serial: twins an earlier run left, removed

    @property
    def logs(self) -> Path:
        return self.out / BURNIN_DIR

    def console_log(self, unit: Unit) -> Path:
        return self.logs / f"{unit.serial}.console.log"

    @property
    def domain_type(self) -> str:
        return "kvm" if self.accel == "kvm" else "qemu"


def discover(out: Path) -> list[Unit]:
    """OUT's built units, by folder name: each folder holding a manifest.json. The shared caches and our own
    outputs (.base, .uki, .burnin, a line's staging) start with a dot and are never units."""
    units: list[Unit] = []
    seen: dict[str, Path] = {}
    for folder in sorted(out.iterdir(), key=lambda p: p.name):
        if folder.name.startswith(".") or not folder.is_dir() or not (folder / "manifest.json").is_file():
            continue
        try:
            manifest = json.loads(read_input(folder / "manifest.json", "image manifest"))
            serial, model = str(manifest["serial"]), manifest.get("model")
        except (OemkitError, ValueError, KeyError, TypeError, RecursionError) as exc:
            units.append(Unit(folder.name, folder, None, f"{folder / 'manifest.json'}: not an image manifest: {exc}"))
            continue
        # the serial names the console log and the twin's domain: a path in it, or two folders sharing it, would
        # write over another unit's log or destroy another unit's running twin
        problem = serial_problem(serial)
        if problem is not None:
            serial = folder.name  # a name for the report and the table only: this unit is never booted
        elif serial in seen:
            problem = f"serial {serial} is also the unit in {seen[serial]}"
        else:
            seen[serial] = folder
        units.append(Unit(serial, folder, str(model) if model else None, problem and f"{folder}: {problem}"))
    return units


def prepare(
    out: Path,
    uris: Sequence[str],
    *,
    parallel: int,
    timeout: float,
    vars_fd: Path,
    catalog: Catalog | None,
    force: bool = False,
    junit: Path | None = None,
    accel: str = "auto",
) -> Job:
    """Everything checked before any twin starts; OemkitError (the CLI's exit 2) otherwise."""
    if accel not in ("auto", "kvm", "tcg"):
        raise OemkitError(f"--accel must be auto, kvm or tcg, not {accel!r}")
    if parallel < 1:
        raise OemkitError(f"--parallel must be 1 or more, not {parallel}")
    if not out.is_dir():
        raise UnreadableInput("not a folder of built units", file=str(out))
    units = tuple(discover(out))
    if not units:
        raise UnreadableInput("no built units here (folders with a manifest.json)", file=str(out),
                              hint="oemkit line, or oemkit image build -o OUT/<serial>")  # fmt: skip
    if not vars_fd.is_file() or not os.access(vars_fd, os.R_OK):
        raise UnreadableInput("no OVMF variable store", file=str(vars_fd), hint="oemkit keys enroll-vars")
    job = Job(out.absolute(), units, tuple(dict.fromkeys(uris or [DEFAULT_URI])), parallel, timeout, vars_fd,
              catalog, force)  # fmt: skip
    if job.logs.is_symlink() or (job.logs.exists() and not job.logs.is_dir()):
        raise OutputRefused("is not a folder", file=str(job.logs))
    # every output refused now, not after hours of twins: the report, each console log, the JUnit file
    for path in [job.logs / REPORT, *(job.console_log(u) for u in units), *([junit] if junit else [])]:
        check_new(path, force)
    if accel == "auto":
        accel, why = choose_accel(units)
    else:
        why = "asked for"
    return replace(job, accel=accel, accel_why=why)


def choose_accel(units: Sequence[Unit]) -> tuple[str, str]:
    """KVM or TCG as `oemkit boot` decides it for a built unit: no usable /dev/kvm is TCG; else whether KVM runs the
    core's kernel here is asked of that kernel, taken from a unit's image (an order's units share their core)."""
    session.require_qemu()  # before the KVM probe, which runs QEMU
    if not accel_mod.kvm_usable():
        return "tcg", "/dev/kvm is missing or not accessible"
    for unit in units:
        if unit.problem is None:
            try:
                built = appliance.load(unit.folder)
                with tempfile.TemporaryDirectory(prefix="oemkit-burnin-") as tmp:
                    return accel_mod.detect(appliance.kernel_of(built, Path(tmp) / "vmlinuz"))
            except OemkitError:
                continue  # that unit fails on its own later; another may still be read
    return "tcg", "no unit's kernel could be read for the KVM probe"


def check_hosts(uris: Sequence[str], serials: Sequence[str] = ()) -> dict[str, list[str]]:
    """Each libvirt host reachable and its pool ready, before any twin (TwinError otherwise: the CLI's exit 2); and
    the twin of every unit of the order that an earlier, killed run left on any of the hosts removed — a unit may be
    burned in on another host this time. Returns what was removed, by serial. A host down from the start would
    otherwise fail unit after unit: with no twin running, it is always the host with the fewest. Making the pool
    here, once, also keeps a fresh host's first twins from racing to define it."""
    removed: dict[str, list[str]] = {}
    for uri in uris:
        conn = virt.connect(uri)
        try:
            pool = volumes.ensure_pool(conn)
            for serial in serials:
                gone, stuck = volumes.clean(conn, pool, serial)
                if stuck:
                    raise virt.TwinError(f"libvirt at {uri}: a twin an earlier run left cannot be removed: "
                                         f"{'; '.join(stuck)}")  # fmt: skip
                removed.setdefault(serial, []).extend(what if len(uris) == 1 else f"{what} at {uri}" for what in gone)
        except libvirt.libvirtError as exc:
            why = exc.get_error_message()
            raise virt.TwinError(f"libvirt at {uri}: cannot make the pool {volumes.POOL}: {why}") from None
        finally:
            conn.close()
    return removed
