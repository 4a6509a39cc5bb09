"""The value types profile fields use (schema v1): names, host names and their templates, addresses, networks,
VLANs, URLs, time zones, console text, crypt(3) hashes and SSH keys — each refusing what no real system takes."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field

from oemkit.profile.schema.rules import NAME_PATTERN

HOSTNAME_PLACEHOLDERS = ("site", "serial", "model")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TEMPLATE_PART = re.compile(r"\{([^{}]*)\}")


# One key on one line: type, base64 blob, optional comment — never options like command="..." or a second line.
_SSH_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]+={0,3}( [ -~]*)?"
)


# crypt(3) with its structure: SHA-512/256 ($6$/$5$[rounds=N$]salt$hash), yescrypt ($y$params$salt$hash), bcrypt.
_CRYPT = re.compile(
    r"\$[56]\$(rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}"
    r"|\$(y|gy)\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{1,86}\$[./A-Za-z0-9]{43}"
    r"|\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"
)


def _hostname(value: str) -> str:
    labels = value.split(".")
    if len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is not a valid host name (lowercase letters, digits, '-', labels of 1-63)")
    return value


def hostname_template(value: str) -> str:
    for name in _TEMPLATE_PART.findall(value):
        if name not in HOSTNAME_PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use {', '.join('{' + p + '}' for p in HOSTNAME_PLACEHOLDERS)}"
            )
    _hostname(_TEMPLATE_PART.sub("x", value))
    return value


@functools.cache
def _known_timezones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())  # walks the tz database: once per process


def timezone_name(value: str) -> str:
    known = _known_timezones()
    if known and value not in known:  # no tz database on this machine: nothing to check against
        import difflib

        close = difflib.get_close_matches(value, sorted(known), n=1)
        raise ValueError(f"unknown time zone {value!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return value


def console_text(value: str) -> str:
    """Console text: no control characters (escape sequences could hide the "powered by" line)."""
    bad = [c for c in value if (ord(c) < 32 and c not in "\n\t") or 127 <= ord(c) < 160]
    if bad:
        raise ValueError(f"control character {bad[0]!r} is not allowed in console text")
    return value


def _unusable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why no host, gateway or server on a LAN can have this address, or None."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address (this machine itself)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"):
        return "the limited broadcast address"
    if ip.version == 4 and ip in ipaddress.IPv4Network("240.0.0.0/4"):
        return "a reserved address (240.0.0.0/4)"
    return None


def _ip(value: str) -> str:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    why = _unusable(ip)
    if why:
        raise ValueError(f"{value} is {why}: no server or gateway has it")
    return str(ip)


def _interface(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{value!r} needs a prefix length, e.g. {value}/24")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address with prefix (CIDR), e.g. 10.0.0.5/24") from None
    why = _unusable(iface.ip)
    if why:
        raise ValueError(f"{value} is {why}: no host takes it")
    if iface.ip == iface.network.network_address and iface.network.prefixlen < iface.max_prefixlen - 1:
        raise ValueError(f"{value} is the network address of {iface.network}, not a host address")
    return str(iface)


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR form ({exc})") from None


Name = Annotated[str, Field(pattern=NAME_PATTERN, description="Lowercase name: a-z, 0-9, '-'.")]
Hostname = Annotated[str, AfterValidator(_hostname)]
IPAddress = Annotated[str, AfterValidator(_ip)]
Interface = Annotated[str, AfterValidator(_interface)]
Network = Annotated[str, AfterValidator(_network)]
Vlan = Annotated[int, Field(ge=1, le=4094, description="802.1Q VLAN id, 1-4094.")]
Url = Annotated[
    str,
    Field(
        pattern=r"^https://[^\s/@?#]+(/[^\s?#]*)?$",
        description="An https:// URL, without credentials or a query: secrets never go into a profile.",
    ),
]


def crypt_hash(value: str) -> str:
    if not _CRYPT.fullmatch(value):
        raise ValueError("not a crypt(3) hash ($6$..., $y$...): it looks like a plaintext password")
    return value


_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


def ca_certificates(value: str) -> str:
    """One or more PEM CA certificates, each parsed (lazily: only a profile that phones home pays the import)."""
    blocks = _PEM_CERT.findall(value)
    if not blocks or _PEM_CERT.sub("", value).strip(" \r\n"):
        raise ValueError("not PEM certificates: expected only -----BEGIN CERTIFICATE----- blocks")
    from cryptography import x509

    for n, block in enumerate(blocks, 1):
        try:
            cert = x509.load_pem_x509_certificate(block.encode())
        except ValueError as exc:
            raise ValueError(f"certificate {n} does not parse: {exc}") from None
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ValueError(f"certificate {n} ({cert.subject.rfc4514_string()}) is not a CA certificate")
    return value


def ssh_key(value: str) -> str:
    if not _SSH_KEY.fullmatch(value):
        raise ValueError(f"not an OpenSSH public key: {value[:30]!r}...")
    return value
