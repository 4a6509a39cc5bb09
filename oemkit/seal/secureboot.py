"""The factory's own UEFI Secure Boot keys: PK, KEK and db, each an RSA key pair with a self-signed X.509
certificate, and the owner GUID the firmware records with them.

The db key signs what the appliance boots (systemd-boot and the UKIs); KEK may update db and dbx; PK may update KEK.
A box trusts exactly these (no Microsoft keys: an appliance that boots only the OEM's image has no use for them).
Created once per factory, like the Ed25519 config-signing key, and never overwritten: a replaced db key would strand
every shipped box. Certificates are written as PEM (for tools) and DER (what BMCs and firmware setup menus take)."""

from __future__ import annotations

import datetime
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hypervisor_core.fsutil import write_atomic
from oemkit.errors import OutputRefused, UnreadableInput
from oemkit.inputs import read_input

FOLDER = "secureboot"  # inside the keys folder, beside signing.key
ROLES = ("PK", "KEK", "db")
KEY_BITS = 2048  # what OVMF and the server firmwares we target verify; 3072/4096 are not universally accepted
VALID_YEARS = 30  # firmware does not check expiry for db signatures; a short life would only confuse auditors


@dataclass(frozen=True)
class SecureBootKeys:
    folder: Path
    owner: str  # the EFI signature owner GUID

    def key(self, role: str) -> Path:
        return self.folder / f"{role}.key"

    def cert(self, role: str, der: bool = False) -> Path:
        return self.folder / f"{role}.{'cer' if der else 'crt'}"


def files(folder: Path) -> list[Path]:
    sb = folder / FOLDER
    return [sb / "owner.guid", *(sb / f"{r}.{ext}" for r in ROLES for ext in ("key", "crt", "cer"))]


def init_secure_boot(folder: Path, organisation: str) -> SecureBootKeys:
    """Write DIR/secureboot/{PK,KEK,db}.key (0600), .crt (PEM), .cer (DER) and owner.guid. Refuses if any exists."""
    existing = [p for p in files(folder) if os.path.lexists(p)]
    if existing:
        raise OutputRefused(
            "exists; refusing to replace the factory's Secure Boot keys",
            file=str(existing[0]),
            hint="shipped boxes trust these keys: rotate them deliberately (a KEK-signed db update), never by init",
        )
    sb = folder / FOLDER
    sb.mkdir(parents=True, exist_ok=True)
    owner = str(uuid.uuid4())
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    for role in ROLES:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} Secure Boot {role}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365 * VALID_YEARS))
            .add_extension(x509.BasicConstraints(ca=role != "db", path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_atomic(sb / f"{role}.key", private, 0o600, exclusive=True)  # 0600 from the first byte
        write_atomic(sb / f"{role}.crt", cert.public_bytes(serialization.Encoding.PEM), exclusive=True)
        write_atomic(sb / f"{role}.cer", cert.public_bytes(serialization.Encoding.DER), exclusive=True)
    write_atomic(sb / "owner.guid", (owner + "\n").encode(), exclusive=True)
    return SecureBootKeys(sb, owner)


def load(folder: Path) -> SecureBootKeys:
    """The Secure Boot keys under DIR/secureboot, checked: every certificate readable, its key pair whole."""
    sb = folder / FOLDER
    try:
        owner = str(uuid.UUID(read_input(sb / "owner.guid", "Secure Boot owner GUID").decode().strip()))
    except (UnicodeDecodeError, ValueError):
        raise UnreadableInput("not a GUID", file=str(sb / "owner.guid")) from None
    keys = SecureBootKeys(sb, owner)
    for role in ROLES:
        certificate(keys, role)
    return keys


def certificate(keys: SecureBootKeys, role: str) -> x509.Certificate:
    path = keys.cert(role)
    try:
        return x509.load_pem_x509_certificate(read_input(path, "Secure Boot certificate"))
    except ValueError:
        raise UnreadableInput(f"not a PEM X.509 certificate ({role})", file=str(path)) from None


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()
