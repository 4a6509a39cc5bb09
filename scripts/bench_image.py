"""Benchmark of the appliance image build (issue 12): per unit, with the shared per-core files warm, the time of
`image.build` as qcow2 and as raw next to the time of sealing that unit (`compile_unit`: check the profile with its
site, seal, sign — what `oemkit compile` does, in-process like the build) in the same run; the bytes each unit adds
beyond the shared core; `image verify` of each format; and the qcow2 cluster sizes tried (the overlay's bytes and
build time for each). The formats run one after the other, a sync between: a raw unit writes ~70 MB.
Prints Markdown; --write puts it into docs/benchmarks.md.

    .venv/bin/python scripts/bench_image.py [--units N] [--core COREDIR] [--write]     (root without --core: builds one)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import KEY, PUB, REPO, write_section

from oemkit.catalog.store import load_catalog
from oemkit.image.appliance import image, layout, qcow2, verify
from oemkit.seal import secureboot
from oemkit.seal.compile import compile_unit
from oemkit.seal.keys import load_private_key

BEGIN, END = "<!-- bench:image:begin -->", "<!-- bench:image:end -->"
OEMKIT = str(REPO / ".venv/bin/oemkit")
PROFILE, SITE = REPO / "profiles/retail-branch.yaml", REPO / "profiles/sites/retail-lab.yaml"


def _run(*args: str) -> None:
    done = subprocess.run([OEMKIT, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"oemkit {args[0]} {args[1]} failed: {done.stderr.strip()}")


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


def _range(values: list[float]) -> str:
    return f"{min(values) * 1000:.1f}–{max(values) * 1000:.1f}"


def bench(tmp: Path, units: int, coredir: Path | None) -> str:
    if coredir is None:
        coredir = tmp / "core"
        _run("core", "build", "-o", str(coredir), "--pubkey", str(PUB))
    keys_dir = tmp / "keys"
    _run("keys", "init", "--dir", str(keys_dir), "--secure-boot")
    keys = secureboot.load(keys_dir)
    core_id = json.loads((coredir / "core.json").read_text())["core_id"]
    key, catalog = load_private_key(KEY), load_catalog()
    outs = {fmt: tmp / f"out-{fmt}" for fmt in ("qcow2", "raw")}
    shared_s = {}
    for fmt, out in outs.items():  # cold: the signed UKI and systemd-boot, then the base disk
        t = time.perf_counter()
        image.prepare_shared(coredir, keys, out)
        shared_s[fmt] = time.perf_counter() - t
    seal: list[float] = []
    build: dict[str, list[float]] = {"qcow2": [], "raw": []}
    check: dict[str, list[float]] = {"qcow2": [], "raw": []}
    beyond: dict[str, list[int]] = {"qcow2": [], "raw": []}
    configs = []
    for i in range(units):
        serial = f"J30BEN{i:03d}"
        t = time.perf_counter()
        compiled = compile_unit(PROFILE, SITE, serial, key, catalog)
        text = compiled.text()
        seal.append(time.perf_counter() - t)
        configs.append(tmp / f"{serial}.json")
        configs[-1].write_text(text)
    for fmt, out in outs.items():  # one format after the other: a raw unit writes ~70 MB the disk must absorb
        os.sync()
        for unit in configs:
            t = time.perf_counter()
            manifest = image.build(unit, coredir, keys, out, fmt=fmt, catalog=catalog)
            build[fmt].append(time.perf_counter() - t)
            beyond[fmt].append(manifest["bytes_beyond_core"])
    for fmt, out in outs.items():
        os.sync()
        for unit in configs:
            t = time.perf_counter()
            found = verify.verify(out / unit.stem, keys)[1]
            check[fmt].append(time.perf_counter() - t)
            if found:
                sys.exit(f"{unit.stem} ({fmt}) does not verify: {found}")
    sweep = []
    unit = tmp / "J30BEN000.json"
    for cluster in qcow2.CLUSTERS:
        times, size = [], 0
        for _ in range(5):
            t = time.perf_counter()
            size = image.build(unit, coredir, keys, outs["qcow2"], force=True, cluster=cluster)["bytes_beyond_core"]
            times.append(time.perf_counter() - t)
        sweep.append((cluster, size, times))
    today = datetime.date.today().isoformat()
    cpus = os.cpu_count()
    lines = [
        BEGIN,
        "",
        f"Measured {today} on this project's machine ({cpus} cores); core `{core_id}`, {units} units of retail-branch "
        f"at the lab site (model dell-poweredge-r650): sealed, then all built as qcow2, then all as raw, then each "
        f"verified, in-process, in one run; the shared files warm (built once per output folder before any unit).",
        "",
        "| per unit | median ms | min–max ms | bytes beyond the shared core |",
        "|---|---:|---:|---:|",
        f"| seal (`compile_unit`: profile + site checked, sealed, signed) | {_ms(seal)} | {_range(seal)} | |",
        f"| **image build, qcow2** (config partition, GPT, overlay) | **{_ms(build['qcow2'])}** | "
        f"{_range(build['qcow2'])} | {statistics.median(beyond['qcow2']):,.0f} |",
        f"| image build, raw (a sparse copy of the base, then the same clusters) | {_ms(build['raw'])} | "
        f"{_range(build['raw'])} | {statistics.median(beyond['raw']):,.0f} (standalone) |",
        f"| image verify, qcow2 (base hashed, guest view converted, every file) | {_ms(check['qcow2'])} | "
        f"{_range(check['qcow2'])} | |",
        f"| image verify, raw | {_ms(check['raw'])} | {_range(check['raw'])} | |",
        "",
        f"Image build ÷ seal: qcow2 {statistics.median(build['qcow2']) / statistics.median(seal):.2f}×, raw "
        f"{statistics.median(build['raw']) / statistics.median(seal):.2f}×. The disk is {layout.DISK_BYTES:,} bytes. "
        f"Once per core and output folder (cold): {shared_s['qcow2']:.1f} s and {shared_s['raw']:.1f} s (the signed "
        "UKI and systemd-boot, the ESP with both banks, the base disk).",
        "",
        f"qcow2 cluster sizes, one unit, median of 5 builds (the builder uses {qcow2.CLUSTER:,}):",
        "",
        "| cluster bytes | overlay bytes | build ms (median) |",
        "|---:|---:|---:|",
        *(f"| {c:,} | {size:,} | {_ms(t)} |" for c, size, t in sweep),
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--core", type=Path, help="a COREDIR (default: build one from the warm cache, as root)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="oemkit-bench-image-"))
    try:
        text = bench(tmp, args.units, args.core)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    if args.write:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
