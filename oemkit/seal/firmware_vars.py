"""An OVMF variable store with the factory's Secure Boot keys enrolled and Secure Boot on: what a twin boots with,
and the reference for what a real server's firmware must hold (docs/appliance.md says how a factory enrolls the
same certificates through the BMC).

The store is written by `virt-fw-vars` (the virt-firmware package, pinned in the lock), run as a program: it knows
edk2's authenticated-variable format, and keeping it a separate process keeps its licence (GPLv2) apart from ours.
Its own JSON dump of the result is read back and checked: PK, KEK and db hold exactly our certificates, under our
owner GUID, and SecureBootEnable is on."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from oemkit.errors import OemkitError, UnreadableInput
from oemkit.image.tools import run_tool  # the build tools' runner: a located error, never a traceback
from oemkit.inputs import read_input
from oemkit.outputs import write_output
from oemkit.seal import secureboot
from oemkit.seal.secureboot import SecureBootKeys

OVMF_VARS_TEMPLATE = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")  # Debian's ovmf: no keys, Secure Boot off
TOOL = "virt-fw-vars"
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"  # db, dbx


class EnrollError(OemkitError):
    """The variable store could not be written or does not hold what it must."""


def tool() -> str:
    """virt-fw-vars beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / TOOL
    found = str(beside) if beside.is_file() else shutil.which(TOOL)
    if found is None:
        raise EnrollError(f"{TOOL} not found (the virt-firmware package: bash scripts/setup.sh installs it)")
    return found


def enroll(keys: SecureBootKeys, template: Path, output: Path, force: bool = False) -> dict[str, str]:
    """Write `output`: `template` with PK, KEK and db set to the factory's certificates and Secure Boot on.
    Returns each role's certificate fingerprint (sha256), as checked in the written store."""
    read_input(template, "firmware variable store")  # a located refusal for a FIFO, a folder, a huge file
    with tempfile.TemporaryDirectory(prefix="oemkit-vars-") as tmp:
        store, dump = Path(tmp) / "vars.fd", Path(tmp) / "vars.json"
        cmd = [tool(), "-i", str(template), "-o", str(store), "--output-json", str(dump), "--sb"]
        cmd += ["--set-pk", keys.owner, str(keys.cert("PK"))]
        cmd += ["--add-kek", keys.owner, str(keys.cert("KEK"))]
        cmd += ["--add-db", keys.owner, str(keys.cert("db"))]
        run_tool(cmd, what=TOOL)
        expected = {role: secureboot.fingerprint(secureboot.certificate(keys, role)) for role in secureboot.ROLES}
        check(json.loads(dump.read_text()), expected, keys.owner)
        write_output(output, store.read_bytes(), force=force)
    return expected


def check(doc: dict, expected: dict[str, str], owner: str) -> None:
    """virt-fw-vars' JSON dump holds PK, KEK and db with exactly the expected certificates and SecureBootEnable on."""
    variables = {(v["name"], v["guid"]): v for v in doc.get("variables", [])}
    for role in secureboot.ROLES:
        guid = EFI_IMAGE_SECURITY if role == "db" else EFI_GLOBAL
        var = variables.get((role, guid))
        if var is None:
            raise EnrollError(f"the written store has no {role}")
        certs = _certificates(bytes.fromhex(var["data"]))
        found = [(o, x509.load_der_x509_certificate(c).fingerprint(hashes.SHA256()).hex()) for o, c in certs]
        if found != [(owner, expected[role])]:
            raise EnrollError(f"{role} in the written store is not the factory's certificate: {found}")
    enable = variables.get(("SecureBootEnable", "f0a30bc7-af08-4556-99c4-001009c93a44"))
    if enable is None or bytes.fromhex(enable["data"]) != b"\x01":
        raise EnrollError("the written store does not turn Secure Boot on")


def _certificates(data: bytes) -> list[tuple[str, bytes]]:
    """(owner GUID, DER) of every X.509 entry in an EFI_SIGNATURE_LIST sequence (UEFI spec 32.4.1)."""
    x509_type = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le
    out, at = [], 0
    while at + 28 <= len(data):
        kind, list_size = data[at : at + 16], int.from_bytes(data[at + 16 : at + 20], "little")
        header_size = int.from_bytes(data[at + 20 : at + 24], "little")
        sig_size = int.from_bytes(data[at + 24 : at + 28], "little")
        if list_size < 28 or sig_size < 16 or at + list_size > len(data):
            raise UnreadableInput("a malformed EFI signature list in the written store")
        entry = at + 28 + header_size
        while entry + sig_size <= at + list_size:
            if kind == x509_type:
                owner = str(uuid.UUID(bytes_le=data[entry : entry + 16]))
                out.append((owner, data[entry + 16 : entry + sig_size]))
            entry += sig_size
        at += list_size
    return out
