"""A built unit folder (OUT/<serial>, from `oemkit image build`) as `oemkit boot` boots it: the image, its format,
the manifest's predictions, and the unit config read from the image's own config partition — what the box will
read, not a copy beside it. The twin is the box the image was built for (the manifest's serial and model): an image
carrying another unit's config is then refused inside, by the agent, as it would be on the box."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypervisor_core import bank
from hypervisor_core.layout import CONFIG_NAME, CONFIG_PART_NAME
from oemkit.catalog.schema import HardwareModel
from oemkit.errors import OemkitError, UnreadableInput
from oemkit.image.appliance.fit import GB, state_may_live_on
from oemkit.image.appliance.verify import partitions
from oemkit.image.tools import PATH
from oemkit.inputs import read_input
from oemkit.profile.schema import serial_problem
from oemkit.twin.spec import BootDisk

FORMATS = ("qcow2", "raw")
CONFIG_PARTITION = CONFIG_PART_NAME  # its GPT name
GPT_BYTES = 34 * 512  # protective MBR, header, 128 entries: where the primary GPT ends


@dataclass(frozen=True)
class BuiltUnit:
    folder: Path
    manifest: dict
    image: Path
    fmt: str
    config: bytes  # the unit config on the image's config partition

    @property
    def serial(self) -> str:
        return str(self.manifest["serial"])

    @property
    def pcr15_expected(self) -> str | None:
        value = self.manifest.get("pcr15_expected")
        return str(value) if value else None


def _guest_bytes(image: Path, fmt: str, offset: int, length: int, dest: Path) -> Path:
    """`length` bytes from `offset` of the disk the guest sees (for qcow2: through its backing file) into `dest`."""
    sector = 512
    skip = offset // sector
    # qemu-img dd (7.2) counts `count` from the start of the input, not from `skip`: the end block, then
    done = subprocess.run(
        ["qemu-img", "dd", "-f", fmt, "-O", "raw", f"bs={sector}", f"skip={skip}",
         f"count={skip + -(-length // sector)}", f"if={image}", f"of={dest}"],
        capture_output=True, text=True, env={"PATH": PATH, "LC_ALL": "C.UTF-8"}, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise UnreadableInput(f"cannot read the image: {done.stderr.strip()}", file=str(image))
    return dest


def config_from_image(image: Path, fmt: str) -> bytes:
    """The unit config as the init will find it: unit.json on the FAT partition named oemkit-config."""
    with tempfile.TemporaryDirectory(prefix="oemkit-unit-") as tmp:
        head = _guest_bytes(image, fmt, 0, GPT_BYTES, Path(tmp) / "gpt.raw")
        parts = partitions(head)
        if CONFIG_PARTITION not in parts:
            raise UnreadableInput(f"the image has no {CONFIG_PARTITION} partition", file=str(image))
        start, size = parts[CONFIG_PARTITION]
        fat = _guest_bytes(image, fmt, start, size, Path(tmp) / "config.img")
        dest = Path(tmp) / CONFIG_NAME
        done = subprocess.run(
            ["mcopy", "-n", "-i", str(fat), f"::/{CONFIG_NAME}", str(dest)], capture_output=True, text=True,
            env={"PATH": PATH, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not dest.is_file():
            raise UnreadableInput(f"no {CONFIG_NAME} on the image's config partition", file=str(image))
        return read_input(dest, "unit config")


def load(folder: Path) -> BuiltUnit:
    """A built unit folder: manifest.json and the image it names. Refused, located, when it is not one."""
    try:
        manifest = json.loads(read_input(folder / "manifest.json", "image manifest"))
        files = manifest["files"]
        fmt = manifest.get("format") or next(f for f in FORMATS if f"appliance.{f}" in files)
        serial = str(manifest["serial"])
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise UnreadableInput(f"not an image manifest: {exc}", file=str(folder / "manifest.json")) from None
    problem = serial_problem(serial)  # it names the twin's domain, volumes and files: only a well-formed one
    if problem is not None:
        raise UnreadableInput(f"not an image manifest: {problem}", file=str(folder / "manifest.json"))
    if fmt not in FORMATS:
        raise UnreadableInput(f"image format {fmt!r} is not one of {', '.join(FORMATS)}", file=str(folder))
    image = folder / f"appliance.{fmt}"
    if image.is_symlink() or not image.is_file():
        raise UnreadableInput(f"no appliance.{fmt} (a regular file) beside the manifest", file=str(folder))
    return BuiltUnit(folder, manifest, image, fmt, config_from_image(image, fmt))


def kernel_of(unit: BuiltUnit, dest: Path) -> Path:
    """The Linux kernel inside the image's UKIs (the .linux section of one of them), for the KVM probe: whether
    KVM can run the core's kernel here is asked of that kernel (oemkit.twin.accel)."""
    with tempfile.TemporaryDirectory(prefix="oemkit-kernel-") as tmp:
        head = _guest_bytes(unit.image, unit.fmt, 0, GPT_BYTES, Path(tmp) / "gpt.raw")
        parts = partitions(head)
        if "ESP" not in parts:
            raise UnreadableInput("the image has no ESP partition", file=str(unit.image))
        esp = _guest_bytes(unit.image, unit.fmt, *parts["ESP"], Path(tmp) / "esp.img")
        env = {"PATH": PATH, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}
        (Path(tmp) / "ukis").mkdir()
        subprocess.run(["mcopy", "-n", "-i", str(esp), "::/EFI/Linux/*.efi", str(Path(tmp) / "ukis")],
                       capture_output=True, env=env, check=False)  # fmt: skip
        default = bank_name(unit.manifest)
        ukis = sorted((Path(tmp) / "ukis").iterdir(), key=lambda p: p.name.lower() != default.lower())
        if not ukis:
            raise UnreadableInput("the image's ESP holds no UKI in /EFI/Linux", file=str(unit.image))
        done = subprocess.run(["objcopy", "--dump-section", f".linux={dest}", str(ukis[0]), str(Path(tmp) / "x")],
                              capture_output=True, text=True, env=env, check=False)  # fmt: skip
        if done.returncode != 0 or not dest.is_file():
            raise UnreadableInput(f"{ukis[0].name} has no .linux section: {done.stderr.strip()}", file=str(unit.image))
    return dest


