"""A unit's manifest.json: what `image build` and `image upgrade` write and `image verify` checks against — its
shape said once, read back strictly (a manifest missing a field is unreadable, never half-checked).

Fields other code reads keep their names: serial, core_id, pcr15_expected, unit_config, systemd_boot_sha256, uki
(bank A's, for older readers), files."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from hypervisor_core import bank
from hypervisor_core.fsutil import sha256_file, write_atomic
from oemkit.errors import UnreadableInput
from oemkit.image.appliance import layout
from oemkit.image.tools import PATH, BuildError
from oemkit.inputs import read_input

FORMATS = ("qcow2", "raw")
NAME = "manifest.json"
# the tool, how to ask it, what in its answer is the version
TOOLS = {
    "mkfs.fat": (["mkfs.fat", "--help"], r"mkfs\.fat (\S+ \([^)]*\))"),
    "mtools": (["mtools", "--version"], r"\(GNU mtools\) (\S+)"),
    "sgdisk": (["sgdisk", "--version"], r"sgdisk\) version (\S+)"),
    "qemu-img": (["qemu-img", "--version"], r"qemu-img version ([^\n]+)"),
    "osslsigncode": (["osslsigncode", "--version"], r"osslsigncode (\S+)"),
    "objcopy": (["objcopy", "--version"], r"GNU objcopy [^\n]*? (\S+)\n"),
    "mke2fs": (["mke2fs", "-V"], r"mke2fs (\S+ \([^)]*\))"),
}


def image_name(fmt: str) -> str:
    return f"appliance.{fmt}"


@functools.cache
def tool_versions() -> dict[str, str]:
    """The version each image tool reports, asked once per process (they are the same for every unit)."""
    out = {}
    for tool, (cmd, pattern) in TOOLS.items():
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": PATH, "LC_ALL": "C"}, check=False)
        except FileNotFoundError:
            raise BuildError(f"{tool} not found (bash scripts/setup.sh installs it)") from None
        m = re.search(pattern, done.stdout + done.stderr)
        out[tool] = m[1].strip() if m else (done.stdout + done.stderr).strip().splitlines()[0]
    return out


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def bank_entry(name: str, core_id: str, uki_sha256: str) -> dict[str, Any]:
    entry = bank.parse(name)
    if entry is None:
        raise ValueError(f"{name} is not a bank's UKI name")
    return {"name": name, "generation": entry.generation, "core_id": core_id, "uki_sha256": uki_sha256}


def write(unit_dir: Path, manifest: dict) -> None:
    write_atomic(unit_dir / NAME, (json.dumps(manifest, indent=1) + "\n").encode())


def default_bank(banks: dict[str, dict]) -> str:
    """The bank systemd-boot boots: the highest generation among the entries that still have tries or are
    blessed (hypervisor_core/bank.py: an entry with no tries left sorts last)."""
    live = {b: bank.parse(e["name"]) for b, e in banks.items()}
    usable = {b: e for b, e in live.items() if e is not None and (e.tries_left is None or e.tries_left > 0)}
    if not usable:
        raise UnreadableInput("no bootable bank: every bank has used up its tries")
    return max(usable, key=lambda b: usable[b].generation)  # type: ignore[union-attr]


def load(unit_dir: Path) -> dict:
    """The manifest of OUT/<serial>, with every field verify and upgrade rely on present and of its type."""
    path = unit_dir / NAME
    try:
        m = json.loads(read_input(path, "image manifest"))
        fmt = m["format"]
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}")
        for key in ("serial", "core_id", "systemd_boot_sha256"):
            str(m[key])
        str(m["unit_config"]["sha256"])
        for b in bank.BANKS:
            e = m["banks"][b]
            if bank.parse(e["name"]) is None or bank.parse(e["name"]).bank != b:  # type: ignore[union-attr]
                raise ValueError(f"bank {b}: {e['name']!r} is not one of its names")
            str(e["core_id"]), str(e["uki_sha256"]), int(e["generation"])
        record = m["files"][image_name(fmt)]
        str(record["sha256"]), int(record["bytes"])
        for part in layout.PARTITIONS:
            for entry in m["contents"][part].values():
                str(entry["sha256"]), int(entry["bytes"])
        str(m["state"]["sha256"]), int(m["state"]["bytes"])
        if fmt == "qcow2":
            str(m["base"]["path"]), str(m["base"]["sha256"]), int(m["base"]["bytes"]), int(m["cluster_size"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableInput(f"not an image manifest: {exc}", file=str(path)) from None
    return dict(m)
