"""Benchmark of the build line (issue 12): an N-unit order over the example profiles and sites, sealed and built by
`oemkit line` on a real core at each --workers count, then rerun (every unit verified and skipped); the floor is
`image.build` of the same kind of sealed configs in a loop, one at a time, in-process (no sealing, no rerun check, no
audit log, no report). --executors builds orders with `oemkit.line.run` in-process with worker threads and with
worker processes, alternately, to keep the choice of threads measured. Prints Markdown; --write puts it into
docs/benchmarks.md ("Build line"). Every output folder is deleted at the end.

    .venv/bin/oemkit core build -o /tmp/bench-core --pubkey tests/data/keys/signing.pub --cache ~/.cache/oemkit/core
    .venv/bin/python scripts/bench_line.py --core /tmp/bench-core [--units 1000] [--format qcow2|raw]
        [--workers 1,2] [--floor K] [--executors 200:qcow2,20:raw] [--write]
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

from _common import KEY, REPO, write_section

from oemkit.catalog.store import load_catalog
from oemkit.image.appliance import image
from oemkit.line import run as line_run
from oemkit.seal import secureboot
from oemkit.seal.keys import load_private_key
from oemkit.seal.orders import compile_orders

BEGIN, END = "<!-- bench:line:begin -->", "<!-- bench:line:end -->"
OEMKIT = str(REPO / ".venv/bin/oemkit")
PROFILES = REPO / "profiles"
PAIRS = (  # every example (profile, site): the order cycles through them
    ("retail-branch.yaml", "retail-ber01.yaml"),
    ("retail-branch.yaml", "retail-muc02.yaml"),
    ("retail-branch.yaml", "retail-lab.yaml"),
    ("remote-clinic.yaml", "clinic-hq-north.yaml"),
    ("remote-clinic.yaml", "clinic-valley.yaml"),
    ("factory-edge.yaml", "factory-plant1.yaml"),
    ("factory-edge.yaml", "factory-plant2.yaml"),
)


def order(path: Path, units: int, prefix: str = "BL") -> Path:
    rows = ["serial,profile,site"]
    for n in range(units):
        profile, site = PAIRS[n % len(PAIRS)]
        rows.append(f"{prefix}{n:06d},{PROFILES / profile},{PROFILES / 'sites' / site}")
    path.write_text("\n".join(rows) + "\n")
    return path


def line(orders: Path, core: Path, keys: Path, out: Path, workers: int, fmt: str) -> tuple[float, dict]:
    cmd = [OEMKIT, "line", str(orders), "--core", str(core), "--key", str(keys / "signing.key"), "--keys", str(keys),
           "-o", str(out), "--workers", str(workers), "--format", fmt, "--json"]  # fmt: skip
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"oemkit line exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def floor(orders: Path, core: Path, keys: Path, out: Path, fmt: str) -> tuple[float, int]:
    """image.build of each sealed config in a loop, one at a time: the line's work without the line."""
    sealed = out / "sealed"
    rows = list(compile_orders(orders, load_private_key(keys / "signing.key"), load_catalog(), sealed))
    sb = secureboot.load(keys)
    image.prepare_shared(core, sb, out)
    t = time.perf_counter()
    for row in rows:
        assert row.file is not None, row.problems
        image.build(row.file, core, sb, out, fmt=fmt)
    return time.perf_counter() - t, len(rows)


