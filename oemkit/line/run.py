"""A run of the build line: every row of an order sealed and built into OUT/<serial>/, over N workers.

`prepare` checks what the whole run needs before any unit starts (the orders readable, the core and the keys there,
the format available: a problem there is the CLI's exit 2). `run` builds the per-core shared boot files once
(`image.prepare_shared`), then seals the order in this thread — through `compile_orders`, the very code `oemkit
compile --orders` runs (each (profile, site) checked once, each blueprint built once, duplicate serials and empty
cells refused at their row), into a staging folder inside OUT — and hands each sealed unit to a worker
(`unit.run`) while it seals the next. A row that cannot be sealed fails alone, with its located problems; so does
a unit whose build fails. Ctrl-C or SIGTERM stops the run cleanly: no unit is started after it, the units being
built finish (their manifest is written whole, or not at all), and the report holds every unit that finished.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oemkit.catalog.store import Catalog, load_catalog
from oemkit.errors import OemkitError, OutputRefused, UnreadableInput
from oemkit.image.appliance import image
from oemkit.inputs import read_input
from oemkit.line import audit, unit
from oemkit.line.report import Report, UnitResult
from oemkit.outputs import sync_filesystem
from oemkit.problems import Problem
from oemkit.profile.schema import serial_problem
from oemkit.seal import secureboot
from oemkit.seal.keys import load_private_key
from oemkit.seal.orders import RowResult, compile_orders, read_orders

REPORT = "line-report.json"
# Worker threads, by measurement (docs/benchmarks.md, "Build line"): on this 2-core machine worker processes were
# not consistently faster in six comparisons (threads ahead in three by 12-37 %, processes in two by 9-13 %, one
# tie; runs of the same kind vary as much), on qcow2 (~30 ms a unit) as on raw (a few hundred ms). A unit's build is
# mostly its tools (mkfs.fat, mtools, qemu-img, qemu-io; sgdisk once per core) and fsyncs, with the GIL released,
# and sealing is ~1 ms a unit in the main thread; processes pay a forkserver start, imports per worker and a
# pickled task per unit, and each has its own caches (the catalog, the checked shared files). At parity the
# simpler one: threads. `run(executor="processes")` stays so the benchmark keeps measuring it.
EXECUTORS = ("threads", "processes")
# what `image build` makes by default: a qcow2 overlay per unit on the core's shared base (OUT/.base/)
DEFAULT_FORMAT = "qcow2" if "qcow2" in image.FORMATS else "raw"
EXIT_STOPPED = 2  # the run stopped before its end for a reason of its own, not a unit's
EXECUTOR = "threads"


@dataclass(frozen=True)
class Line:
    """What a run needs, checked."""

    orders: Path
    rows: int
    key: Ed25519PrivateKey
    catalog: Catalog
    coredir: Path
    core_id: str
    keys: secureboot.SecureBootKeys
    out: Path
    fmt: str


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) or 1


def prepare(
    orders: Path, *, key: Path, catalog_dir: Path | None, coredir: Path, keys: Path, out: Path, fmt: str | None = None
) -> Line:
    """Everything checked before any unit starts; OemkitError or ProblemsError (the CLI's exit 2) otherwise."""
    fmt = fmt or DEFAULT_FORMAT
    if fmt not in image.FORMATS:
        raise UnreadableInput(f"format {fmt!r} is not available here: one of {', '.join(image.FORMATS)}")
    rows = read_orders(orders)  # refused whole, at its line; read again as the order is sealed (it is small)
    core_json = coredir / "core.json"
    try:
        core_id = str(json.loads(read_input(core_json, "core metadata"))["core_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableInput(f"not a core's metadata: {exc}", file=str(core_json)) from None
    for name in ("vmlinuz", "initrd.img"):
        if not (coredir / name).is_file():
            raise UnreadableInput(f"no {name}: not a core folder (oemkit core build)", file=str(coredir))
    sb_keys = secureboot.load(keys)
    signing = load_private_key(key)
    catalog = load_catalog(catalog_dir)
    if os.path.lexists(out) and not out.is_dir():
        raise OutputRefused("exists and is not a folder", file=str(out))
    # OUT absolute: the report names files wherever it is read from, and no tool of a build depends on the cwd
    return Line(orders, len(rows), signing, catalog, coredir, core_id, sb_keys, out.absolute(), fmt)


def run(
    line: Line,
    *,
    workers: int,
    force: bool = False,
    executor: str = EXECUTOR,
    on_result: Callable[[UnitResult], None] | None = None,
) -> Report:
    """Seal and build every row; `on_result` is called in this thread as each unit finishes. Raises only before
    the first unit (OemkitError: the shared boot files could not be built); after that every problem is a unit's."""
    assert executor in EXECUTORS and workers >= 1
    line.out.mkdir(parents=True, exist_ok=True)
    image.prepare_shared(line.coredir, line.keys, line.out)  # before the fan-out: workers never race to write it
    report = Report(str(line.orders), str(line.out), line.core_id, line.fmt, workers, executor, audit.now(), line.rows)
    started = time.perf_counter()
    finished: queue.SimpleQueue[UnitResult | None] = queue.SimpleQueue()
    pending = 0

    def finish(result: UnitResult) -> None:
        report.units.append(result)
        if on_result is not None:
            on_result(result)

    def drain(block: bool) -> None:
        nonlocal pending
        while pending:
            try:
                result = finished.get(timeout=0.2) if block else finished.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return
            pending -= 1
            if result is not None:
                finish(result)

    folders: dict[str, str] = {}  # serial folded to lower case -> its folder: a duplicate row logs to the first's
    staging = Path(tempfile.mkdtemp(prefix=".line-sealed-", dir=line.out))
    pool = _pool(executor, workers)
    try:
        rows = compile_orders(line.orders, line.key, line.catalog, staging, force=True)
        while True:
            clock = time.perf_counter()
            row = next(rows, None)
            seconds = time.perf_counter() - clock
            report.seal_seconds += seconds
            if row is None:
                break
            folder = folders.setdefault(row.serial.lower(), row.serial)
            if row.problems or row.file is None:
                finish(_unsealed(line, row, folder, seconds))
            else:
                task = unit.Task(row.serial, row.line, row.file, audit.now(), seconds, line.coredir, line.core_id,
                                 line.keys, line.out, line.fmt, force, line.catalog.root)  # fmt: skip
                pool.submit(unit.run, task).add_done_callback(partial(_deliver, finished, task))
                pending += 1
            drain(block=False)
        drain(block=True)
    except (KeyboardInterrupt, SystemExit) as exc:
        # Stop: no unit starts after this; the running ones finish (a build writes its manifest whole or not at
        # all), and the report holds what finished. 130 for Ctrl-C; SIGTERM arrives as SystemExit(143) (cli.app).
        report.interrupted = True
        report.stop_code = 130 if isinstance(exc, KeyboardInterrupt) else exc.code if isinstance(exc.code, int) else 1
        pool.shutdown(wait=True, cancel_futures=True)
        drain(block=False)
    except (OemkitError, OSError) as exc:
        # the order could not be read on, or a sealed config not staged (a full disk): the whole line stops so
        report.error = str(exc) if isinstance(exc, OemkitError) else f"{exc.filename or line.out}: {exc.strerror}"
        report.stop_code = EXIT_STOPPED
        pool.shutdown(wait=True, cancel_futures=True)
        drain(block=False)
    finally:
        # every unit is done by now, unless a second Ctrl-C cut the wait short: then the running builds still end
        # before the process does (the interpreter joins the workers), but nobody waits for a report
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
        report.seconds = time.perf_counter() - started
    sync_filesystem(line.out)  # every unit.json, image and manifest on disk: one flush for the whole run
    return report


def _pool(executor: str, workers: int) -> Executor:
    if executor == "threads":
        return ThreadPoolExecutor(workers, thread_name_prefix="line")
    # forkserver, not fork: this process may hold threads (the progress display, the executor's own)
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint)


def _ignore_sigint() -> None:
    # a terminal's Ctrl-C reaches the whole process group: the main process decides to stop, the workers finish
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _deliver(finished: queue.SimpleQueue[UnitResult | None], task: unit.Task, future: Future[UnitResult]) -> None:
    finished.put(_outcome(future, task))  # in the thread that completed the future: the queue hands it over


def _outcome(future: Future[UnitResult], task: unit.Task) -> UnitResult | None:
    """The unit's result; None for a unit cancelled by a stop (it never started); a worker that died is a failed
    unit, not a stopped line."""
    if future.cancelled():
        return None
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return None
    return UnitResult(task.serial, task.line, "failed", f"worker: {type(exc).__name__}: {exc}", task.seal_seconds)


def _reason(problems: list[Problem]) -> str:
    errors = [p for p in problems if p.severity == "error"] or problems
    return "; ".join(
        f"{p.file}:{p.line}:{p.column}: {p.path}: {p.message}" + (f" (hint: {p.hint})" if p.hint else "")
        for p in errors
    )


def _unsealed(line: Line, row: RowResult, folder: str, seconds: float) -> UnitResult:
    """A row that could not be sealed: failed, with its located problems; logged in OUT/FOLDER/ when the serial can
    name a folder (a serial ordered twice: the first row's)."""
    result = UnitResult(row.serial, row.line, "failed", _reason(row.problems), seconds)
    if serial_problem(row.serial) is None:
        try:
            audit.record(line.out / folder, "failed", row.line, {"reason": result.reason})
        except OSError as exc:
            result.reason = f"{result.reason}; audit log: {exc.strerror or exc}"
    return result
