"""The factory's Ed25519 signing key: created once per factory, kept private; its public half goes into the core."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypervisor_core.fsutil import write_atomic
from oemkit.errors import OutputRefused, UnreadableInput
from oemkit.inputs import read_input


def init_keys(folder: Path) -> tuple[Path, Path]:
    """Write DIR/signing.key (PKCS#8 PEM, mode 0600) and DIR/signing.pub (SubjectPublicKeyInfo PEM). Never
    overwrites: replacing a factory key silently would orphan every box built with the old one."""
    key_path, pub_path = folder / "signing.key", folder / "signing.pub"
    for p in (key_path, pub_path):
        if os.path.lexists(p):
            raise OutputRefused(
                "exists; refusing to replace a signing key",
                file=str(p),
                hint="move it away first if you really mean to rotate the factory key",
            )
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # 0600 from the start (never a moment where the private key is world-readable), whole or not at all
    write_atomic(key_path, private, 0o600, exclusive=True)
    write_atomic(pub_path, public, exclusive=True)
    return key_path, pub_path


def load_private_key(path: Path, warn: Callable[[str], None] | None = None) -> Ed25519PrivateKey:
    """The factory key at `path`. A key that group or others may read is used, with a warning (`warn`, default
    stderr): unlike ssh we do not refuse it, because build lines keep the key on a mount that a build group shares
    by design, and stopping the line is worse than telling its owners — the warning lands in every unit's log."""
    data = read_input(path, "signing key")
    mode = path.stat().st_mode
    who = " and ".join(w for w, bits in (("its group", 0o070), ("others", 0o007)) if mode & bits)
    if who:
        (warn or _stderr)(f"{path}: warning: {who} may read or write the signing key (mode "
                          f"{stat.S_IMODE(mode):04o}); chmod 600 it")  # fmt: skip
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UnreadableInput("not an unencrypted PEM private key", file=str(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UnreadableInput("not an Ed25519 key (oemkit keys init makes one)", file=str(path))
    return key


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
