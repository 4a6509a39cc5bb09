"""`oemkit boot`: one unit, one core, one twin — prepare the media, boot, report."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oemkit.boot import twin as tw
from oemkit.boot.configdisk import write_config_iso
from oemkit.boot.runner import BootResult, make_sparse, run
from oemkit.catalog.store import Catalog
from oemkit.errors import OemkitError, UnreadableInput
from oemkit.facts_tree import parse_disks

STATE_LABEL = "OEMKIT-STATE"


@dataclass(frozen=True)
class Plan:
    unit_model: str
    serial: str
    twin: tw.Twin
    unit_json: bytes
    memory_mib: int


def twin_memory_mib(workloads_mib: int) -> int:
    """Room for the unit's workloads plus the core, as a real box has; QEMU only backs what the guest touches, but
    stay below what this host has, so a big profile cannot push the factory machine into swap."""
    want = max(3072, workloads_mib + 2048)
    try:
        with open("/proc/meminfo") as f:
            total_mib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) // 1024
    except (OSError, StopIteration, ValueError):
        return want
    return min(want, max(3072, total_mib - 2048))


def read_unit(path: Path) -> tuple[str, str, object, bytes, int]:
    """(model, serial, datastore rule, raw bytes, workload memory MiB) of a sealed unit config. Its signature is
    the agent's to check: the factory boots exactly what it ships, and a tampered file fails inside, as on a box."""
    from hypervisor_core import config

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableInput(f"cannot read the unit config: {exc.strerror}", file=str(path)) from None
    try:
        cfg = config.load(raw, None)
    except config.ConfigError as exc:
        raise UnreadableInput(f"not a unit config: {exc}", file=str(path)) from None
    return cfg.model, cfg.serial, cfg.storage.datastore, raw, sum(w.memory_mib for w in cfg.workloads)


def plan(unit: Path, catalog: Catalog, as_model: str | None = None, disks: str | None = None) -> Plan:
    model_id, serial, rule, raw, workloads_mib = read_unit(unit)
    box_id = as_model or model_id
    model = catalog.get(box_id)
    if model is None:
        what = "--as-model" if as_model else f"the unit's model (in {unit})"
        raise OemkitError(f"{what} {box_id!r} is not in the catalog", hint="oemkit catalog list")
    if as_model:  # rehearsing another box: give it disks of its own kind, not the unit's
        rule = None
    specs = parse_disks(disks) if disks is not None else tw.disks_for_rule(model, rule)
    return Plan(model_id, serial, tw.twin(model, serial, specs), raw, twin_memory_mib(workloads_mib))


def make_state_disk(path: Path, size_mib: int = 512) -> None:
    """An ext4 filesystem labelled OEMKIT-STATE: the init keeps first boot's work on it across reboots."""
    if shutil.which("mkfs.ext4") is None:
        raise OemkitError("mkfs.ext4 is not installed: it makes the state disk", hint="apt-get install e2fsprogs")
    try:
        make_sparse(path, size_mib << 20)
    except OSError as exc:
        raise OemkitError(f"cannot make the state disk: {exc.strerror}", file=str(path)) from None
    done = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", STATE_LABEL, str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise OemkitError(f"cannot make the state disk: {done.stderr.strip()}", file=str(path))


def require_qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        raise OemkitError("qemu-system-x86_64 is not installed", hint="apt-get install qemu-system-x86")


def boot(
    p: Plan,
    core: Path,
    *,
    accel: str,
    timeout: float,
    log: Path | None = None,
    state_disk: Path | None = None,
    echo: Callable[[str], None] | None = None,
    extra_args: tuple[str, ...] = (),
) -> BootResult:
    """`extra_args` go to QEMU after the twin's own: devices a test attaches to rehearse an odd box."""
    for name in ("vmlinuz", "initrd.img"):
        if not (core / name).is_file():
            raise UnreadableInput(f"not a core: {name} is missing (build one with `oemkit core build`)", file=str(core))
    require_qemu()
    with tempfile.TemporaryDirectory(prefix="oemkit-boot-") as tmp:
        work = Path(tmp)
        paths = []
        for i, disk in enumerate(p.twin.disks):
            paths.append(str(work / f"disk{i}.raw"))
            make_sparse(Path(paths[-1]), disk.size_gib << 30)
        iso = work / "config.iso"
        write_config_iso(iso, p.unit_json)
        if state_disk is not None and not state_disk.exists():
            make_state_disk(state_disk)
        argv = tw.qemu_argv(
            p.twin,
            kernel=str(core / "vmlinuz"),
            initrd=str(core / "initrd.img"),
            disk_paths=paths,
            config_iso=str(iso),
            accel=accel,
            memory_mib=p.memory_mib,
            state_disk=str(state_disk) if state_disk is not None else None,
        ) + list(extra_args)
        try:
            logf = open(log, "w", encoding="utf-8") if log else None  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise OemkitError(f"cannot write the console log: {exc.strerror}", file=str(log)) from None
        try:
            if logf:
                logf.write("# " + " ".join(argv) + "\n")
            return run(argv, timeout, logf, echo)
        finally:
            if logf:
                logf.close()
