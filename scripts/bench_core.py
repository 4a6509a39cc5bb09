"""Benchmarks of issue 5: the core's warm build, its footprint, and booting a unit on its twin next to the boot
floor (the same kernel and QEMU machine with a busybox-only initramfs) and booting the same unit with its workloads
defined but not started (autostart: false), interleaved so all three see the same load.
Prints Markdown; --write puts it into docs/benchmarks.md. Cold builds and their reproducibility:
scripts/core-repro.sh.

    .venv/bin/python scripts/bench_core.py [--boots N] [--core COREDIR] [--write]      (root: the build needs it)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import _floor
from _common import KEY, PUB, REPO, write_section

from oemkit.catalog.store import load_catalog
from oemkit.seal.compile import compile_unit
from oemkit.seal.keys import load_private_key
from oemkit.twin import accel, session

BEGIN, END = "<!-- bench:core:begin -->", "<!-- bench:core:end -->"
OEMKIT = str(REPO / ".venv/bin/oemkit")
SERIAL = "J30LAB01"
NESTED = "libvirt.start."  # the agent's steps that start a nested workload VM
STEP_LINE = re.compile(r"^\[\s*(?:ok|FAILED)\s*\] (\S+)\s+[0-9.]+s")
# (label, from mark, to mark) of the init's `oemkit-core: <phase> t=` console lines; "" is QEMU start
PHASES = (
    ("firmware + kernel (to the init's first line)", "", "init"),
    ("modules", "init", "modules"),
    ("state (state disk looked for)", "modules", "state"),
    ("host config", "state", "hostconfig"),
    ("libvirtd (virtlogd, libvirtd, its socket)", "hostconfig", "libvirtd"),
    ("config CD (to the agent mark)", "libvirtd", "agent"),
)


def build(out: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    done = subprocess.run(
        [OEMKIT, "core", "build", "-o", str(out), "--pubkey", str(PUB), "--json"], capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"core build failed: {done.stderr.strip()}")
    return wall, json.loads(done.stdout)


def unit_run(tmp: Path, name: str, unit_file: Path | None = None) -> session.TwinRun:
    unit = tmp / f"{name}.json"
    compiled = compile_unit(
        REPO / "profiles/retail-branch.yaml",
        REPO / "profiles/sites/retail-lab.yaml",
        SERIAL,
        load_private_key(KEY),
        load_catalog(),
        unit_file=unit_file,
    )
    if compiled.config is None:
        sys.exit(f"{name}: the unit did not compile: " + "; ".join(str(p) for p in compiled.problems))
    unit.write_text(compiled.text())
    return session.prepare(unit, load_catalog(), host_mib=session.host_memory_mib())


def idle_run(tmp: Path, full: session.TwinRun) -> session.TwinRun:
    """The same unit with a unit overlay that sets `autostart: false` on each of its workloads: the agent defines
    them all but starts none (the plan has a libvirt.start step only for a workload with autostart)."""
    names = [w.name for w in full.unit.workloads]
    overlay = tmp / f"{SERIAL}-idle.yaml"
    overlay.write_text(
        "apiVersion: oemkit/v1\nkind: UnitOverlay\n"
        f"serial: {SERIAL}\n"
        "overrides:\n  workloads:\n    vms:\n" + "".join(f"      - {{name: {n}, autostart: false}}\n" for n in names)
    )
    run = unit_run(tmp, "unit-idle", overlay)
    got = {w.name: w.autostart for w in run.unit.workloads}
    if sorted(got) != sorted(names) or any(got.values()):
        sys.exit(f"the autostart overlay did not take: {got} (want {names}, all false)")
    return run


def core_boot(run: session.TwinRun, core: Path, how: str) -> dict:
    """One boot to READY: the init's phases, the agent's steps, and when the first step began (console lines are
    timed as they arrive; the agent mark's line ties them to QEMU start)."""
    seen: list[tuple[float, str]] = []
    result = session.boot(run, core, accel=how, timeout=900, echo=lambda line: seen.append((time.monotonic(), line)))
    if result.status != "READY":
        sys.exit(f"boot ended {result.status}: {result.reason}\n" + "\n".join(result.tail))
    p = result.phases
    at_agent = next(t for t, line in seen if "oemkit-core: agent t=" in line)
    first_line = next(t for t, line in seen if STEP_LINE.match(line))
    steps = {s["id"]: s["seconds"] for s in result.steps}
    first_start = p["agent"] + (first_line - at_agent) - result.steps[0]["seconds"]
    phases = {label: p[b] - (p[a] if a else 0.0) for label, a, b in PHASES}
    return {
        "ready": result.seconds,
        "nested": sum(v for k, v in steps.items() if k.startswith(NESTED)),
        "split": result.split(),
        "phases": phases,
        "to_first_step": first_start - p["agent"],
        "steps": steps,
        "after_steps": result.seconds - first_start - sum(steps.values()),
        "uptime": result.guest_uptime,
    }


def med(values: Iterable[float]) -> str:
    v = list(values)
    return f"{statistics.median(v):.2f} | {min(v):.2f}–{max(v):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boots", type=int, default=3, help="rounds of floor, unit, unit without starts (default 3)")
    ap.add_argument("--core", type=Path, help="boot this built core; no warm builds")
    ap.add_argument("--write", action="store_true", help="put the section into docs/benchmarks.md")
    args = ap.parse_args()
    n = args.boots
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        walls: list[float] = []
        if args.core:
            core = args.core.resolve()
            doc = json.loads((core / "footprint.json").read_text())
        else:
            for i in range(3):
                wall, doc = build(tmp / f"core{i}")
                walls.append(wall)
            core = tmp / "core0"
        how, _ = accel.detect(core / "vmlinuz")
        run = unit_run(tmp, "unit")
        idle = idle_run(tmp, run)
        busybox = _floor.staged_busybox()
        floor_initrd = _floor.write_initramfs(tmp / "floor.cpio", busybox)
        floor_argv = _floor.argv(run, core / "vmlinuz", floor_initrd, how)
        floors: list[dict] = []
        cores: list[dict] = []
        idles: list[dict] = []
        for i in range(n):
            floors.append(_floor.boot(floor_argv))
            print(f"round {i + 1}/{n}: floor {floors[-1]['marker']:.2f} s", end="", file=sys.stderr, flush=True)
            cores.append(core_boot(run, core, how))
            print(f", core READY {cores[-1]['ready']:.2f} s", end="", file=sys.stderr, flush=True)
            idles.append(core_boot(idle, core, how))
            started = [s for s in idles[-1]["steps"] if s.startswith(NESTED)]
            if started:
                sys.exit(f"\nthe autostart: false unit still ran {', '.join(started)}")
            print(f", not started READY {idles[-1]['ready']:.2f} s", file=sys.stderr, flush=True)
    text = render(args, n, how, doc, walls, floors, cores, idles, floor_initrd.name, busybox, run.memory_mib)
    print(text)
    if args.write:
        write_section(text, BEGIN, END)


