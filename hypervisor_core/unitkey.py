"""The unit key: the Ed25519 key this box makes for itself at first boot and speaks for its serial with, once the
provisioning service bound it (docs/zero-touch.md). Only its 32-byte seed is stored, 0600, at STATE/unit.key.

Made once: written atomically and exclusively (never over an existing file), so a crash leaves no key or a whole
one, and a second run reads the first one's key. Anything at that path that is not a regular file of exactly 32
bytes is refused, never replaced: a new key would silently cut the box off from the service that knows the old one.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from hypervisor_core import ed25519
from hypervisor_core.fsutil import kind_of, read_regular, write_atomic

SEED_BYTES = 32
REPORT_CONTEXT = b"oemkit-report-v1\n"  # what a report signature covers is this, then the body's exact bytes


class UnitKeyError(Exception):
    """The unit key cannot be made or read; `str()` says why (never the key itself)."""


def load_or_create(path: Path) -> bytes:
    """The unit key's seed, made from os.urandom on the first call."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        seed = os.urandom(SEED_BYTES)
        try:
            write_atomic(path, seed, 0o600, mkdir=True, exclusive=True)
            return seed
        except FileExistsError:  # made meanwhile by another run: that one is the key
            st = os.lstat(path)
        except OSError as exc:
            raise UnitKeyError(f"cannot make the unit key {path}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise UnitKeyError(f"cannot read the unit key {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):  # lstat: a link is refused, not followed
        raise UnitKeyError(f"the unit key {path} is {kind_of(st.st_mode)}, not a regular file: refused")
    try:
        seed = read_regular(path, SEED_BYTES + 1)  # one more: a longer file is named as such below
    except OSError as exc:
        raise UnitKeyError(f"the unit key {path} cannot be read: {exc.strerror or exc}") from None
    if len(seed) != SEED_BYTES:
        raise UnitKeyError(f"the unit key {path} is {len(seed)} bytes, not {SEED_BYTES}: refused (never replaced)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            os.chmod(path, 0o600)  # readable by others: close it now rather than refuse a key that still works
        except OSError as exc:
            raise UnitKeyError(f"cannot make the unit key {path} private: {exc.strerror or exc}") from None
    return seed


def public_key(seed: bytes) -> bytes:
    return ed25519.public_key(seed)


def public_b64(seed: bytes) -> str:
    """The public key as the enrolment sends it: base64 of its 32 bytes."""
    return base64.b64encode(ed25519.public_key(seed)).decode()


def sign_report(seed: bytes, body: bytes) -> str:
    """The report signature, base64, over REPORT_CONTEXT + body."""
    return base64.b64encode(ed25519.sign(seed, REPORT_CONTEXT + body)).decode()


def verify_report(public: bytes, body: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return False
    return ed25519.verify(public, REPORT_CONTEXT + body, signature)
