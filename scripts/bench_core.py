"""Benchmarks of issue 5: the core's warm build, its footprint, and booting a unit on its twin. Prints Markdown;
--write puts it into docs/benchmarks.md. Cold builds and their reproducibility: scripts/core-repro.sh.

    .venv/bin/python scripts/bench_core.py [--boots N] [--write]      (root: the build needs it)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import KEY, PUB, REPO, write_section

from oemkit.catalog.store import load_catalog
from oemkit.seal.compile import compile_unit
from oemkit.seal.keys import load_private_key
from oemkit.twin import accel, session

BEGIN, END = "<!-- bench:core:begin -->", "<!-- bench:core:end -->"
OEMKIT = str(REPO / ".venv/bin/oemkit")


def build(out: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    done = subprocess.run(
        [OEMKIT, "core", "build", "-o", str(out), "--pubkey", str(PUB), "--json"], capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"core build failed: {done.stderr.strip()}")
    return wall, json.loads(done.stdout)


def boots(core: Path, n: int, tmp: Path) -> tuple[str, list[dict]]:
    unit = tmp / "unit.json"
    compiled = compile_unit(
        REPO / "profiles/retail-branch.yaml",
        REPO / "profiles/sites/retail-lab.yaml",
        "J30LAB01",
        load_private_key(KEY),
        load_catalog(),
    )
    unit.write_text(compiled.text())
    how, _ = accel.detect(core / "vmlinuz")
    run = session.prepare(unit, load_catalog(), host_mib=session.host_memory_mib())
    out = []
    for _ in range(n):
        result = session.boot(run, core, accel=how, timeout=900)
        if result.status != "READY":
            sys.exit(f"boot ended {result.status}: {result.reason}")
        out.append({**result.split(), "total": result.seconds, "uptime": result.guest_uptime})
    return how, out


def main() -> None:
    n = int(sys.argv[sys.argv.index("--boots") + 1]) if "--boots" in sys.argv else 3
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        walls, doc = [], {}
        for i in range(3):
            wall, doc = build(tmp / f"core{i}")
            walls.append(wall)
        how, runs = boots(tmp / "core0", n, tmp)
    med = {k: statistics.median(r[k] for r in runs) for k in ("kernel", "init", "agent", "total")}
    rng = {k: (min(r[k] for r in runs), max(r[k] for r in runs)) for k in med}
    up = {k: statistics.median(r["uptime"][k] for r in runs) for k in runs[0]["uptime"]}
    gap = doc["compressed_bytes"] - 33_554_432
    lines = [
        BEGIN,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine (2 cores, {how.upper()}); core "
        f"`{doc['core_id']}`.",
        "",
        f"Warm build (cache filled, nothing changed), 3 runs: {min(walls):.1f}–{max(walls):.1f} s a build "
        f"(stages of the last: {', '.join(f'{k} {v:.1f} s' for k, v in doc['times'].items())}).",
        "",
        "| part | compressed bytes | uncompressed bytes |",
        "|---|---:|---:|",
        *(f"| {p['name']} | {p['compressed_bytes']:,} | {p['uncompressed_bytes']:,} |" for p in doc["parts"]),
        f"| **total** | **{doc['compressed_bytes']:,}** | {doc['uncompressed_bytes']:,} |",
        "",
        f"Budget {doc['budget_bytes']:,} bytes; the 32 MiB goal is {gap:,} bytes away ({gap / 2**20:.1f} MiB over).",
        "",
        f"Boot of unit J30LAB01 (retail-branch, lab site: 3 networks, a pool, 4 volumes, 3 domains defined and "
        f"started) on its R650 twin, QEMU start to OEMKIT-STATUS, median of {n} (range):",
        "",
        "| phase | seconds | what |",
        "|---|---:|---|",
        f"| kernel | {med['kernel']:.1f} ({rng['kernel'][0]:.1f}–{rng['kernel'][1]:.1f}) | firmware, kernel and "
        "initrd unpack, to the init's first line |",
        f"| init | {med['init']:.1f} ({rng['init'][0]:.1f}–{rng['init'][1]:.1f}) | modules, state, host config, "
        "libvirtd, config CD |",
        f"| agent | {med['agent']:.1f} ({rng['agent'][0]:.1f}–{rng['agent'][1]:.1f}) | first boot: verify, match, "
        "apply the plan through the guest's libvirtd |",
        f"| **total** | **{med['total']:.1f}** ({rng['total'][0]:.1f}–{rng['total'][1]:.1f}) | |",
        "",
        "Guest uptime at each init mark (median): " + ", ".join(f"{k} {v:.1f} s" for k, v in up.items()) + ".",
        "",
        END,
    ]
    text = "\n".join(lines)
    print(text)
    if "--write" in sys.argv:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
