"""Measure the unit config into PCR 15 with one raw TPM2_PCR_Extend: standard library only, no tpm2-tools.

The image is the same for every unit of a core, so PCR 4/7/9/11 say which core booted and nothing about which
unit; the init extends PCR 15 with sha256(unit config) at every boot, before the agent runs, so the factory can
predict the value per unit — sha256(32 zero bytes ‖ sha256(config)) — and a config swapped for another unit's
validly signed one shows up as a different PCR 15. `python -m hypervisor_core.tpm CONFIG` extends and prints the
PCR's new value (from sysfs), or says why not (no TPM: the box is not measured, the agent decides if that is fatal).
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from pathlib import Path

from hypervisor_core.fsutil import read_regular

PCR = 15
DEVICE = Path("/dev/tpmrm0")  # the kernel's resource manager: no handle or session bookkeeping of our own
SYSFS = Path("/sys/class/tpm/tpm0/pcr-sha256")
TPM_ST_SESSIONS = 0x8002
TPM_CC_PCR_EXTEND = 0x00000182
TPM_RS_PW = 0x40000009  # the empty-password session: PCR 15 has no auth value
TPM_ALG_SHA256 = 0x000B
MAX_CONFIG = 1 << 20  # hypervisor_core.config.MAX_BYTES


class TpmError(Exception):
    pass


def predicted(config: bytes, pcr_before: bytes = bytes(32)) -> str:
    """PCR 15 after one extend with sha256(config), from its reset value."""
    return hashlib.sha256(pcr_before + hashlib.sha256(config).digest()).hexdigest()


def extend_command(pcr: int, digest: bytes) -> bytes:
    """TPM2_PCR_Extend(pcr, {sha256: digest}) with a password session (TPM 2.0 Part 3, 22.2)."""
    if len(digest) != 32:
        raise ValueError("a SHA-256 digest is 32 bytes")
    auth = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)  # session handle, empty nonce, attributes, empty password
    body = struct.pack(">I", pcr) + struct.pack(">I", len(auth)) + auth
    body += struct.pack(">IH", 1, TPM_ALG_SHA256) + digest  # TPML_DIGEST_VALUES with one SHA-256 digest
    return struct.pack(">HII", TPM_ST_SESSIONS, 10 + len(body), TPM_CC_PCR_EXTEND) + body


def response_code(response: bytes) -> int:
    if len(response) < 10:
        raise TpmError(f"a {len(response)}-byte answer from the TPM")
    _tag, size, code = struct.unpack(">HII", response[:10])
    if size != len(response):
        raise TpmError(f"the TPM's answer says {size} bytes and has {len(response)}")
    return int(code)


def extend(config: bytes, device: Path = DEVICE, pcr: int = PCR) -> None:
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.write(fd, extend_command(pcr, hashlib.sha256(config).digest()))
        code = response_code(os.read(fd, 4096))
    finally:
        os.close(fd)
    if code != 0:
        raise TpmError(f"TPM2_PCR_Extend of PCR {pcr} failed: TPM response code {code:#x}")


def read(pcr: int = PCR, sysfs: Path = SYSFS) -> str:
    return read_regular(sysfs / str(pcr), 4096).decode().strip().lower()  # sysfs says 4096, whatever it holds


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hypervisor_core.tpm CONFIG", file=sys.stderr)
        return 2
    try:
        config = read_regular(Path(args[0]), MAX_CONFIG)
        if not DEVICE.exists():
            print("no TPM (no /dev/tpmrm0): not measured")
            return 1
        extend(config)
        print(f"pcr15={read()}")
    except (OSError, TpmError, UnicodeDecodeError) as exc:
        print(f"not measured: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
