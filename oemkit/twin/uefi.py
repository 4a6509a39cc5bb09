"""The twin's UEFI firmware: OVMF with Secure Boot (SMM, secure pflash) and a variable store holding the factory's
keys (`oemkit keys enroll-vars`), booting a disk image. Pure: paths in, QEMU arguments out. The appliance's full
twin (SMBIOS, NICs, datastore disks, swtpm) builds on it."""

from __future__ import annotations

from pathlib import Path

from oemkit.twin.qemu import opt

OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")  # Debian's ovmf: SMM-enforced Secure Boot


MACHINE = "q35,smm=on"  # OVMF's Secure Boot build needs SMM: the variable store is writable only from it


def secure_boot_args(vars_fd: Path, code: Path = OVMF_CODE_SECBOOT) -> list[str]:
    """The read-only firmware code and this boot's own copy of the variable store (with `-machine MACHINE`)."""
    return [
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={opt(str(code))}",
        "-drive", f"if=pflash,format=raw,unit=1,file={opt(str(vars_fd))}",
    ]  # fmt: skip


def boot_disk_args(image: Path, fmt: str = "raw") -> list[str]:
    """The appliance image as the box's boot disk."""
    return ["-drive", f"if=none,id=boot,format={fmt},file={opt(str(image))}", "-device", "virtio-blk-pci,drive=boot"]


def tpm_args(socket: Path) -> list[str]:
    """A TPM 2.0 on the CRB interface, backed by the swtpm listening on `socket`."""
    return [
        "-chardev", f"socket,id=chrtpm,path={opt(str(socket))}",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-crb,tpmdev=tpm0",
    ]  # fmt: skip
