"""Benchmark of issue 12: power-on to READY of a unit's appliance image (OVMF Secure Boot, swtpm, systemd-boot, the
signed UKI, config from the image's partition) next to the developer mode's direct-kernel boot of the same core with
the same unit config (SeaBIOS, kernel and initrd given to QEMU, config on a CD), interleaved so both see the same
load. The unit is the lab site's (it does not require Secure Boot, so the direct-kernel boot reaches READY too).
Prints Markdown; --write puts it into docs/benchmarks.md.

    .venv/bin/python scripts/bench_appliance.py --core COREDIR [--boots N] [--write]     (root: swtpm, QEMU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import KEY, PUB, REPO, write_section

from oemkit.catalog.store import load_catalog
from oemkit.seal.compile import compile_unit
from oemkit.seal.keys import load_private_key
from oemkit.twin import appliance, session

BEGIN, END = "<!-- bench:appliance:begin -->", "<!-- bench:appliance:end -->"
OEMKIT = str(REPO / ".venv/bin/oemkit")
SERIAL = "J30LAB01"


def oemkit(*args: str) -> str:
    done = subprocess.run([OEMKIT, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"oemkit {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def prepare(tmp: Path, core: Path) -> tuple[session.TwinRun, Path, Path, Path]:
    """The lab unit's config, its appliance image (raw), the factory's Secure Boot store, and the twin."""
    keys = tmp / "keys"
    oemkit("keys", "init", "--dir", str(keys), "--secure-boot")
    oemkit("keys", "enroll-vars", "--dir", str(keys), "-o", str(keys / "VARS.fd"))
    compiled = compile_unit(REPO / "profiles/retail-branch.yaml", REPO / "profiles/sites/retail-lab.yaml", SERIAL,
                            load_private_key(KEY), load_catalog())  # fmt: skip
    if compiled.config is None:
        sys.exit("the lab unit did not compile: " + "; ".join(str(p) for p in compiled.problems))
    unit = tmp / f"{SERIAL}.json"
    unit.write_text(compiled.text())
    manifest = json.loads(oemkit("image", "build", str(unit), "--core", str(core), "--keys", str(keys), "-o",
                                 str(tmp / "out"), "--format", "raw", "--json"))  # fmt: skip
    image = tmp / "out" / SERIAL / "appliance.raw"
    if manifest["serial"] != SERIAL or not image.is_file():
        sys.exit(f"no image at {image}")
    return session.prepare(unit, load_catalog(), host_mib=session.host_memory_mib()), core, image, keys / "VARS.fd"


def one(result: session.BootResult, what: str) -> dict:
    if result.status != "READY":
        sys.exit(f"{what} ended {result.status}: {result.reason}\n" + "\n".join(result.tail))
    split = result.split()
    return {"ready": result.seconds, "kernel": split["kernel"] or 0.0, "init": split["init"] or 0.0,
            "agent": split["agent"] or 0.0}  # fmt: skip


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", type=Path, required=True, help="a built core (oemkit core build, with tests' key)")
    ap.add_argument("--boots", type=int, default=3, help="rounds of direct-kernel and image boots (default 3)")
    ap.add_argument("--write", action="store_true", help="put the section into docs/benchmarks.md")
    args = ap.parse_args()
    if not (args.core / "core.json").is_file():
        sys.exit(f"{args.core}: not a core folder")
    if json.loads((args.core / "core.json").read_text()).get("core_id") is None:
        sys.exit(f"{args.core}: no core id")
    rows: dict[str, list[dict]] = {"direct": [], "image": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        run, core, image, vars_fd = prepare(Path(tmp_name), args.core)
        model = load_catalog().get(run.twin.model_id)
        assert model is not None
        device = appliance.boot_device(model)  # the 240 GB BOSS-S2 the state partition grows to, as `oemkit boot`
        for i in range(args.boots):
            rows["direct"].append(one(session.boot(run, core, accel="tcg", timeout=900), "direct-kernel boot"))
            booted = session.boot_image(run, image, vars_fd, boot=device, accel="tcg", timeout=900)
            rows["image"].append(one(booted, "image"))
            last = {k: v[-1]["ready"] for k, v in rows.items()}
            print(f"round {i + 1}: direct {last['direct']:.2f} s, image {last['image']:.2f} s", file=sys.stderr)
    text = render(rows, args.boots, PUB.name)
    print(text)
    if args.write:
        write_section(text, BEGIN, END)


def render(rows: dict[str, list[dict]], n: int, key: str) -> str:
    d, i = rows["direct"], rows["image"]
    lines = [
        BEGIN,
        f"Median of {n} rounds (min–max), TCG, this machine, the lab unit J30LAB01 (retail-branch, R650 twin, three "
        f"workloads started), the same core (tests' key {key}) both ways, interleaved:",
        "",
        "| seconds from QEMU start | direct kernel (SeaBIOS, config CD) | min–max | appliance image (OVMF Secure Boot, "
        "swtpm) | min–max |",
        "|---|---|---|---|---|",
    ]
    for label, key_ in (("to the init's first line (firmware + loader + kernel)", "kernel"),
                        ("init (to the agent)", "init"), ("agent (to the status line)", "agent"),
                        ("**power-on → READY**", "ready")):  # fmt: skip
        lines.append(f"| {label} | {med([r[key_] for r in d])} | {med([r[key_] for r in i])} |")
    ratio = statistics.median(r["ready"] for r in i) / statistics.median(r["ready"] for r in d)
    lines += ["", f"The image boot takes {ratio:.2f}× the direct-kernel boot's time to READY.", END]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
