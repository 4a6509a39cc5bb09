"""The seal on a unit config: a content id over its canonical JSON and an Ed25519 signature over everything but
the signature itself, so formatting never matters and one changed value always does. Independent of the schema
version: a box checks the seal of an older document before translating it."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from hypervisor_core import ed25519
from hypervisor_core.config.codec import ConfigError

SEAL_KEYS = ("content_id", "signed_by", "signature")
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")  # SubjectPublicKeyInfo header of an Ed25519 key


def canonical(data: dict[str, Any]) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no white space, UTF-8."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # JSON can spell a lone surrogate ("\ud800"); no UTF-8 document can hold one
        raise ConfigError("unit config holds text that is not valid Unicode (a lone surrogate)") from None


def content_id(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k not in SEAL_KEYS}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def key_id(public: bytes) -> str:
    return "ed25519:" + hashlib.sha256(public).hexdigest()[:16]


def signed_bytes(data: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in data.items() if k != "signature"})


def check_seal(data: dict[str, Any], public_key: bytes | None) -> None:
    """The signature (when a key is given) and the content id; ConfigError with a reason fit for the console."""
    if public_key is not None:
        sig = data.get("signature")
        if not isinstance(sig, str) or not sig.startswith("ed25519:"):
            raise ConfigError("unit config is not signed")
        try:
            signature = base64.b64decode(sig.removeprefix("ed25519:"), validate=True)
        except ValueError:
            raise ConfigError("unit config signature is not base64") from None
        if data.get("signed_by") != key_id(public_key):
            raise ConfigError(
                f"unit config was signed by {data.get('signed_by')}, not by this factory key ({key_id(public_key)})"
            )
        if not ed25519.verify(public_key, signed_bytes(data), signature):
            raise ConfigError("unit config signature does not verify: the file was altered after signing")
    if data.get("content_id") != content_id(data):
        raise ConfigError("unit config content id does not match its content")


def read_public_key(text: str) -> bytes:
    """A raw 32-byte key from the factory's signing.pub (PEM SubjectPublicKeyInfo, as `keys init` writes it)."""
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except ValueError:
        raise ConfigError("public key is not PEM") from None
    if len(der) != 44 or not der.startswith(_SPKI_ED25519):
        raise ConfigError("public key is not an Ed25519 key")
    return der[len(_SPKI_ED25519) :]
