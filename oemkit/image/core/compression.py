"""How each initrd part is compressed: one method for all parts, or one per part, chosen against the budget.

The spec is `xz` (every part) or a default followed by exceptions, `xz,modules=zstd,python=zstd`: xz where bytes
matter, zstd where the boot seconds bought per byte are cheapest (the kernel unpacks xz at about 71 ms per raw MB
under TCG, zstd at about 21; docs/core.md). The kernel unpacks a concatenation of differently compressed archives,
so parts may differ. Every method is deterministic (one thread, no names or times in headers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypervisor_core.fsutil import write_atomic
from oemkit.errors import OemkitError
from oemkit.image.core.recipe import PARTS
from oemkit.image.tools import run_tool

_XZ = ["xz", "--format=xz", "--check=crc32", "--lzma2=preset=9e,dict=64MiB", "-T1", "-c"]
COMPRESSORS: dict[str, list[str]] = {
    "xz": _XZ,  # the kernel's xz decoder takes crc32 only; -T1: one block, the same bytes on any machine
    "gzip": ["gzip", "-9", "-n", "-c"],  # -n: no name or time in the header
    "zstd": ["zstd", "-19", "-T1", "-q", "-c"],
}
DEFAULT = "xz"


class CompressionError(OemkitError):
    """A --compress spec that names an unknown method or part."""


def plan(spec: str) -> dict[str, str]:
    """Part -> method for every part of PARTS, from a spec such as `xz` or `xz,modules=zstd`."""
    default, *exceptions = [s.strip() for s in spec.split(",")]
    if default not in COMPRESSORS:
        raise CompressionError(f"--compress {spec!r}: the first method must be one of {', '.join(COMPRESSORS)}")
    out = dict.fromkeys(PARTS, default)
    for item in exceptions:
        part, _, method = item.partition("=")
        if part not in PARTS or method not in COMPRESSORS:
            raise CompressionError(
                f"--compress {spec!r}: {item!r} is not PART=METHOD (parts: {', '.join(PARTS)}; "
                f"methods: {', '.join(COMPRESSORS)})"
            )
        out[part] = method
    return out


# parts with x86 machine code: the BCJ filter shrinks them by about 1.1 MB in all; it enlarges relocatable kernel
# modules, and the agent (.pyc) and the seed (XML) have no machine code
CODE_PARTS = frozenset({"rest", "libvirt", "qemu", "python"})


def compressor(method: str, part: str) -> list[str]:
    if method == "xz" and part in CODE_PARTS:
        return [*_XZ[:3], "--x86", *_XZ[3:]]
    return COMPRESSORS[method]


def compress(cache: Path, raw: bytes, args: list[str]) -> tuple[bytes, int]:
    """The part compressed with `args` (cached by content) padded to 4 bytes, and the stream's own length."""
    path = cache / "parts" / f"{hashlib.sha256(raw + json.dumps(args).encode()).hexdigest()}.{args[0]}"
    if path.is_file():
        stream = path.read_bytes()
    else:
        stream = run_tool(args, what=f"{args[0]} compression", input=raw).stdout
        write_atomic(path, stream, mkdir=True)
    return stream + b"\0" * (-len(stream) % 4), len(stream)  # the kernel skips zeros between archives
