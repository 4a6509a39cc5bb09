"""Every file the factory is given is read here: once, bounded, and only if it is what it must be.

The appliance's `fsutil.read_regular` does the reading (a FIFO never hangs us, `/dev/zero` is never read without
end, a folder or a device is refused before a byte is read); this module turns its refusals, and text that is not
UTF-8, into located `UnreadableInput` errors (CLI exit 2). Profiles, sites, unit overlays, orders, keys, unit
configs, public keys, facts and dumps all come through `read_input`.
"""

from __future__ import annotations

from pathlib import Path

from hypervisor_core.fsutil import read_regular
from oemkit.errors import UnreadableInput

KiB, MiB = 1024, 1024 * 1024
# The bounds, by kind of input: each is far above the largest real one and far below what hurts a build host.
# What the appliance reads too has the appliance's own limit (tests/test_hostile_inputs.py holds them equal; not
# imported: `catalog identify` reads a dump through here and must not load the agent's config and facts modules).
LIMITS = {
    "profile": 4 * MiB,  # a large real profile is ~20 KiB; every YAML file (site, overlay, catalog model) alike
    "orders": 64 * MiB,  # 100,000 rows of serial,profile,site,model
    "signing key": 64 * KiB,  # a PEM Ed25519 key is 119 bytes
    "public key": 64 * KiB,
    "unit config": 1 * MiB,  # hypervisor_core.config.MAX_BYTES
    "facts": 4 * MiB,  # hypervisor_core.facts.MAX_FACTS_BYTES
    "dump": 4 * MiB,  # a full dmidecode dump of a 4-socket server is ~200 KiB
    "kernel": 256 * MiB,  # a core's kernel is ~8 MB
    "Secure Boot certificate": 64 * KiB,  # a PEM RSA-2048 certificate is ~1.2 KiB
    "Secure Boot owner GUID": 4 * KiB,
    "firmware variable store": 64 * MiB,
    "core metadata": 4 * MiB,  # a core folder's core.json is ~15 KiB
    "image manifest": 4 * MiB,  # an appliance's manifest.json is ~1 KiB  # OVMF's 4M template is 528 KiB
}


def read_input(path: Path, kind: str, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path` (a `kind` of input, bounded by LIMITS[kind] or `limit`)."""
    bound = limit if limit is not None else LIMITS[kind]
    try:
        return read_regular(path, bound)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UnreadableInput(f"cannot read {kind}: {reason}", file=str(path)) from None


def decode_utf8(raw: bytes, file: str) -> str:
    """`raw` as text without a leading BOM (spreadsheets and some editors write one), or a located error at the
    first byte that is not UTF-8 (a Latin-1 or UTF-16 file). Columns count characters, as an editor shows them."""
    body = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = body.rfind(b"\n", 0, exc.start) + 1
        line = body.count(b"\n", 0, exc.start) + 1
        col = len(body[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        utf16 = body[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise UnreadableInput(
            f"invalid UTF-8 ({'a UTF-16 file' if utf16 else f'byte 0x{body[exc.start]:02x}'})",
            file=file,
            line=line,
            column=col,
            hint="save the file as UTF-8",
        ) from None
