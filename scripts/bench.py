"""Benchmarks, each against its floor measured in the same run. Prints Markdown; --write updates docs/benchmarks.md.

.venv/bin/python scripts/bench.py [--runs N] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, write_section

SAMPLES = REPO / "tests" / "data" / "dmi"
BEGIN, END = "<!-- bench:catalog:begin -->", "<!-- bench:catalog:end -->"

# The framework floor: a typer app with one command that prints JSON and does nothing else.
FLOOR_APP = """
import json, typer
app = typer.Typer()
@app.command()
def identify(path: str, as_json: bool = typer.Option(False, "--json")) -> None:
    print(json.dumps({"model": None}))
@app.command()
def other() -> None: ...
app()
"""


def _median_ms(cmd: list[str], runs: int, env: dict[str, str] | None = None, fresh_cache: bool = False) -> float:
    times = []
    for _ in range(runs):
        run_env = dict(env or os.environ)
        if fresh_cache:
            run_env["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="oemkit-bench-")
        t = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, env=run_env)
        times.append((time.perf_counter() - t) * 1000)
        if done.returncode != 0:  # a benchmark of an error path measures nothing
            raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return statistics.median(times)


def bench_cli(runs: int, dump: Path) -> list[tuple[str, float]]:
    py = sys.executable
    identify = [py, "-m", "oemkit", "catalog", "identify", "--json", str(dump)]
    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp) / "floor.py"
        floor.write_text(FLOOR_APP)
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(tmp) / "cache"))
        return [
            ("python -c pass (interpreter)", _median_ms([py, "-c", "pass"], runs)),
            (
                "typer app, one command printing JSON (framework floor)",
                _median_ms([py, str(floor), "identify", str(dump)], runs),
            ),
            ("oemkit catalog identify --json DUMP (cached identity index)", _median_ms(identify, runs, env)),
            (
                "oemkit catalog identify --json DUMP (cold: validates the catalog)",
                _median_ms(identify, runs, fresh_cache=True),
            ),
            ("oemkit catalog list --json", _median_ms([py, "-m", "oemkit", "catalog", "list", "--json"], runs)),
            (
                "oemkit profile validate PROFILE --site SITE --json",
                _median_ms(
                    [
                        py,
                        "-m",
                        "oemkit",
                        "profile",
                        "validate",
                        str(REPO / "profiles" / "retail-branch.yaml"),
                        "--site",
                        str(REPO / "profiles" / "sites" / "retail-ber01.yaml"),
                        "--json",
                    ],
                    runs,
                ),
            ),
        ]


def bench_inprocess(rounds: int) -> list[tuple[str, float, str]]:
    from oemkit.catalog.store import load_catalog
    from oemkit.hardware.dmi import read_report

    dumps = sorted(SAMPLES.glob("*/*/*.txt"))
    t = time.perf_counter()
    for _ in range(rounds):
        for d in dumps:
            d.read_bytes().decode("utf-8", "replace").splitlines()
    floor = time.perf_counter() - t
    catalog = load_catalog()
    t = time.perf_counter()
    for _ in range(rounds):
        for d in dumps:
            catalog.identify(read_report(d).identity)
    ours = time.perf_counter() - t
    n = rounds * len(dumps)
    t = time.perf_counter()
    for _ in range(20):
        load_catalog()
    load_ms = (time.perf_counter() - t) / 20 * 1000
    return [
        ("read + split lines of a dump (floor)", floor / n * 1e6, "µs/dump"),
        ("parse + identify a dump", ours / n * 1e6, f"µs/dump ({ours / floor:.1f}x the floor)"),
        (f"load + validate the catalog ({len(catalog)} models)", load_ms, "ms"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "box.txt"
        shutil.copyfile(SAMPLES / "dell" / "PowerEdge-R650" / "AF241F438036.txt", dump)
        cli = bench_cli(args.runs, dump)
    floor = cli[1][1]
    lines = [
        BEGIN,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine (2 cores), median of {args.runs} runs each.",
        "",
        "| command | ms | vs framework floor |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {ms:.0f} | {ms / floor:.2f}x |" for name, ms in cli]
    lines += ["", "| in-process | value | unit |", "|---|---:|---|"]
    lines += [f"| {name} | {v:.1f} | {unit} |" for name, v, unit in bench_inprocess(20)]
    lines += ["", END]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
