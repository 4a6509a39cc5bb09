"""A unit's disk as a qcow2 overlay on its core's shared base: what differs, found in Python cluster by cluster,
written by `qemu-io` into an overlay `qemu-img create` made with a relative backing path; and read back by
`qemu-img` (info, map, convert) for `image verify` and `image upgrade`.

Every write is whole clusters at cluster offsets, in ascending order, so qemu never copies a partial cluster up
from the base and the same changes give the same overlay bytes (qcow2 allocates clusters in write order and
stamps no time)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from oemkit.image.tools import BuildError, run_tool

CLUSTER = 1024  # measured (scripts/bench_image.py): the smallest unit overlay of 512 B..64 KiB, docs/appliance.md
CLUSTERS = (512, 1024, 2048, 4096, 16384, 65536)  # what the benchmark tries


@dataclass(frozen=True)
class Run:
    """Bytes that differ from the layer below, at `offset` of the guest disk (cluster-aligned)."""

    offset: int
    data: bytes


def changed(new: bytes, old: bytes, offset: int, cluster: int) -> list[Run]:
    """The clusters of `new` (guest bytes at `offset`, a multiple of `cluster`) that differ from `old`, the same
    range below; adjacent ones merged into one run. Pure."""
    if len(new) != len(old) or offset % cluster:
        raise ValueError("changed(): ranges of different length, or not cluster-aligned")
    runs: list[Run] = []
    start = None
    for at in range(0, len(new), cluster):
        differs = new[at : at + cluster] != old[at : at + cluster]
        if differs and start is None:
            start = at
        elif not differs and start is not None:
            runs.append(Run(offset + start, new[start:at]))
            start = None
    if start is not None:
        runs.append(Run(offset + start, new[start:]))
    return runs


def create(path: Path, backing: str, size: int, cluster: int) -> None:
    """An empty overlay at `path` over the raw `backing` (relative to `path`'s folder, as qcow2 stores it)."""
    run_tool(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}", "-u", "-b", backing, "-F", "raw",
         path.name, str(size)],
        what="qemu-img create", cwd=path.parent,
    )  # fmt: skip


def write(path: Path, runs: list[Run], work: Path) -> None:
    """Write `runs` into the qcow2 `path` in one qemu-io process (one -c per run, ascending)."""
    if not runs:
        return
    cmd = ["qemu-io", "-f", "qcow2"]
    for i, run in enumerate(sorted(runs, key=lambda r: r.offset)):
        chunk = work / f"run{i}"
        chunk.write_bytes(run.data)
        cmd += ["-c", f"write -q -s {chunk.resolve()} {run.offset} {len(run.data)}"]
    try:
        run_tool([*cmd, path.name], what="qemu-io (writing the unit's clusters)", cwd=path.parent)
    finally:
        for chunk in work.glob("run*"):
            chunk.unlink()


def info(path: Path) -> dict:
    """`qemu-img info` of the image itself (works without its backing file; -U: while a VM may hold it)."""
    done = run_tool(["qemu-img", "info", "-U", "--output=json", path.name], what="qemu-img info", cwd=path.parent)
    try:
        return dict(json.loads(done.stdout))
    except ValueError as exc:
        raise BuildError(f"qemu-img info: not JSON ({exc})") from None


def allocated(path: Path) -> list[tuple[int, int]]:
    """(start, length) of every guest range the overlay itself holds (qemu-img map: depth 0, present)."""
    done = run_tool(["qemu-img", "map", "-U", "-f", "qcow2", "--output=json", path.name], what="qemu-img map",
                    cwd=path.parent)  # fmt: skip
    try:
        rows = json.loads(done.stdout)
        return [(int(r["start"]), int(r["length"])) for r in rows if r["depth"] == 0 and r["present"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"qemu-img map: unexpected output ({exc})") from None


def guest_raw(path: Path, dest: Path) -> Path:
    """The guest's view of the qcow2 `path` (its backing applied) as a sparse raw file `dest`."""
    dest.unlink(missing_ok=True)
    run_tool(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", path.name, str(dest.resolve())],
             what="qemu-img convert (the guest's view)", cwd=path.parent)  # fmt: skip
    return dest
