"""The core as one signed Unified Kernel Image: systemd-boot's EFI stub with the kernel, the initramfs, the kernel
command line and an os-release as PE sections, signed with the factory's db key.

Built without `ukify` (bookworm has none): `objcopy` adds the sections at fixed, non-overlapping addresses above the
stub's own, the PE header's time stamp is fixed, and `osslsigncode` makes the Authenticode signature with a fixed
signing time (the core's SOURCE_DATE_EPOCH), so the same core and db key give the same signed bytes. Under Secure
Boot the stub uses the embedded command line and ignores any other, so nothing outside the signed file can change
how the core boots: what a twin must tell the core goes through SMBIOS, never the command line. The UKI holds no
per-unit data, so it is byte-identical for every unit of a core (its PCR 4/7/9/11 too)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from oemkit.image.tools import BuildError, run_tool
from oemkit.seal.secureboot import SecureBootKeys

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")  # Debian's systemd-boot-efi
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
# the last console= is /dev/console, where the init's marks and OEMKIT-STATUS go: the BMC's serial-over-LAN
CMDLINE = "console=tty0 console=ttyS0,115200 panic=-1 quiet"
STUB_END = 0x20000  # the stub's own sections end below this (objdump -h of the 252 stub: .sdmagic at 0x19100)
ALIGN = 0x100000
FORMAT = 3  # what a UKI holds beyond the core (os-release, command line): part of the shared cache's key


@dataclass(frozen=True)
class Section:
    name: str
    data: Path
    vma: int


def layout(osrel: Path, cmdline: Path, kernel: Path, initrd: Path) -> list[Section]:
    """Each section after the one before it, aligned, above the stub (pure: sizes in, addresses out)."""
    out, at = [], STUB_END
    for name, path in ((".osrel", osrel), (".cmdline", cmdline), (".linux", kernel), (".initrd", initrd)):
        out.append(Section(name, path, at))
        at += -(-path.stat().st_size // ALIGN) * ALIGN  # round up: the next section starts on a fresh 1 MiB
    return out


def os_release(core: dict) -> str:
    """No VERSION_ID or IMAGE_VERSION: systemd-boot would order the two banks by them, and core ids are content
    hashes in no order; without them it orders by file name, i.e. by bank generation (hypervisor_core/bank.py)."""
    return (
        f'NAME="oemkit core"\nID=oemkit-core\nID_LIKE=debian\nIMAGE_ID=oemkit-core\n'
        f'PRETTY_NAME="oemkit core {core["core_id"]}"\nOEMKIT_CORE_ID={core["core_id"]}\n'
    )


def command_line(core: dict) -> str:
    """CMDLINE plus the core's id: inside the signed UKI, so the running core knows which core it is (its reports
    name it) from a value Secure Boot vouches for — the id hashes the initrd, so the initrd cannot carry it."""
    return f"{CMDLINE} oemkit.core={core['core_id']}"


def build(coredir: Path, work: Path, keys: SecureBootKeys) -> Path:
    """work/oemkit-<core id>.efi: the signed UKI of the core in `coredir` (checked with sbverify against db)."""
    core = json.loads((coredir / "core.json").read_text())
    for tool_file in (STUB, SYSTEMD_BOOT):
        if not tool_file.is_file():
            raise BuildError(f"{tool_file} is missing (Debian's systemd-boot-efi: bash scripts/setup.sh)")
    work.mkdir(parents=True, exist_ok=True)
    osrel, cmdline = work / "os-release", work / "cmdline"
    osrel.write_text(os_release(core))
    cmdline.write_text(command_line(core))
    unsigned, signed = work / "unsigned.efi", work / f"oemkit-{core['core_id']}.efi"
    cmd = ["objcopy"]
    for s in layout(osrel, cmdline, coredir / "vmlinuz", coredir / "initrd.img"):
        cmd += ["--add-section", f"{s.name}={s.data}", "--change-section-vma", f"{s.name}={s.vma:#x}"]
    run_tool([*cmd, str(STUB), str(unsigned)], what="objcopy (building the UKI)")
    fix_timestamp(unsigned)
    sign(unsigned, signed, keys, int(core.get("source_date_epoch", 0)))
    unsigned.unlink()
    return signed


def fix_timestamp(efi: Path, stamp: int = 0) -> None:
    """objcopy writes the build time into the PE header (COFF TimeDateStamp); firmware ignores it: a fixed value
    makes the UKI the same bytes whoever builds it (objcopy 2.40 has no option for it)."""
    with efi.open("r+b") as fh:
        head = fh.read(0x40)
        if head[:2] != b"MZ":
            raise BuildError(f"{efi.name} is not a PE file")
        pe = struct.unpack_from("<I", head, 0x3C)[0]
        fh.seek(pe)
        if fh.read(4) != b"PE\0\0":
            raise BuildError(f"{efi.name} has no PE header")
        fh.seek(pe + 8)
        fh.write(struct.pack("<I", stamp))


def sign(efi: Path, out: Path, keys: SecureBootKeys, when: int) -> Path:
    """`efi` signed with the db key (Authenticode, SHA-256) by osslsigncode with a fixed signing time (`when`:
    sbsign stamps the clock's, so two builds would differ), then checked by a second tool, sbverify, against db."""
    run_tool(
        ["osslsigncode", "sign", "-certs", str(keys.cert("db")), "-key", str(keys.key("db")), "-h", "sha256",
         "-time", str(when), "-in", str(efi), "-out", str(out)],
        what=f"osslsigncode sign {efi.name}",
    )  # fmt: skip
    run_tool(["sbverify", "--cert", str(keys.cert("db")), str(out)], what=f"sbverify {out.name}")
    return out