def executors(orders: Path, core: Path, keys: Path, tmp: Path, fmt: str, rounds: int) -> dict[str, list[float]]:
    """Units/minute of the same order with worker threads and worker processes (2 workers), alternately."""
    rates: dict[str, list[float]] = {"threads": [], "processes": []}
    for _ in range(rounds):
        for kind in rates:
            out = tmp / f"exec-{kind}"
            prepared = line_run.prepare(orders, key=keys / "signing.key", catalog_dir=None, coredir=core, keys=keys,
                                        out=out, fmt=fmt)  # fmt: skip
            report = line_run.run(prepared, workers=2, executor=kind)
            assert report.count("ok") == prepared.rows, (report.totals(), report.units[-1])
            rates[kind].append(report.units_per_minute())
            shutil.rmtree(out)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--core", type=Path, required=True)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--format", default="qcow2" if "qcow2" in image.FORMATS else "raw")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--floor", type=int, default=50, help="units in the floor's loop")
    ap.add_argument("--executors", default="", help="threads vs processes: UNITS:FORMAT[,UNITS:FORMAT...]")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each executor, alternating")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    fmt, core = args.format, args.core.resolve()
    core_id = json.loads((core / "core.json").read_text())["core_id"]
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-line-", dir=os.environ.get("BENCH_TMP")))
    try:
        keys = tmp / "keys"
        keys.mkdir()
        shutil.copyfile(KEY, keys / "signing.key")
        os.chmod(keys / "signing.key", 0o600)
        secureboot.init_secure_boot(keys, "Bench")
        orders = order(tmp / "orders.csv", args.units)
        rows = []
        for workers in (int(w) for w in filter(None, args.workers.split(","))):
            out = tmp / f"out-w{workers}"
            wall, report = line(orders, core, keys, out, workers, fmt)
            assert report["totals"]["ok"] == args.units, report["totals"]
            size = sum(u["bytes"] for u in report["units"]) / args.units
            rows.append(
                f"| `oemkit line --workers {workers}` ({args.units:,} units) | {wall:.1f} | "
                f"{args.units * 60 / wall:,.1f} | {report['units_per_minute']:,.1f} | "
                f"{report['seal_seconds'] / report['seconds']:.1%} ({report['seal_seconds'] * 1000 / args.units:.2f}"
                f" ms a unit) | {size / 1e6:,.2f} MB |"
            )
            wall, again = line(orders, core, keys, out, workers, fmt)
            assert again["totals"]["skipped"] == args.units, again["totals"]
            rows.append(
                f"| rerun, `--workers {workers}`: every unit verified and skipped | {wall:.1f} | "
                f"{args.units * 60 / wall:,.1f} | {again['units_per_minute']:,.1f} | "
                f"{again['seal_seconds'] / again['seconds']:.1%} | |"
            )
            shutil.rmtree(out)
        if args.floor:
            took, count = floor(order(tmp / "floor.csv", args.floor, "FL"), core, keys, tmp / "floor", fmt)
            shutil.rmtree(tmp / "floor")
            rows.append(
                f"| floor: `image.build` of {count} sealed configs in a loop, in-process | {took:.1f} | "
                f"{count * 60 / took:,.1f} | | | |"
            )
        compare = []
        for spec in filter(None, args.executors.split(",")):
            count_s, efmt = spec.split(":")
            rates = executors(order(tmp / "exec.csv", int(count_s), "EX"), core, keys, tmp, efmt, args.rounds)
            cells = [f"**{statistics.median(r):,.0f}** ({', '.join(f'{x:,.0f}' for x in r)})" for r in rates.values()]
            compare.append(f"| {count_s} units, {efmt}, 2 workers | {' | '.join(cells)} |")
        load = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    day = datetime.date.today().isoformat()
    lines = [
        BEGIN, "",
        f"Measured {day} on this project's machine ({os.cpu_count()} cores, shared: load average {load_before:.1f} "
        f"before, {load:.1f} after); core `{core_id}`; format `{fmt}`; the order cycles through the {len(PAIRS)} "
        "example (profile, site) pairs. Wall seconds of the whole command (start-up, checks and the shared boot "
        "files included); units/min (report) is over the run itself, from the first seal; the seal share is the "
        "part of the run the main thread spent sealing.",
        "",
        "| run | wall s | units/min (wall) | units/min (report) | seal share | image bytes a unit |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]  # fmt: skip
    if compare:
        lines += ["", "Threads or processes: `oemkit.line.run` in-process, the same order with each executor "
                  f"alternately, {args.rounds} rounds: units/min, median (each round):", "",
                  "| order | threads | processes |", "|---|---:|---:|",
                  *compare]  # fmt: skip
    text = "\n".join([*lines, "", END])
    print(text)
    if args.write:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
