"""A burn-in: every built unit of OUT booted on its twin, N twins at a time over one or more libvirt hosts.

`prepare` checks what the whole run needs before any twin starts (OUT holds built units, the variable store is
there, no earlier burn-in's output would be replaced without --force: a problem there is the CLI's exit 2) and
decides KVM or TCG as `oemkit boot` does. `burn_in` runs N worker threads — a unit's boot is waiting on libvirt
and the guest, never this process's CPU — each taking the next unit and the libvirt URI with the fewest twins
running then. A unit that cannot be booted (its folder unreadable, libvirt refusing its twin) fails alone, as an
infrastructure error, apart from a first boot that FAILED. Ctrl-C or SIGTERM sets the cancel event: every running
twin is destroyed and cleaned (virt.boot), the units not started are recorded cancelled, and `Interrupted` carries
the report up. The per-unit boot is a seam (`boot_one`): the tests run the scheduler without VMs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

from oemkit.burnin.boot import LibvirtBoot, OnPhase, cancelled, error
from oemkit.burnin.job import Job, Unit
from oemkit.burnin.report import Report, UnitResult
from oemkit.errors import OemkitError
from oemkit.line.audit import now
from oemkit.twin import virt

# The seam: boot one unit on the twin at a URI, honouring the cancel event (raise virt.Cancelled when it is set).
BootOne = Callable[[Unit, str, threading.Event], UnitResult]
OnStart = Callable[[Unit, str], None]  # a unit's twin is being made at the URI (called in its worker thread)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the burn-in: `report` holds what finished and what was cancelled; `code` is the
    exit code (130, 143)."""

    def __init__(self, report: Report, code: int) -> None:
        super().__init__(f"interrupted (exit {code})")
        self.report = report
        self.code = code


class Hosts:
    """The libvirt URIs and the twins running on each: a unit goes to the one with the fewest (ties: the order
    given), so N twins spread evenly over the hosts whatever each one's pace."""

    def __init__(self, uris: Sequence[str]) -> None:
        self.running = dict.fromkeys(uris, 0)
        self.lock = threading.Lock()

    def take(self) -> str:
        with self.lock:
            uri = min(self.running, key=self.running.__getitem__)  # min keeps the first of equals: the order given
            self.running[uri] += 1
            return uri

    def give(self, uri: str) -> None:
        with self.lock:
            self.running[uri] -= 1


def burn_in(
    job: Job,
    *,
    boot_one: BootOne | None = None,
    cancel: threading.Event | None = None,
    on_start: OnStart | None = None,
    on_phase: OnPhase | None = None,
    on_result: Callable[[UnitResult], None] | None = None,
) -> Report:
    """Boot every unit of `job`, `job.parallel` at a time; `on_result` is called in this thread as each finishes.
    Raises Interrupted (with the report) on Ctrl-C or SIGTERM, once every running twin is destroyed and cleaned."""
    cancel = cancel or threading.Event()
    boot_one = boot_one or LibvirtBoot(job, on_phase)
    report = Report(str(job.out), list(job.uris), job.parallel, job.accel, job.timeout, now(), accel_why=job.accel_why)
    results: list[UnitResult | None] = [None] * len(job.units)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(job.units)):
        todo.put(i)
    finished: queue.SimpleQueue[int] = queue.SimpleQueue()
    hosts = Hosts(job.uris)

    def worker() -> None:
        while not cancel.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            unit = job.units[i]
            uri = hosts.take()
            try:
                if on_start is not None:
                    on_start(unit, uri)
                results[i] = _one(boot_one, unit, uri, cancel)
            finally:
                hosts.give(uri)
            finished.put(i)

    if job.units:
        job.logs.mkdir(exist_ok=True)
    started = time.monotonic()
    # not daemons: a second Ctrl-C gives up on the report, never on cleaning the twins that are running
    threads = [threading.Thread(target=worker, name=f"burnin-{k}") for k in range(min(job.parallel, len(job.units)))]
    for thread in threads:
        thread.start()

    def deliver(i: int) -> None:
        result = results[i]
        if on_result is not None and result is not None:
            on_result(result)

    try:
        while any(t.is_alive() for t in threads) or not finished.empty():
            try:
                deliver(finished.get(timeout=0.2))  # a timeout, so Ctrl-C reaches this thread promptly
            except queue.Empty:
                continue
    except (KeyboardInterrupt, SystemExit) as exc:
        cancel.set()  # each running virt.boot destroys and cleans its twin within a second or so
        for thread in threads:
            thread.join()
        while not finished.empty():
            deliver(finished.get())
        code = 130 if isinstance(exc, KeyboardInterrupt) else exc.code if isinstance(exc.code, int) else 1
        report.interrupted = True
        _collect(report, job, results, started)
        raise Interrupted(report, code) from exc
    _collect(report, job, results, started)
    return report


def _collect(report: Report, job: Job, results: list[UnitResult | None], started: float) -> None:
    report.seconds = time.monotonic() - started
    not_started = "not started: the burn-in was interrupted"
    report.units = [r or cancelled(u, not_started) for u, r in zip(job.units, results, strict=True)]


def _one(boot_one: BootOne, unit: Unit, uri: str, cancel: threading.Event) -> UnitResult:
    """One unit's result, whatever happens: an exception is an infrastructure error, or — once the run is being
    cancelled (a tool killed by the same Ctrl-C fails too) — the unit cancelled."""
    clock = time.monotonic()
    if unit.problem is not None:
        return error(unit, uri, unit.problem)
    try:
        result = boot_one(unit, uri, cancel)
    except Exception as exc:
        if cancel.is_set() or isinstance(exc, virt.Cancelled):
            result = cancelled(unit, "interrupted while booting: its twin was destroyed and cleaned", uri)
        else:
            why = str(exc) if isinstance(exc, OemkitError) else f"{type(exc).__name__}: {exc}"
            result = error(unit, uri, why)
    result.uri, result.folder = result.uri or uri, result.folder or str(unit.folder)
    result.seconds = time.monotonic() - clock
    return result
