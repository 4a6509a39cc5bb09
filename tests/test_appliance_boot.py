"""The core as a signed UKI boots under OVMF with Secure Boot and the factory's keys enrolled; the same UKI signed by
any other key is refused by the firmware before a byte of it runs. Real OVMF, real Authenticode signatures, real
FAT/GPT images, TCG: slow (two boots, ~20 s each), run in CI."""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.image.appliance import disk, uki
from oemkit.seal import secureboot
from oemkit.twin import uefi

pytestmark = pytest.mark.slow
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
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "2048", "-nographic", "-nodefaults",
           "-no-reboot", "-serial", "stdio", "-monitor", "none",
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
    folder = tmp_path_factory.mktemp("factory")
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
