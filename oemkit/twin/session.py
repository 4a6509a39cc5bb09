"""`oemkit boot`: one unit, one core, one twin — prepare the media, boot, report."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypervisor_core import config, smbios
from hypervisor_core.fsutil import WriteRefused, check_target
from hypervisor_core.layout import STATE_LABEL
from oemkit.catalog.store import Catalog
from oemkit.errors import OemkitError, OutputRefused, UnreadableInput
from oemkit.hardware.disks import disks_for_rule, parse_disks
from oemkit.inputs import read_input
from oemkit.outputs import open_stream
from oemkit.twin import qemu, uefi
from oemkit.twin.configdisk import write_config_iso
from oemkit.twin.console import BootResult, watch
from oemkit.twin.spec import BootDisk, Twin, twin

CORE_MIB = 2048  # the core itself: kernel, initramfs in RAM, libvirtd, the agent
POWEROFF_WAIT = 15.0  # seconds after the ready line for the core to power off, as the twin's OEM string asks


@dataclass(frozen=True)
class TwinRun:
    """What one `oemkit boot` will boot: the unit, the twin it boots on, and how much memory that twin gets."""

    unit: config.UnitConfig
    unit_json: bytes
    twin: Twin
    memory_mib: int

    def oem_strings(self, poweroff: bool) -> tuple[str, ...]:
        """What the twin tells the core by SMBIOS OEM string: power off when done; overcommit memory when the twin
        has less RAM than the workloads ask (the box has it: the factory machine does not)."""
        wanted = sum(w.memory_mib for w in self.unit.workloads) + CORE_MIB
        return (smbios.POWEROFF,) * poweroff + (smbios.OVERCOMMIT,) * (self.memory_mib < wanted)


def host_memory_mib() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) // 1024
    except (OSError, StopIteration, ValueError):
        return None


def twin_memory_mib(workloads_mib: int, host_mib: int | None) -> int:
    """Room for the unit's workloads plus the core, as a real box has; QEMU only backs what the guest touches, but
    stay below what the host has (when known), so a big profile cannot push the factory machine into swap."""
    want = max(3072, workloads_mib + CORE_MIB)
    return want if host_mib is None else min(want, max(3072, host_mib - 2048))


def read_unit(path: Path) -> tuple[config.UnitConfig, bytes]:
    """A sealed unit config and its bytes. Its signature is the agent's to check: the factory boots exactly what it
    ships, and a tampered file fails inside, as on a box."""
    raw = read_input(path, "unit config")
    return parse_unit(raw, str(path)), raw


def parse_unit(raw: bytes, source: str) -> config.UnitConfig:
    try:
        return config.load(raw, None)
    except config.ConfigError as exc:
        raise UnreadableInput(f"not a unit config: {exc}", file=source) from None


def prepare(
    unit: Path,
    catalog: Catalog,
    as_model: str | None = None,
    disks: str | None = None,
    host_mib: int | None = None,
) -> TwinRun:
    """The twin for `unit` (or, with `as_model`, another model's twin with disks of its own kind)."""
    cfg, raw = read_unit(unit)
    return prepare_config(cfg, raw, str(unit), catalog, as_model, disks, host_mib)


def prepare_config(
    cfg: config.UnitConfig,
    raw: bytes,
    source: str,
    catalog: Catalog,
    as_model: str | None = None,
    disks: str | None = None,
    host_mib: int | None = None,
    box: tuple[str, str] | None = None,
) -> TwinRun:
    """The twin for a unit config read from `source`. `box` (serial, model): the box an appliance image was built
    for, which the twin then is, whatever config the image carries (so a swapped one is refused inside)."""
    serial, model_id = box or (cfg.serial, cfg.model)
    box_id = as_model or model_id
    model = catalog.get(box_id)
    if model is None:
        what = "--as-model" if as_model else f"the unit's model (in {source})"
        raise UnreadableInput(f"{what} {box_id!r} is not in the catalog", hint="oemkit catalog list")
    rule = None if as_model else cfg.storage.datastore
    specs = parse_disks(disks) if disks is not None else disks_for_rule(model, rule)
    memory = twin_memory_mib(sum(w.memory_mib for w in cfg.workloads), host_mib)
    return TwinRun(cfg, raw, twin(model, serial, specs), memory)


def make_sparse(path: Path, size_bytes: int) -> None:
    """A raw disk of the drive's full size that costs no space until written."""
    # created, never opened through a link or over something else: O_EXCL|O_NOFOLLOW
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.truncate(size_bytes)


def check_state_disk(path: Path) -> None:
    """A state disk is a regular file (made here if missing), never a link, a device or a FIFO: QEMU would write
    its filesystem wherever that leads."""
    try:
        check_target(path)
    except WriteRefused as exc:
        raise OutputRefused(f"--state-disk: {exc.strerror}", file=str(path)) from None


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


BOX_FILE = "box.json"  # in a --box folder: the built unit it belongs to


def check_box(box: Path, unit_dir: Path, twin: dict) -> None:
    """A --box folder: made if missing; else a folder (not a link) kept for this very build of this unit on this
    twin — never another unit's, nor one whose image was rebuilt since (its overlays would sit on changed bytes), nor
    a twin of another shape (`twin`: the boot bus, the mirror, the disks)."""
    if box.is_symlink() or (box.exists() and not box.is_dir()):
        raise OutputRefused("--box must be a folder (not a link or a file)", file=str(box))
    manifest = hashlib.sha256(read_input(unit_dir / "manifest.json", "image manifest")).hexdigest()
    mine = json.dumps({"unit": str(unit_dir.resolve()), "manifest_sha256": manifest, "twin": twin}, sort_keys=True)
    record = box / BOX_FILE
    if record.is_file() and not record.is_symlink():
        if read_input(record, "box record", limit=65536) != (mine + "\n").encode():
            raise OutputRefused(f"this box was kept for another unit, build or twin ({record})", file=str(box))
    elif box.exists() and any(box.iterdir()):
        raise OutputRefused("--box folder is not empty and not a twin's box", file=str(box))
    else:
        box.mkdir(parents=True, exist_ok=True)
        (box / BOX_FILE).write_text(mine + "\n")


def _kept(path: Path) -> bool:
    """A file a kept box holds: there, regular, not a link (a link would carry the twin's writes elsewhere)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _datastore_disks(p: TwinRun, work: Path, again: bool = False) -> list[str]:
    """The twin's datastore disks as sparse files in `work` (a 960 GB drive costs nothing until written); `again`:
    the box powered on again, its disks as the last boot left them."""
    paths = []
    for i, disk in enumerate(p.twin.disks):
        paths.append(str(work / f"disk{i}.raw"))
        if not again:
            try:
                make_sparse(Path(paths[-1]), disk.size_gib << 30)
            except OSError as exc:  # e.g. a rule asking for more than this filesystem's largest file (EFBIG)
                raise OemkitError(
                    f"cannot make the twin's {disk.size_gib} GiB {disk.interface} disk: {exc.strerror or exc}",
                    file=paths[-1],
                    hint="give the twin smaller disks with --disks, e.g. sata:ssd:960x2",
                ) from None
    return paths


def _run(
    argv: list[str],
    timeout: float,
    log: Path | None,
    force: bool,
    echo: Callable[[str], None] | None,
    poweroff_wait: float = 0.0,
) -> BootResult:
    """Run the twin, the console followed to its status line; the command line heads the log."""
    logf = open_stream(log, force=force) if log else None
    try:
        if logf:
            logf.write("# " + " ".join(argv) + "\n")
        return watch(argv, timeout, logf, echo, poweroff_wait)
    finally:
        if logf:
            logf.close()


def boot(
    p: TwinRun,
    core: Path,
    *,
    accel: str,
    timeout: float,
    log: Path | None = None,
    state_disk: Path | None = None,
    echo: Callable[[str], None] | None = None,
    extra_args: tuple[str, ...] = (),
    force: bool = False,
) -> BootResult:
    """`extra_args` go to QEMU after the twin's own: devices a test attaches to rehearse an odd box. `force`:
    replace an existing `log` (see oemkit.outputs)."""
    for name in ("vmlinuz", "initrd.img"):
        if not (core / name).is_file():
            raise UnreadableInput(f"not a core: {name} is missing (build one with `oemkit core build`)", file=str(core))
    require_qemu()
    with tempfile.TemporaryDirectory(prefix="oemkit-boot-") as tmp:
        work = Path(tmp)
        paths = _datastore_disks(p, work)
        iso = work / "config.iso"
        write_config_iso(iso, p.unit_json)
        if state_disk is not None:
            check_state_disk(state_disk)
            if not state_disk.exists():
                make_state_disk(state_disk)
        argv = qemu.qemu_argv(
            p.twin,
            kernel=str(core / "vmlinuz"),
            initrd=str(core / "initrd.img"),
            disk_paths=paths,
            config_iso=str(iso),
            accel=accel,
            memory_mib=p.memory_mib,
            state_disk=str(state_disk) if state_disk is not None else None,
            oem_strings=p.oem_strings(poweroff=False),
        ) + list(extra_args)
        return _run(argv, timeout, log, force, echo)


def boot_image(
    p: TwinRun,
    image: Path,
    vars_fd: Path,
    *,
    image_format: str = "raw",
    boot: BootDisk | None = None,
    accel: str,
    timeout: float,
    log: Path | None = None,
    echo: Callable[[str], None] | None = None,
    force: bool = False,
    tpm: bool = True,
    box: Path | None = None,
    guestfwd: str | None = None,
) -> BootResult:
    """Boot an appliance image on the unit's twin as the box boots it: OVMF with Secure Boot and the factory's
    enrolled store (a copy: the firmware writes it), the image on the embedded boot device, no config CD — the
    config is on the image's own partition. The image itself is never written: QEMU gets a throwaway overlay (two,
    for a mirror's halves), as large as the box's boot device when `boot` gives its size, so the state partition
    grows as it would; on the bus `boot` names (a virtio disk by default). `box`: a folder that keeps the twin's
    writable parts (overlays, disks, variable store, TPM state) after the boot, and that a boot given the same
    folder powers on again as the last one left them (the second power-on of a box)."""
    require_qemu()
    with tempfile.TemporaryDirectory(prefix="oemkit-boot-") as tmp:
        work = box or Path(tmp)
        boot = boot or BootDisk(None, "virtio", False, "")
        overlays = [work / f"boot{i}.qcow2" for i in range(2 if boot.mirror else 1)]
        kept = [work / "vars.fd", *overlays, *(work / f"disk{i}.raw" for i in range(len(p.twin.disks)))]
        again = box is not None and (work / "vars.fd").exists()
        if again and not all(_kept(f) for f in kept):
            raise OutputRefused(
                "the box is incomplete or altered (a file missing, or not a regular file)", file=str(box)
            )
        paths = _datastore_disks(p, work, again)
        run_vars = work / "vars.fd"
        if not again:
            shutil.copyfile(vars_fd, run_vars)
        for overlay in [] if again else overlays:  # the shipped bytes never change: writes land here
            done = subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", image_format, "-b", str(image.resolve()),
                 str(overlay), *([str(boot.size)] if boot.size else [])],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise OemkitError(f"cannot make the boot overlay: {done.stderr.strip()}", file=str(image))
        argv = qemu.qemu_argv(
            p.twin,
            kernel=None,
            initrd=None,
            disk_paths=paths,
            config_iso=None,
            accel=accel,
            memory_mib=p.memory_mib,
            firmware=uefi.secure_boot_args(run_vars),
            boot_disk=str(overlays[0]),
            boot_format="qcow2",
            boot_bus=boot.bus,
            boot_mirror=str(overlays[1]) if boot.mirror else None,
            machine=uefi.MACHINE,
            oem_strings=p.oem_strings(poweroff=True),  # power off after the ready line, not idle as a box does
            guestfwd=guestfwd,
        )
        swtpm = None
        try:  # from here every exit (Ctrl-C in the socket wait too) ends the swtpm it started
            if tpm:  # the box's TPM 2.0: swtpm with a fresh state, as a new box's TPM
                (work / "tpm").mkdir(exist_ok=again)
                sock = Path(tmp) / "tpm.sock"  # not in the box: short (AF_UNIX) and never one a killed run left
                swtpm = subprocess.Popen(
                    ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={work / 'tpm'}", "--ctrl",
                     f"type=unixio,path={sock}", "--terminate"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                for _ in range(100):
                    if sock.exists() or swtpm.poll() is not None:
                        break
                    time.sleep(0.05)
                if not sock.exists():
                    raise OemkitError(f"swtpm did not start (exit {swtpm.poll()}): the twin has no TPM")
                argv += uefi.tpm_args(sock)
            return _run(argv, timeout, log, force, echo, poweroff_wait=POWEROFF_WAIT)
        finally:
            if swtpm is not None:
                swtpm.kill()
                swtpm.wait()