def render(
    args: argparse.Namespace,
    n: int,
    how: str,
    doc: dict,
    walls: list[float],
    floors: list[dict],
    cores: list[dict],
    idles: list[dict],
    initrd_name: str,
    busybox: Path,
    memory_mib: int,
) -> str:
    gap = doc["compressed_bytes"] - 33_554_432
    ready = [c["ready"] for c in cores]
    idle = [c["ready"] for c in idles]
    derived = [c["ready"] - c["nested"] for c in cores]
    n_vms = sum(1 for s in cores[0]["steps"] if s.startswith(NESTED))  # the full boot starts each workload once

    def ratio(values: list[float]) -> str:
        return f"{statistics.median(v / f['marker'] for v, f in zip(values, floors, strict=True)):.1f}×"

    if walls:
        built = (
            f"Warm build (cache filled, nothing changed), 3 runs: {min(walls):.1f}–{max(walls):.1f} s a build "
            f"(stages of the last: {', '.join(f'{k} {v:.1f} s' for k, v in doc['times'].items())})."
        )
    else:
        built = f"Warm build: not measured (an existing core was booted: `{args.core}`)."
    step_ids = list(cores[0]["steps"])
    rows = [
        f"| floor: first userland line | {med(f['marker'] for f in floors)} | 1.0× |",
        f"| floor: QEMU exit | {med(f['exit'] for f in floors)} | {ratio([f['exit'] for f in floors])} |",
        f"| **core READY** (QEMU start to OEMKIT-STATUS) | **{statistics.median(ready):.2f}** | "
        f"{min(ready):.2f}–{max(ready):.2f} | {ratio(ready)} |",
        f"| core READY, workloads defined but not started (autostart: false) | {med(idle)} | {ratio(idle)} |",
        *(f"| core: {label} | {med(c['phases'][label] for c in cores)} | |" for label, _, _ in PHASES),
        f"| core: agent start to first step (Python, verify, probe, match, libvirt connect) | "
        f"{med(c['to_first_step'] for c in cores)} | |",
        *(f"| core step `{s}` | {med(c['steps'].get(s, 0.0) for c in cores)} | |" for s in step_ids),
        f"| core: agent after its steps (status line) | {med(c['after_steps'] for c in cores)} | |",
    ]
    up = {k: statistics.median(c["uptime"][k] for c in cores) for k in cores[0]["uptime"]}
    floor_up = statistics.median(f["uptime"] for f in floors)
    lines = [
        BEGIN,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine (2 cores, {how.upper()}); core "
        f"`{doc['core_id']}`.",
        "",
        built,
        "",
        "| part | compressed bytes | uncompressed bytes |",
        "|---|---:|---:|",
        *(f"| {p['name']} | {p['compressed_bytes']:,} | {p['uncompressed_bytes']:,} |" for p in doc["parts"]),
        f"| **total** | **{doc['compressed_bytes']:,}** | {doc['uncompressed_bytes']:,} |",
        "",
        f"Budget {doc['budget_bytes']:,} bytes; the 32 MiB goal is {abs(gap):,} bytes "
        + (f"away ({gap / 2**20:.1f} MiB over)." if gap > 0 else f"under it ({-gap / 2**20:.2f} MiB to spare)."),
        "",
        f"### floor vs core, same run, median of {n}",
        "",
        f"Boot of unit {SERIAL} (retail-branch, lab site: 3 networks, a pool, 4 volumes, 3 domains defined and "
        f"started) on its R650 twin, next to the floor: the same kernel on the same QEMU machine (q35, "
        f"{how.upper()}, {memory_mib} MiB, SeaBIOS direct kernel boot, `console=ttyS0 panic=-1 quiet`, the twin's "
        f"NICs, disks and config CD left off) with an uncompressed initramfs ({initrd_name}) holding only the "
        f"staged static busybox ({busybox.stat().st_size:,} bytes) and an /init that prints one line and runs "
        f"`poweroff -f`. {n} rounds, each the floor, then the unit, then the same unit compiled with a unit overlay "
        f"that sets `autostart: false` on its {n_vms} workloads (the agent defines them and starts none; checked: "
        "no `libvirt.start.*` step), so all three see the same load. Wall seconds from "
        "QEMU start; the core's phases come from the init's `oemkit-core: <phase> t=` console marks (host time "
        "at each line), its steps from the seconds in OEMKIT-STATUS, and the agent's first step from the time its "
        "console line came in, less that step's seconds. × floor: the median over rounds of each time over that "
        "round's floor first-line time. The phase and step rows are of the full boot.",
        "",
        "| what | seconds (median) | min–max | × floor |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"For comparison, the old derived figure (the full boot's READY less its `libvirt.start.*` step seconds): "
        f"{statistics.median(derived):.2f} s median ({min(derived):.2f}–{max(derived):.2f}), {ratio(derived)} "
        f"floor, against {statistics.median(idle):.2f} s measured.",
        "",
        f"Guest uptime at the floor's line (median): {floor_up:.1f} s; at each core init mark (median): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in up.items())
        + ".",
        "",
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
