"""What takes the space in a core: the footprint document, the budget, and its measurement from a core folder.

compressed_bytes counts everything the booted core is made of — the kernel file and every initrd part as stored —
and uncompressed_bytes what they unpack to: the raw cpio of each part and, for the kernel, the payload of the
bzImage decompressed (the stripped vmlinux plus relocations the boot stub unpacks)."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypervisor_core.fsutil import read_regular
from oemkit.errors import UnreadableInput
from oemkit.image.core.compression import CompressionError, plan

if TYPE_CHECKING:
    from rich.console import Console

MIB32 = 33_554_432  # the goal: ESX Server 3i fitted in 32 MB
# The default build (generic kernel 6.1.0-57 xz, xz initrd, the recipe's 12 packages with libxml2 and dnsmasq
# rebuilt, catalog NIC drivers, the capabilities seed, the agent of 2026-11-30) measured 33,416,884 bytes on
# 2026-11-30 (43,706,564 the day before, with ICU). The budget is the goal itself: a build over 32 MiB fails.
DEFAULT_BUDGET_BYTES = MIB32

CORE_FILES = ("vmlinuz", "initrd.img", "core.json", "footprint.json", "manifest.json")


def core_id(vmlinuz: bytes, initrd: bytes) -> str:
    return hashlib.sha256(vmlinuz + initrd).hexdigest()[:20]


def document(core: str, parts: list[dict[str, Any]], budget: int, compression: str, kernel_note: str) -> dict:
    """The footprint document: totals over `parts` ({"name", "compressed_bytes", "uncompressed_bytes"})."""
    total = sum(p["compressed_bytes"] for p in parts)
    return {
        "core_id": core,
        "compression": compression,
        "compressed_bytes": total,
        "uncompressed_bytes": sum(p["uncompressed_bytes"] for p in parts),
        "budget_bytes": budget,
        "gap_to_32mib_bytes": total - MIB32,  # > 0: over 32 MiB by that much
        "kernel_uncompressed": kernel_note,
        "parts": [{k: p[k] for k in ("name", "compressed_bytes", "uncompressed_bytes")} for p in parts],
    }


def over_budget(doc: dict) -> str | None:
    """None within the budget, else the message: the total, the budget and the three biggest parts."""
    total, budget = doc["compressed_bytes"], doc["budget_bytes"]
    if total <= budget:
        return None
    big = sorted(doc["parts"], key=lambda p: -p["compressed_bytes"])[:3]
    names = ", ".join(f"{p['name']} {p['compressed_bytes']:,}" for p in big)
    return f"core is {total:,} bytes compressed, over the budget of {budget:,} by {total - budget:,}; biggest: {names}"


# ------------------------------------------------------------------------------------------- kernel payload
_MAGICS = {b"\xfd7zXZ\x00": "xz", b"\x02\x21\x4c\x18": "lz4", b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


def kernel_uncompressed(vmlinuz: bytes) -> tuple[int, str]:
    """The size of the kernel the bzImage unpacks, and how it was measured. The boot header (offsets 0x1f1,
    0x248, 0x24c) locates the compressed payload; it is decompressed here (xz, gzip) or by the system's lz4/zstd;
    failing that, the 4-byte size the kernel build appends to the payload is reported."""
    if len(vmlinuz) < 0x250 or vmlinuz[0x202:0x206] != b"HdrS":
        raise UnreadableInput("vmlinuz is not an x86 bzImage (no HdrS boot header)")
    setup_sects = vmlinuz[0x1F1] or 4
    offset, length = struct.unpack_from("<II", vmlinuz, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = vmlinuz[start : start + length]
    (trailer,) = struct.unpack_from("<I", payload, len(payload) - 4)
    kind = next((k for magic, k in _MAGICS.items() if payload.startswith(magic)), "unknown")
    size = _decompressed_size(payload[:-4], kind)
    if size is None:
        return trailer, f"{kind} payload: size recorded in the bzImage (not decompressed)"
    return size, f"{kind} payload decompressed"


def _decompressed_size(data: bytes, kind: str) -> int | None:
    if kind == "xz":
        return _count_stream(lzma.LZMADecompressor(lzma.FORMAT_XZ), data)
    if kind == "gzip":
        return _count_stream(zlib.decompressobj(wbits=31), data)
    tool = {"lz4": ["lz4", "-dc"], "zstd": ["zstd", "-dcq"]}.get(kind)
    if tool is None or shutil.which(tool[0]) is None:
        return None
    done = subprocess.run(tool, input=data, capture_output=True, check=False)
    return len(done.stdout) if done.returncode == 0 else None


def _count_stream(dec: Any, data: bytes, chunk: int = 1 << 20) -> int:
    """Decompressed length of one stream, in bounded memory (output is counted, not kept)."""
    total = 0
    for i in range(0, len(data), chunk):
        total += len(dec.decompress(data[i : i + chunk]))
        if dec.eof:
            break
    return total


def part_uncompressed(data: bytes, compression: str) -> int:
    """What one stored initrd part unpacks to."""
    if compression == "xz":
        return _count_stream(lzma.LZMADecompressor(lzma.FORMAT_XZ), data)
    if compression == "gzip":
        return _count_stream(zlib.decompressobj(wbits=31), data)
    done = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise UnreadableInput(f"zstd cannot decompress a part: {done.stderr.decode(errors='replace').strip()}")
    return len(done.stdout)


# ------------------------------------------------------------------------------------------- from a core folder
MAX_CORE_FILE = 256 << 20  # a core is ~40 MiB in all; a bigger file in a core folder is no file of a core


def _read(path: Path) -> bytes:
    try:
        return read_regular(path, MAX_CORE_FILE)
    except OSError as exc:
        raise UnreadableInput(f"cannot read: {exc.strerror}", file=str(path)) from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(_read(path))
    except (ValueError, RecursionError) as exc:
        raise UnreadableInput(f"not JSON: {str(exc)[:100]}", file=str(path)) from None
    if not isinstance(data, dict):
        raise UnreadableInput("not a JSON object", file=str(path))
    return data


def measure(coredir: Path) -> dict:
    """The footprint of the core in `coredir`, recomputed from its files: the core id must match vmlinuz and
    initrd.img, each part's bytes must match the manifest's hash, and every size is measured again."""
    if not coredir.is_dir() or not (coredir / "core.json").is_file():
        raise UnreadableInput("not a core folder (no core.json; `oemkit core build -o` makes one)", file=str(coredir))
    missing = [f for f in CORE_FILES if not (coredir / f).is_file()]
    if missing:
        raise UnreadableInput(f"not a complete core folder: no {', '.join(missing)}", file=str(coredir))
    meta, manifest = _read_json(coredir / "core.json"), _read_json(coredir / "manifest.json")
    vmlinuz, initrd = _read(coredir / "vmlinuz"), _read(coredir / "initrd.img")
    actual = core_id(vmlinuz, initrd)
    if meta.get("core_id") != actual:
        raise UnreadableInput(
            f"core id {meta.get('core_id')!r} in core.json does not match the files ({actual}): changed since built",
            file=str(coredir),
        )
    compression = meta.get("compression")
    try:
        methods = plan(compression) if isinstance(compression, str) else None
    except CompressionError:
        methods = None
    if methods is None:
        raise UnreadableInput(f"unknown compression {compression!r}", file=str(coredir / "core.json"))
    try:
        recorded = [(p["name"], p["offset"], p["compressed_bytes"], p["stream_bytes"], p["sha256"])
                    for p in manifest["parts"]]  # fmt: skip
        if not all(r[0] in methods for r in recorded):
            raise KeyError("name")
    except (KeyError, TypeError):
        raise UnreadableInput("manifest.json has no usable parts list", file=str(coredir / "manifest.json")) from None
    if not all(type(v) is int and v >= 0 for r in recorded for v in r[1:4]):
        raise UnreadableInput("manifest.json has a part size that is not a count of bytes", file=str(coredir))
    if sum(r[2] for r in recorded) != len(initrd):
        raise UnreadableInput("initrd.img is not the concatenation of the manifest's parts", file=str(coredir))
    segments = []
    for name, offset, size, stream, digest in recorded:
        data = initrd[offset : offset + size]
        if hashlib.sha256(data).hexdigest() != digest:
            raise UnreadableInput(f"part {name} does not match its hash in manifest.json", file=str(coredir))
        segments.append((name, size, data[:stream]))
    with ThreadPoolExecutor(max_workers=2) as pool:  # liblzma and zlib release the GIL
        kernel = pool.submit(kernel_uncompressed, vmlinuz)
        raw = list(pool.map(lambda s: part_uncompressed(s[2], methods[s[0]]), segments))
    kernel_size, note = kernel.result()
    parts = [{"name": "kernel", "compressed_bytes": len(vmlinuz), "uncompressed_bytes": kernel_size}]
    for (name, size, _), unpacked in zip(segments, raw, strict=True):
        parts.append({"name": name, "compressed_bytes": size, "uncompressed_bytes": unpacked})
    budget = meta.get("footprint", {}).get("budget_bytes", DEFAULT_BUDGET_BYTES)
    return document(actual, parts, budget, str(compression), note)


# ------------------------------------------------------------------------------------------- for people
def render(doc: dict, out: Console) -> None:
    from rich.table import Table

    table = Table(title=f"core {doc['core_id']} ({doc['compression']})", title_justify="left")
    table.add_column("part")
    table.add_column("compressed", justify="right")
    table.add_column("share", justify="right")
    table.add_column("uncompressed", justify="right")
    total = doc["compressed_bytes"] or 1
    for p in doc["parts"]:
        share = f"{100 * p['compressed_bytes'] / total:.1f} %"
        table.add_row(p["name"], f"{p['compressed_bytes']:,}", share, f"{p['uncompressed_bytes']:,}")
    table.add_row("total", f"{doc['compressed_bytes']:,}", "", f"{doc['uncompressed_bytes']:,}", style="bold")
    out.print(table)
    gap = doc["gap_to_32mib_bytes"]
    where = f"over 32 MiB by {gap:,} bytes" if gap > 0 else f"under 32 MiB by {-gap:,} bytes"
    within = "within" if doc["compressed_bytes"] <= doc["budget_bytes"] else "OVER"
    out.print(f"budget {doc['budget_bytes']:,} bytes: {within}; {where}; kernel: {doc['kernel_uncompressed']}")
