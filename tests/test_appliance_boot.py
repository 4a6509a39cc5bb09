"""The appliance image boots as a box boots it: OVMF with Secure Boot and the factory's keys, swtpm, the unit's
twin, `oemkit boot OUT/<serial>`. In CI (four boots): a unit on its real site (Secure Boot and TPM required) READY
on bank A with the PCR 15 the factory predicted; a UKI signed by another key refused by the firmware; an image
carrying another unit's (validly signed) config refused by the agent and flagged by PCR 15; an upgrade booted on
trial and blessed. Heavy (scripts/test-heavy.sh): the rollback after three failed boots of a broken core, and the
other two example profiles READY on their own vendors' twins. Real OVMF, Authenticode, FAT/GPT, swtpm; TCG."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.image.appliance import disk, uki
from oemkit.image.appliance.verify import partitions
from oemkit.seal import secureboot
from oemkit.twin import uefi

from .conftest import REPO
from .core_fixtures import derived_core
from .firstboot_kit import compile_to

pytestmark = pytest.mark.slow
TEST_KEYS = REPO / "tests" / "data" / "keys"
runner = CliRunner()
EPOCH = 1_700_000_000


def _keys(folder: Path) -> secureboot.SecureBootKeys:
    result = runner.invoke(app, ["keys", "init", "--dir", str(folder), "--secure-boot"])
    assert result.exit_code == 0, result.output
    return secureboot.load(folder)


def _disk(efi: Path, work: Path) -> Path:
    esp = disk.fat_image(work / "esp.img", 96, "ESP", "0E5A0001", {"/EFI/BOOT/BOOTX64.EFI": efi}, EPOCH)
    guid = "6f3a2c1e-0000-4000-8000-00000000000"
    return disk.gpt_disk(
        work / "disk.raw", guid + "1", [disk.Partition("ESP", disk.ESP_TYPE, guid + "2", esp, 96)], EPOCH
    )


def _boot_until(image: Path, vars_fd: Path, patterns: tuple[str, ...], timeout: float = 240) -> str:
    """Boot `image` under Secure Boot until a line holds one of `patterns`; the console so far."""
    run_vars = image.with_suffix(".vars")
    shutil.copyfile(vars_fd, run_vars)  # the firmware writes its store: a copy per boot
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-machine", uefi.MACHINE, "-cpu", "max", "-m", "2048",
           "-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio", "-monitor", "none",
           *uefi.secure_boot_args(run_vars), *uefi.boot_disk_args(image)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    out, end = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < end and not any(p.encode() in out for p in patterns):
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        proc.kill()
        proc.wait()
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> tuple[secureboot.SecureBootKeys, Path]:
    """The tests' config-signing key (the session's core carries its public half) plus new Secure Boot keys."""
    folder = tmp_path_factory.mktemp("factory")
    for name in ("signing.key", "signing.pub"):
        shutil.copyfile(TEST_KEYS / name, folder / name)
    keys = _keys(folder)
    vars_fd = folder / "VARS.fd"
    assert runner.invoke(app, ["keys", "enroll-vars", "--dir", str(folder), "-o", str(vars_fd)]).exit_code == 0
    return keys, vars_fd


def test_a_uki_signed_by_another_key_is_refused(core_dir: Path, factory, tmp_path: Path) -> None:
    _, vars_fd = factory
    stranger = _keys(tmp_path / "stranger")  # a valid signature, by a key the box does not trust
    efi = uki.build(core_dir, tmp_path / "s", stranger)
    console = _boot_until(_disk(efi, tmp_path), vars_fd, ("oemkit-core: init", "Access Denied"))
    assert "Access Denied" in console and "oemkit-core" not in console, console[-2000:]


def _build(unit: Path, core: Path, keys_dir: Path, out: Path, *extra: str) -> dict:
    args = ["image", "build", str(unit), "--core", str(core), "--keys", str(keys_dir), "-o", str(out), *extra]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _boot(unit_dir: Path, vars_fd: Path, log: Path, *extra: str) -> tuple[int, dict, str]:
    """`oemkit boot OUT/<serial> --json`: exit code, the JSON, the console. Retried once, and only, when the twin's
    own kernel stalled in a soft lockup (seen once in ~25 image boots here, in libvirtd starting a nested workload:
    TCG emulating the workloads' KVM, not the core); the stalled console is kept beside the log."""
    args = ["boot", str(unit_dir), "--vars", str(vars_fd), "--accel", "tcg", "--timeout", "600", "--log", str(log),
            "--qemu", *extra]  # fmt: skip
    for attempt in (1, 2):
        result = runner.invoke(app, [*args, "--json"])
        console = log.read_text()
        if attempt == 1 and result.exit_code == 3 and "soft lockup" in console:
            log.rename(log.with_suffix(".soft-lockup.txt"))
            print(f"the emulated twin stalled (soft lockup), booting again: {log.with_suffix('.soft-lockup.txt')}")
            continue
        break
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout), console


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def order(core_dir: Path, factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two retail units on their real site (Berlin: Secure Boot and TPM required), built as raw images."""
    keys, _ = factory
    out = tmp_path_factory.mktemp("order")
    for serial in ("J30BER01", "J30BER02"):
        unit = out / f"{serial}.json"
        compile_to(REPO / "profiles" / "retail-branch.yaml", REPO / "profiles" / "sites" / "retail-ber01.yaml",
                   serial, unit)  # fmt: skip
        _build(unit, core_dir, keys.folder.parent, out, "--format", "raw")
    return out


def test_a_unit_on_its_real_site_boots_ready_from_its_image(order: Path, factory, tmp_path: Path) -> None:
    """READY under Secure Boot + TPM with no relaxed site; the config read from the image's own partition; the state
    partition grown to the boot device's end; bank A; PCR 15 as the factory predicted, compared on the host; the
    twin powered off as its OEM string asked; the image's bytes unchanged (booted through a throwaway overlay), and
    `image verify` still passes."""
    keys, vars_fd = factory
    unit_dir = order / "J30BER01"
    image = unit_dir / "appliance.raw"
    before = _sha(image)
    code, doc, console = _boot(unit_dir, vars_fd, tmp_path / "console.txt")
    assert (code, doc["status"], doc["reason"]) == (0, "READY", None), console[-3000:]
    assert (doc["model"], doc["serial"], doc["twin"]) == ("dell-poweredge-r650", "J30BER01", "dell-poweredge-r650")
    assert doc["bank"] == "a" and doc["boots"] == 1 and doc["core_failures"] == []
    assert doc["pcr15"] == doc["pcr15_expected"] and doc["pcr15_match"] is True
    assert doc["powered_off"] is True  # the SMBIOS OEM string, since the signed command line cannot carry it
    assert " from /dev/vda2" in console.split("oemkit-core: config t=", 1)[1].splitlines()[0]  # no CD
    # the state partition, on the twin's 240 GB boot disk (the R650's smallest BOSS-S2), grown to its end and used
    grow = r"oemkit-core: grow t=\S+ /dev/vda3 grown to [\d,]+ bytes \(to the end of /dev/vda\); /run/oemkit/state"
    assert re.search(grow + r" grown to [\d,]+ bytes", console), console[-3000:]
    assert re.search(r"oemkit-core: state t=\S+ persistent on /dev/vda3", console)
    # (Secure Boot on is proven by READY itself: the Berlin site requires it, and the agent checks the firmware's)
    assert _sha(image) == before
    verified = runner.invoke(app, ["image", "verify", str(unit_dir), "--keys", str(keys.folder.parent)])
    assert verified.exit_code == 0, verified.output


def test_an_image_carrying_another_units_config_is_refused(order: Path, factory, tmp_path: Path) -> None:
    """J30BER02's config partition (validly signed by the factory) written into J30BER01's image: the agent on
    J30BER01's box refuses it by serial, and the host sees the PCR 15 the box measured is not the predicted one."""
    _, vars_fd = factory
    swapped = tmp_path / "J30BER01"
    swapped.mkdir()
    for name in ("appliance.raw", "manifest.json"):
        shutil.copyfile(order / "J30BER01" / name, swapped / name)
    start, size = partitions(order / "J30BER02" / "appliance.raw")["oemkit-config"]
    with (order / "J30BER02" / "appliance.raw").open("rb") as src, (swapped / "appliance.raw").open("r+b") as dst:
        src.seek(start)
        dst.seek(start)
        dst.write(src.read(size))
    code, doc, console = _boot(swapped, vars_fd, tmp_path / "console.txt")
    assert (code, doc["status"]) == (1, "FAILED"), console[-3000:]
    assert "J30BER02" in doc["reason"] and "J30BER01" in doc["reason"], doc["reason"]
    assert doc["steps"] == []  # refused before anything was applied
    assert doc["pcr15_match"] is False and doc["pcr15"] != doc["pcr15_expected"]


def test_an_upgrade_boots_on_trial_and_is_blessed(order: Path, core_dir: Path, factory, tmp_path: Path) -> None:
    """`oemkit image upgrade` writes the new core into bank B with boot counting; the firmware boots it first, the
    agent reaches READY and the init blesses it (renames it without its counter) — on the boot's overlay; the
    upgraded image file itself verifies before and after."""
    keys, vars_fd = factory
    unit_dir = tmp_path / "J30BER01"
    shutil.copytree(order / "J30BER01", unit_dir)
    new = derived_core(core_dir, tmp_path / "core-next", "next", {"/etc/oemkit-core-next": b"a newer core\n"})
    upgraded = runner.invoke(app, ["image", "upgrade", str(unit_dir), "--core", str(new), "--keys",
                                   str(keys.folder.parent), "--json"])  # fmt: skip
    assert upgraded.exit_code == 0, upgraded.output
    code, doc, console = _boot(unit_dir, vars_fd, tmp_path / "console.txt")
    assert (code, doc["status"], doc["bank"]) == (0, "READY", "b"), console[-3000:]
    assert re.search(r"oemkit-core: agent t=\S+ pcr15=\S+ entry=oemkit-2-b\+3-0\.efi counting=\S+oemkit-2-b\+2-1\.efi",
                     console), console[-3000:]  # fmt: skip
    assert re.search(r"oemkit-core: bank t=\S+ blessed oemkit-2-b\.efi", console), console[-3000:]
    assert runner.invoke(app, ["image", "verify", str(unit_dir)]).exit_code == 0


SD_PROFILES = REPO / "tests" / "data" / "profiles" / "sd-boot"
SD_SERIAL = "CZJ8SD0001"


@pytest.fixture(scope="module")
def sd_unit(core_dir: Path, factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store on an HPE ProLiant DL360 Gen10, which boots only from SD (its dual-microSD USB kit) or USB."""
    keys, _ = factory
    out = tmp_path_factory.mktemp("sd")
    unit = out / f"{SD_SERIAL}.json"
    compile_to(SD_PROFILES / "store-sd.yaml", SD_PROFILES / "sites" / "store-ber02.yaml", SD_SERIAL, unit)
    _build(unit, core_dir, keys.folder.parent, out)
    return out / SD_SERIAL


def _debugfs(disk: Path, command: str) -> str:
    """debugfs on the ext4 at 1 MiB into `disk` (where the moved state's partition starts)."""
    return subprocess.run(["debugfs", "-R", command, f"{disk}?offset={1 << 20}"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def _first_boot_moved_the_state(unit_dir: Path, vars_fd: Path, box: Path, log: Path) -> str:
    code, doc, console = _boot(unit_dir, vars_fd, log, "--box", str(box))
    assert (code, doc["status"], doc["reason"], doc["pcr15_match"]) == (0, "READY", None, True), console[-3000:]
    assert re.search(r"oemkit-core: state t=\S+ volatile: refused /dev/sd[a-z]3 \(USB\)", console), console[-3000:]
    moved = re.search(r"oemkit-core: state t=\S+ moved to (/dev/sd[a-z]1) \(the datastore's first disk\) from "
                      r"/dev/sd[a-z]3", console)  # fmt: skip
    assert moved, console[-3000:]
    assert re.search(r"oemkit-core: grow t=\S+ /run/oemkit/state grown to [\d,]+ bytes", console), console[-3000:]
    assert re.search(rf"oemkit-core: state t=\S+ persistent on {moved.group(1)}", console), console[-3000:]
    return console


def test_a_box_booting_from_sd_moves_its_state_to_the_datastore_disk(sd_unit: Path, factory, tmp_path: Path) -> None:
    """The twin gives the image on USB (as the DL360's microSD kit presents itself); the init refuses state there;
    first boot, with the unit's verified config, copies the image's empty state filesystem onto the datastore rule's
    SSD (a new GPT partition to the disk's end), grows it and runs the plan on it: READY, and the workload's volume
    is on that disk. The shipped image is unchanged and still verifies."""
    keys, vars_fd = factory
    before = _sha(sd_unit / "appliance.qcow2")
    _first_boot_moved_the_state(sd_unit, vars_fd, tmp_path / "box", tmp_path / "console.txt")
    ssd = tmp_path / "box" / "disk0.raw"  # the twin's datastore SSD, kept by --box
    table = subprocess.run(["sgdisk", "-v", "-i", "1", str(ssd)], capture_output=True, text=True).stdout
    assert "No problems found" in table and "Partition name: 'oemkit-datastore'" in table, table
    assert "edge-fw-root.img" in _debugfs(ssd, "ls -l /var/lib/oemkit/pools/datastore")
    assert _debugfs(ssd, "cat /var/lib/oemkit/firstboot.done").strip().startswith("sha256:")
    assert _sha(sd_unit / "appliance.qcow2") == before
    verified = runner.invoke(app, ["image", "verify", str(sd_unit), "--keys", str(keys.folder.parent)])
    assert verified.exit_code == 0, verified.output


@pytest.mark.heavy
def test_a_box_booting_from_sd_finds_its_moved_state_at_the_next_power_on(
    sd_unit: Path, factory, tmp_path: Path
) -> None:
    """Powered on again (the same twin: --box), the box finds its state on the datastore disk, not on the SD: the
    host config first boot wrote is applied and first boot is not run again."""
    _, vars_fd = factory
    box = tmp_path / "box"
    _first_boot_moved_the_state(sd_unit, vars_fd, box, tmp_path / "first.txt")
    code, doc, console = _boot(sd_unit, vars_fd, tmp_path / "second.txt", "--box", str(box))
    assert (code, doc["status"], doc["reason"], doc["steps"]) == (0, "READY", "already done", []), console[-3000:]
    assert re.search(r"oemkit-core: state t=\S+ persistent on /dev/sd[a-z]1\n", console), console[-3000:]
    assert "moved to" not in console and "refused" not in console
    assert re.search(r"oemkit-core: hostconfig t=\S+ applied, hostname sd-ber02-czj8sd0001", console)


@pytest.mark.heavy
def test_a_core_failing_on_trial_rolls_back_after_three_boots(
    order: Path, core_dir: Path, factory, tmp_path: Path
) -> None:
    """Bank B gets a core whose agent crashes: each boot on trial ends in the init's reboot, systemd-boot counts
    it down (+2-1, +1-2, +0-3), then boots bank A, which reaches READY and reports its bank."""
    keys, vars_fd = factory
    unit_dir = tmp_path / "J30BER01"
    shutil.copytree(order / "J30BER01", unit_dir)
    crash = b"raise SystemExit('this core is broken: its agent exits at once')\n"
    broken = derived_core(core_dir, tmp_path / "core-broken", "broken",
                          {"/usr/lib/python3/dist-packages/hypervisor_core/__main__.py": crash})  # fmt: skip
    upgraded = runner.invoke(app, ["image", "upgrade", str(unit_dir), "--core", str(broken), "--keys",
                                   str(keys.folder.parent)])  # fmt: skip
    assert upgraded.exit_code == 0, upgraded.output
    code, doc, console = _boot(unit_dir, vars_fd, tmp_path / "console.txt")
    assert (code, doc["status"], doc["bank"]) == (0, "READY", "a"), console[-4000:]
    assert doc["boots"] == 4 and len(doc["core_failures"]) == 3, doc
    assert all("this core is broken" in failure for failure in doc["core_failures"]), doc["core_failures"]
    tries = re.findall(r"counting=\S+oemkit-2-b\+(\d-\d)\.efi", console)
    assert tries == ["2-1", "1-2", "0-3"], tries


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("profile", "site", "serial", "model", "state"),
    [  # the DL360 Gen10 Plus's NS204i-p is a hardware mirror: one fixed disk; the SR650 V2's M.2 kit a VROC mirror
        ("remote-clinic", "clinic-valley", "CLV00001", "hpe-proliant-dl360-gen10-plus", r"persistent on /dev/vda3"),
        (
            "factory-edge",
            "factory-plant1",
            "FEP00001",
            "lenovo-thinksystem-sr650-v2",
            r"moved to /dev/nvme\d+n1p1 \(the datastore's first disk\) from /dev/vd[ab]3",
        ),
    ],
)
def test_each_example_profile_boots_ready_on_its_own_vendors_twin(
    profile: str, site: str, serial: str, model: str, state: str, core_dir: Path, factory, tmp_path: Path
) -> None:
    """Each on its vendor's twin and real site. The SR650 V2 boots from two M.2 halves the core sees apart (no
    mdadm): the state is refused on them and moved to the datastore's first NVMe drive."""
    keys, vars_fd = factory
    unit = tmp_path / f"{serial}.json"
    compile_to(REPO / "profiles" / f"{profile}.yaml", REPO / "profiles" / "sites" / f"{site}.yaml", serial, unit)
    _build(unit, core_dir, keys.folder.parent, tmp_path / "out")
    code, doc, console = _boot(tmp_path / "out" / serial, vars_fd, tmp_path / "console.txt")
    assert (code, doc["status"], doc["reason"]) == (0, "READY", None), console[-3000:]
    assert (doc["model"], doc["bank"], doc["pcr15_match"]) == (model, "a", True)
    assert re.search(r"oemkit-core: state t=\S+ " + state, console), console[-3000:]
