"""Benchmark of issue 13: a unit's power-on → READY through libvirt (`oemkit boot`: the image uploaded as a volume, an
overlay, the domain defined and started, the console streamed, everything removed) next to the plain QEMU twin of the
same image (`oemkit boot --qemu`), interleaved so both see the same load; then the burn-in of the example order (6
units: two Dell, two HPE, two Lenovo, each on its real profile and site) at --parallel 1 and 2, in units/hour on this
machine. Prints Markdown; --write puts it into docs/benchmarks.md.

    .venv/bin/python scripts/bench_burnin.py --core COREDIR [--boots N] [--write]     (root: libvirtd, QEMU)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import KEY, REPO, write_section

BEGIN, END = "<!-- bench:burnin:begin -->", "<!-- bench:burnin:end -->"
OEMKIT = str(REPO / ".venv/bin/oemkit")
ORDERS = REPO / "profiles" / "orders-example.csv"


def oemkit(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run([OEMKIT, *args], capture_output=True, text=True, cwd=REPO / "profiles")
    if done.returncode not in ok:
        sys.exit(f"oemkit {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout, time.monotonic() - started


def prepare(tmp: Path, core: Path) -> tuple[Path, Path]:
    """The example order built as qcow2 units with the tests' key (the core carries its public half)."""
    keys = tmp / "keys"
    keys.mkdir()
    (keys / "signing.key").write_bytes(KEY.read_bytes())
    os.chmod(keys / "signing.key", 0o600)
    oemkit("keys", "init", "--dir", str(keys), "--secure-boot")
    oemkit("keys", "enroll-vars", "--dir", str(keys), "-o", str(keys / "VARS.fd"))
    oemkit("line", str(ORDERS), "--core", str(core), "--key", str(keys / "signing.key"), "--keys", str(keys), "-o",
           str(tmp / "out"))  # fmt: skip
    return tmp / "out", keys / "VARS.fd"


def boot(unit: Path, vars_fd: Path, *extra: str) -> dict:
    out, wall = oemkit("boot", str(unit), "--vars", str(vars_fd), "--accel", "tcg", "--json", *extra)
    doc = json.loads(out)
    if doc["status"] != "READY":
        sys.exit(f"{unit.name} ended {doc['status']}: {doc['reason']}")
    return {"ready": doc["seconds"], "wall": wall}


def burnin(out: Path, vars_fd: Path, parallel: int) -> dict:
    text, wall = oemkit("burnin", str(out), "--vars", str(vars_fd), "--accel", "tcg", "--parallel", str(parallel),
                        "--json", "--force", ok=(0, 1))  # fmt: skip
    report = json.loads(text)
    totals = report["totals"]
    return {"parallel": parallel, "units": totals["units"], "ready": totals["ready"], "wall": wall,
            "seconds": report["seconds"], "per_hour": totals["units"] * 3600 / report["seconds"],
            "units_seconds": {u["serial"]: u["seconds"] for u in report["units"]}}  # fmt: skip


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} | {min(values):.1f}–{max(values):.1f}"


def render(rows: dict[str, list[dict]], runs: list[dict], n: int) -> str:
    q, v = rows["qemu"], rows["libvirt"]
    lines = [
        BEGIN,
        f"Median of {n} rounds (min–max), TCG, this machine (2 cores), unit J30ABC12 (retail-branch at Berlin, R650 "
        "twin, OVMF Secure Boot, a TPM), interleaved:",
        "",
        "| seconds | plain QEMU twin (`--qemu`, own swtpm) | min–max | libvirt twin (`qemu:///system`) | min–max |",
        "|---|---|---|---|---|",
        f"| power-on → READY (from QEMU start / the domain's resume) | {med([r['ready'] for r in q])} | "
        f"{med([r['ready'] for r in v])} |",
        f"| the whole `oemkit boot` (set-up, boot, power-off, clean-up) | {med([r['wall'] for r in q])} | "
        f"{med([r['wall'] for r in v])} |",
        "",
        "Burn-in of the example order (profiles/orders-example.csv: 2 × Dell R650, 2 × HPE DL360 Gen10 Plus, 2 × "
        "Lenovo SR650 V2, real profiles and sites), one libvirt host (this machine):",
        "",
        "| --parallel | units READY | seconds | units/hour | slowest unit (s) |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(f"| {r['parallel']} | {r['ready']}/{r['units']} | {r['seconds']:.0f} | {r['per_hour']:.0f} | "
                     f"{max(r['units_seconds'].values()):.0f} |")  # fmt: skip
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", type=Path, required=True, help="a built core (oemkit core build, with tests' key)")
    ap.add_argument("--boots", type=int, default=2, help="rounds of plain-QEMU and libvirt boots (default 2)")
    ap.add_argument("--write", action="store_true", help="put the section into docs/benchmarks.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="oemkit-bench-burnin-") as tmp_name:
        out, vars_fd = prepare(Path(tmp_name), args.core.resolve())
        unit = out / "J30ABC12"
        rows: dict[str, list[dict]] = {"qemu": [], "libvirt": []}
        for i in range(args.boots):
            rows["qemu"].append(boot(unit, vars_fd, "--qemu"))
            rows["libvirt"].append(boot(unit, vars_fd))
            print(f"round {i + 1}: qemu {rows['qemu'][-1]}, libvirt {rows['libvirt'][-1]}", file=sys.stderr)
        runs = []
        for parallel in (1, 2):
            runs.append(burnin(out, vars_fd, parallel))
            print(f"burn-in --parallel {parallel}: {runs[-1]}", file=sys.stderr)
    text = render(rows, runs, args.boots)
    print(text)
    if args.write:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
