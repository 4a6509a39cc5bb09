"""The provisioning service's TLS: a small private CA whose certificate the unit configs pin, and server
certificates it issues. For a site without its own PKI (and for labs and tests); a customer CA works the same way:
its PEM goes into the profile's `management.phone_home.ca_pem`.

ECDSA P-256 rather than Ed25519: every TLS stack (the core's OpenSSL 3, browsers, load balancers) takes it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oemkit.errors import OemkitError
from oemkit.outputs import write_output

CA_CERT, CA_KEY = "service-ca.pem", "service-ca.key"
CA_YEARS, SERVER_DAYS = 10, 825  # 825 days: the longest server certificate lifetime browsers still accept
# Valid from two days before issue: a box whose clock runs behind (an RTC kept in local time west of UTC, a drifted
# one) must not find a certificate made today "not yet valid" and keep its first-boot report to itself.
BACKDATE = dt.timedelta(days=2)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, force: bool) -> Issued:
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / f"{stem}.key", folder / f"{stem}.pem"
    write_output(key_path, _key_pem(key), force=force, mode=0o600)
    write_output(cert_path, cert.public_bytes(serialization.Encoding.PEM), force=force, mode=0o644)
    return Issued(cert_path, key_path)


def init_ca(folder: Path, organisation: str, *, force: bool = False) -> Issued:
    """DIR/service-ca.key (0600) and DIR/service-ca.pem: a CA that can sign server certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name(f"{organisation} provisioning CA", organisation)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(folder, CA_CERT.removesuffix(".pem"), cert, key, force)


def load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    except OSError as exc:
        raise OemkitError(f"cannot read the service CA: {exc.strerror}", file=str(exc.filename)) from None
    except ValueError as exc:
        raise OemkitError(f"not a service CA: {exc}", file=str(folder)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise OemkitError("the service CA key is not an ECDSA key", file=str(folder / CA_KEY))
    return cert, key


def issue_server(ca_folder: Path, out: Path, hosts: list[str], *, force: bool = False) -> Issued:
    """OUT/server.key (0600) and OUT/server.pem (the server certificate, then the CA's: the chain uvicorn serves),
    valid for `hosts` (DNS names or IP addresses, as the box reaches the service: the URL's host)."""
    if not hosts:
        raise OemkitError("name at least one --host the boxes reach the service by")
    ca_cert, ca_key = load_ca(ca_folder)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    org = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0], str(org[0].value) if org else "oemkit"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out / "server.key", out / "server.pem"
    write_output(key_path, _key_pem(key), force=force, mode=0o600)
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    write_output(cert_path, chain, force=force, mode=0o644)
    return Issued(cert_path, key_path)
