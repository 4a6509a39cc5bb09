"""The enrolment token onto a built unit's config partition (`oemkit register`, docs/zero-touch.md).

The token is the one secret a unit ships with: it lets the box bind its own key to its serial at the provisioning
service, once. It goes *beside* the signed unit config, never into it — the config's signature and PCR 15
prediction stay what the factory made, and a burn-in before registration never carries a token. The manifest
records the token file's SHA-256 and size (never the token), so `image verify` still checks every byte of the
partition; a unit registered again gets a new token in place of the old one.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from pathlib import Path

from hypervisor_core.layout import ENROL_TOKEN_NAME
from oemkit.errors import OemkitError
from oemkit.image.appliance import disk, edit, layout, manifest, verify

TOKEN_PATH = f"/{ENROL_TOKEN_NAME}"
TOKEN_BYTES = 32  # 256 bits from the OS's CSPRNG, base64url: 43 characters
FAT_EPOCH = 315532800  # 1980-01-01, FAT's first day: the token file's time carries no meaning


class RegisterRefused(OemkitError):
    """The unit cannot be registered as it is (its image does not verify, it has no phone home)."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_unit(unit_dir: Path) -> dict:
    """The unit's manifest if its image verifies; RegisterRefused otherwise (nothing registered, nothing written)."""
    m, problems = verify.verify(unit_dir)
    if problems:
        raise RegisterRefused("the image does not verify, so it is not registered: " + "; ".join(problems),
                              file=str(unit_dir), hint=f"oemkit image verify {unit_dir}")  # fmt: skip
    return m


def write_token(unit_dir: Path, m: dict, token: str, server: str) -> dict:
    """Put `token` on the unit's config partition as /enrol.token (replacing an earlier one); the new manifest."""
    data = token.encode("ascii") + b"\n"

    def change(guest: Path) -> None:
        staged = guest.parent / "enrol.token"
        staged.write_bytes(data)
        staged.chmod(0o600)
        try:
            if TOKEN_PATH in m["contents"][layout.CONFIG_NAME]:
                disk.fat_delete(guest, layout.CONFIG.start, TOKEN_PATH, FAT_EPOCH)
            disk.fat_put(guest, layout.CONFIG.start, staged, TOKEN_PATH, FAT_EPOCH)
        finally:
            staged.unlink()

    def new_manifest(staged: Path) -> dict:
        new = copy.deepcopy(m)
        digest = hashlib.sha256(data).hexdigest()
        new["contents"][layout.CONFIG_NAME][TOKEN_PATH] = {"sha256": digest, "bytes": len(data)}
        record = manifest.file_entry(staged)
        new["files"] = {staged.name: record}
        new["bytes_beyond_core"] = record["bytes"]
        new["enrolment"] = {"server": server, "token_file_sha256": digest}
        return new

    return edit.rewrite(unit_dir, m, change, new_manifest, None, "register")
