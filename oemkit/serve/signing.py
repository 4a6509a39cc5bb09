"""Report signatures: Ed25519 by the unit's key over b"oemkit-report-v1\\n" + the raw body, carried in
`X-Oemkit-Signature: ed25519=<base64>`. Checked on the bytes as received, before anything parses them: a body that
is not the unit's is never parsed at all. The context prefix keeps a report signature from meaning anything else."""

from __future__ import annotations

import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from oemkit.serve.schemas import b64decode

CONTEXT = b"oemkit-report-v1\n"
HEADER = "X-Oemkit-Signature"
_VALUE = re.compile(r"ed25519=([A-Za-z0-9+/_-]{86}(?:==)?)")  # 64 bytes of base64, padded or not


def signature(header: str | None) -> bytes | None:
    """The 64 signature bytes of a header value, or None when it is missing or not `ed25519=<base64>`."""
    if header is None:
        return None
    match = _VALUE.fullmatch(header.strip())
    if match is None:
        return None
    try:
        raw = b64decode(match.group(1))
    except ValueError:
        return None
    return raw if len(raw) == 64 else None


def verify(public_key: bytes, signature: bytes, body: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, CONTEXT + body)
    except (InvalidSignature, ValueError):
        return False
    return True