def boot_device(model: HardwareModel) -> BootDisk:
    """The model's embedded boot device as the twin gives it. A fixed one (BOSS, M.2, NVMe boot kit) at its smallest
    marketed size, so the image's state partition grows as on the box. Flash (IDSDM, SD, microSD kits, USB keys:
    each presents itself to the host as USB mass storage) as a USB disk of the image's size, where the core refuses
    state and first boot moves it to the datastore. A VROC mirror as two identical disks."""
    fixed = [(min(d.capacities_gib), d.name) for d in model.boot_devices if state_may_live_on(d) and d.capacities_gib]
    if fixed:
        size, name = min(fixed)
        return BootDisk(size * GB, "virtio", False, f"the embedded boot device is a {size} GB {name}")
    raid = [d for d in model.boot_devices if d.host_raid and d.capacities_gib]
    if raid:
        size = min(raid[0].capacities_gib)
        return BootDisk(size * GB, "virtio", True,
                        f"the embedded boot device is {raid[0].name}: two {size} GB halves, as the core sees them "
                        "without the host's software RAID")  # fmt: skip
    flash = next((d.name for d in model.boot_devices), "none")
    return BootDisk(None, "usb", False, f"the embedded boot device is {flash}: a USB disk of the image's size")


def bank_name(manifest: dict) -> str:
    """The UKI the firmware boots first: the highest generation that still has tries (hypervisor_core/bank.py)."""
    entries = [bank.parse(str(e.get("name", ""))) for e in (manifest.get("banks") or {}).values()]
    usable = [e for e in entries if e is not None and (e.tries_left is None or e.tries_left > 0)]
    return max(usable, key=lambda e: e.generation).name if usable else ""


def pcr15_matches(expected: str | None, measured: str | None) -> bool | None:
    """Whether the box measured the config the factory built this image with. The twin always has a TPM, so a
    status without a measurement is no match (False); None only when the manifest predicts nothing."""
    if not expected:
        return None
    return bool(measured) and expected.lower() == str(measured).lower()


def require_tools() -> None:
    for tool in ("qemu-img", "mcopy", "swtpm"):
        if shutil.which(tool, path=PATH) is None:
            raise OemkitError(f"{tool} is not installed", hint="bash scripts/setup.sh")
