"""The core as a signed UKI boots under OVMF with Secure Boot and the factory's keys enrolled; the same UKI signed by
any other key is refused by the firmware before a byte of it runs. Real OVMF, real Authenticode signatures, real
FAT/GPT images, TCG: slow (two boots, ~20 s each), run in CI."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.catalog.store import load_catalog
from oemkit.cli.app import app
from oemkit.image.appliance import disk, uki
from oemkit.seal import secureboot
from oemkit.twin import session, uefi

from .conftest import REPO
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


def test_the_signed_uki_is_reproducible_and_boots_under_secure_boot(core_dir: Path, factory, tmp_path: Path) -> None:
    keys, vars_fd = factory
    first = uki.build(core_dir, tmp_path / "a", keys)
    again = uki.build(core_dir, tmp_path / "b", keys)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    console = _boot_until(_disk(first, tmp_path), vars_fd, ("oemkit-core: init", "Access Denied"))
    assert "oemkit-core: init" in console, console[-2000:]  # our init ran: firmware, stub, kernel all accepted it


def test_a_uki_signed_by_another_key_is_refused(core_dir: Path, factory, tmp_path: Path) -> None:
    _, vars_fd = factory
    stranger = _keys(tmp_path / "stranger")  # a valid signature, by a key the box does not trust
    efi = uki.build(core_dir, tmp_path / "s", stranger)
    console = _boot_until(_disk(efi, tmp_path), vars_fd, ("oemkit-core: init", "Access Denied"))
    assert "Access Denied" in console and "oemkit-core" not in console, console[-2000:]


def test_a_unit_image_is_reproducible_and_boots_ready_on_its_twin(core_dir: Path, factory, tmp_path: Path) -> None:
    """`oemkit image build`: GPT with the ESP (signed systemd-boot, the core's signed UKI) and the config partition;
    two builds give the same bytes; the image boots under OVMF Secure Boot with a TPM (swtpm) on the unit's R650 twin,
    the init reads the config from the image's own partition (no CD) and measures it into PCR 15 — the value the
    manifest predicts — and the unit ends READY. The image file is never written."""
    keys, vars_fd = factory
    unit = tmp_path / "J30LAB01.json"
    compile_to(REPO / "profiles" / "retail-branch.yaml", REPO / "profiles" / "sites" / "retail-lab.yaml",
               "J30LAB01", unit)  # fmt: skip
    built = []
    for out in (tmp_path / "out1", tmp_path / "out2"):
        args = ["image", "build", str(unit), "--core", str(core_dir), "--keys", str(keys.folder.parent), "-o", str(out)]
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        built.append(json.loads(result.stdout))
    assert built[0] == built[1]  # the same image bytes, the same UKI
    again = ["image", "build", str(unit), "--core", str(core_dir), "--keys", str(keys.folder.parent)]
    refused = runner.invoke(app, [*again, "-o", str(tmp_path / "out1")])
    assert refused.exit_code == 2 and "--force" in refused.stderr  # an existing image is not replaced silently
    assert runner.invoke(app, [*again, "-o", str(tmp_path / "out1"), "--force"]).exit_code == 0
    image = tmp_path / "out1" / "J30LAB01" / "appliance.raw"
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    assert built[0]["files"]["appliance.raw"]["sha256"] == before
    run = session.prepare(unit, load_catalog(), host_mib=session.host_memory_mib())
    log = tmp_path / "console.txt"
    result = session.boot_image(run, image, vars_fd, accel="tcg", timeout=900, log=log)
    console = log.read_text()
    assert (result.status, result.reason) == ("READY", None), console[-3000:]
    config_line = console.split("oemkit-core: config t=", 1)[1].splitlines()[0]
    assert " from /dev/vda2" in config_line, config_line  # the image's config partition, no CD
    # the init measured the config into the swtpm's PCR 15: exactly the value the factory predicted
    agent_line = console.split("oemkit-core: agent t=", 1)[1].splitlines()[0]
    assert agent_line.endswith(f" pcr15={built[0]['pcr15_expected']}"), agent_line
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before  # booted through a throwaway overlay
    # `image verify`: the booted image still is what its manifest says, signed by this factory's db
    unit_dir = str(image.parent)
    verified = runner.invoke(app, ["image", "verify", unit_dir, "--keys", str(keys.folder.parent), "--json"])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["verified"] is True, verified.output
    with image.open("r+b") as fh:  # another unit's byte in the config partition
        fh.seek((1 + 96) << 20)
        block = fh.read(1 << 20)
        at = block.index(b'"serial"')
        fh.seek(((1 + 96) << 20) + at + 10)
        fh.write(b"X")
    tampered = runner.invoke(app, ["image", "verify", unit_dir, "--json"])
    assert tampered.exit_code == 1
    assert "the unit config: not the bytes the manifest records" in json.loads(tampered.stdout)["problems"]
