"""First boot: verify the unit config, check this is the box it was built for, plan, apply once, report.

Console contract: the OEM banner, the fixed "powered by" line, one line per step, and as the very last line
`OEMKIT-STATUS {json}` (status READY|FAILED, model, serial, reason, steps with seconds, the booted bank, the PCR 15
the box measured, and for a failure whose fault it is). Tools read that line, never the prose. The same facts go
to var/lib/oemkit/status.json and report.json (hypervisor_core/layout.py).
`FirstBootRun.finish` is the only place that writes a status, whatever ends the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from hypervisor_core import __version__, config, hostnet, layout
from hypervisor_core.actions import Verify
from hypervisor_core.apply import Journal, StepResult, apply_plan
from hypervisor_core.backends import Backends
from hypervisor_core.backends.host import HostFiles
from hypervisor_core.backends.libvirt import LibvirtConnection, connect
from hypervisor_core.config import files
from hypervisor_core.facts import Facts, FactsError, boot_state, load_facts, probe
from hypervisor_core.fsutil import link_on_the_way, read_regular, write_atomic
from hypervisor_core.layout import Layout
from hypervisor_core.match import Refusal, match
from hypervisor_core.plan import make_plan

POWERED_BY = f"powered by oemkit core {__version__}"
STATUS_PREFIX = f"{layout.STATUS_LINE} "
LIBVIRTD_WAIT_S = 60  # at boot, libvirtd may still be starting
MAX_MARKER_BYTES = 4 << 10  # the done marker holds one content id
TRIAL_CHECK_S = 90  # libvirtd starts autostart domains as it comes up: how long a configured box may take
# Whose a FAILED status is (its "fault"): the box or its config (a refusal: nothing applied, never the core's doing),
# a step of the plan, or the core itself (the agent's own error, libvirt unreachable). On a bank on trial the init
# reboots for "core" and "step" — a new core must do what the old one did — and never for a refusal.
REFUSAL, STEP, CORE = "refusal", "step", "core"
FAULTS = (REFUSAL, STEP, CORE)


class InputError(Exception):
    """An input of `main` that cannot be read or is not what it must be; `str()` names it and says why."""


def read_inputs(config_path: Path, key_path: Path, facts_path: Path | None) -> tuple[bytes, bytes, Facts | None]:
    """The unit config's bytes (bounded by config.MAX_BYTES; parsed later, by the run), the factory key, and the
    facts when a file or folder is given. Each file is opened once, read with a bound, and only if it is a
    regular file: a FIFO, a device or a folder given as input is refused at once, never waited on."""
    try:
        raw, public = files.read_config(config_path), files.read_key(key_path)
    except files.InputError as exc:
        raise InputError(str(exc)) from None
    try:
        facts = load_facts(facts_path) if facts_path is not None else None
    except OSError as exc:
        raise InputError(f"cannot read the facts {facts_path}: {exc.strerror or exc}") from None
    except FactsError as exc:
        raise InputError(f"{facts_path}: {exc}") from None
    return raw, public, facts


def _save(path: Path, text: str) -> None:
    write_atomic(path, text, 0o644, mkdir=True)  # under a state folder _run has checked holds no link


class FirstBootRun:
    """One run of first boot on the box (or target root) `layout` describes. Also its ReportBackend."""

    def __init__(self, state: Layout, out: TextIO = sys.stdout, force: bool = False, live: bool = False) -> None:
        self.layout = state
        self.out = out
        self.force = force
        self.live = live
        self.started = time.time()
        self.steps: list[StepResult] = []
        self.cfg: config.UnitConfig | None = None
        self.details: dict[str, Any] = {}  # what the report adds to the status: resolved devices, warnings, resume
        # the booted bank and PCR 15, in every status: known from the box before anything else is read
        self.boot: dict[str, Any] = {"boot_bank": None, "pcr15": None, "on_trial": False}
        self.trial_check_s = TRIAL_CHECK_S
        self.fault: str | None = None  # why a FAILED run failed: see FAULTS
        # Once a box is configured, only a run that applies (with --force) may replace its status and report.
        self.configured = state.done_marker.exists() and not force

    def line(self, text: str = "") -> None:
        # A path from the command line may hold undecodable bytes (lone surrogates): escaped, never a traceback.
        self.out.write(text.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")
        self.out.flush()

    def status_doc(self, status: str, reason: str | None) -> dict[str, Any]:
        """The console line's object: exactly these keys, the contract tools read."""
        cfg = self.cfg
        return {
            "status": status,
            "model": cfg.model if cfg else None,
            "serial": cfg.serial if cfg else None,
            "reason": reason,
            "steps": [{"id": s.id, "seconds": s.seconds} for s in self.steps],
            "bank": self.boot["boot_bank"],
            "pcr15": self.boot["pcr15"],
            "fault": (self.fault or "core") if status == "FAILED" else None,
        }

    def report_doc(self, status: str, reason: str | None) -> dict[str, Any]:
        return {
            **self.status_doc(status, reason),
            **self.details,
            "steps": [asdict(s) for s in self.steps],
            "agent": __version__,
            "started": round(self.started, 3),
            "finished": round(time.time(), 3),
            "content_id": self.cfg.content_id if self.cfg else None,
        }

    def _write(self, status: str, reason: str | None) -> None:
        doc, report = self.status_doc(status, reason), self.report_doc(status, reason)
        _save(self.layout.status, json.dumps(doc, sort_keys=True) + "\n")
        _save(self.layout.report, json.dumps(report, indent=2, sort_keys=True) + "\n")

    def finish(
        self, status: str, reason: str | None, *, write: bool | None = None, fault: str | None = None
    ) -> dict[str, Any]:
        """End the run: status and report files (unless this box is already configured, or `write` is False),
        then the status line, always the last thing on the console. Returns the report. `fault` says whose a
        failure is (FAULTS; a failure of our own when not said)."""
        self.fault = fault
        if write is None:
            write = not self.configured
        if write:
            try:
                self._write(status, reason)
            except OSError as exc:  # the console still gets the status
                reason = reason or f"cannot write the status: {exc.strerror}"
        self.line(STATUS_PREFIX + json.dumps(self.status_doc(status, reason), sort_keys=True, separators=(",", ":")))
        return self.report_doc(status, reason)

    def record_success(self) -> str:
        """The plan's last action: the report and status, then the marker — only now, so a failed or interrupted
        run stays re-runnable."""
        assert self.cfg is not None
        self._write("READY", None)
        _save(self.layout.done_marker, self.cfg.content_id + "\n")
        return "report written, first boot marked done"

    def run(
        self, raw: bytes, public_key: bytes | None, connect: Callable[[], Any], facts: Facts | None = None
    ) -> dict[str, Any]:
        """The whole first boot. Returns the report; never raises — a bad config, a wrong box or a failure of our
        own all end as FAILED with a reason, and the status line is always the last thing on the console."""
        try:
            return self._run(raw, public_key, connect, facts)
        except Exception as exc:  # our own bug or an unexpected system error: still a clear FAILED, never a traceback
            self.cfg = None
            return self.finish("FAILED", f"internal error: {type(exc).__name__}: {exc}")

    def _banner(self, cfg: config.UnitConfig) -> None:
        b = cfg.branding
        self.line(f"==== {b.oem_name} {b.product} ====")
        for text in (b.banner or "").splitlines():
            self.line("  " + text)  # indented: the OEM's text can never start a line as the status line does
        if b.support_url:
            self.line(f"Support: {b.support_url}")
        self.line(POWERED_BY)
        self.line(f"unit {cfg.serial} ({cfg.model}) for site {cfg.site}, config {cfg.content_id[:19]}")

    def _run(
        self, raw: bytes, public_key: bytes | None, connect: Callable[[], Any], facts: Facts | None
    ) -> dict[str, Any]:
        if facts is not None:
            self.boot = {"boot_bank": facts.boot_bank, "pcr15": facts.pcr15, "on_trial": facts.on_trial}
        else:
            self.boot = boot_state(self.layout.root)
        link = link_on_the_way(self.layout.root, self.layout.report)
        if link is not None:  # the state folder must be the root's own: a link would carry every write out of it
            why = f"{link} is a symbolic link: first boot writes its state under {self.layout.root} only"
            self.line(f"REFUSED: {why}")
            return self.finish("FAILED", why, write=False, fault=REFUSAL)
        try:
            cfg = config.load(raw, public_key)
        except config.ConfigError as exc:
            self.line(f"oemkit core {__version__}: unit config refused")
            self.line(f"REFUSED: {exc}")
            return self.finish("FAILED", str(exc), fault=REFUSAL)
        self.cfg = cfg
        self._banner(cfg)
        marker = self.layout.done_marker
        if marker.exists() and not self.force:
            try:
                done_id = read_regular(marker, MAX_MARKER_BYTES).decode(errors="replace").strip()
            except OSError as exc:
                why = f"cannot read the first-boot marker {marker}: {exc.strerror or exc}"
                self.line(f"REFUSED: {why}")
                return self.finish("FAILED", why, write=False, fault=REFUSAL)
            if done_id == cfg.content_id:
                self.line("first boot already done for this config: nothing to do (--force re-runs it)")
                if self.boot["on_trial"]:
                    # a new core on trial must show it runs this box before the init keeps it: not merely that
                    # the config is the one applied, but that libvirt holds and runs what first boot made
                    problem = self._check_on_trial(cfg, facts, connect)
                    if problem:
                        return self.finish("FAILED", f"on trial: {problem}", write=False, fault=CORE)
                    self.line("on trial: libvirt holds and runs what first boot made")
                return self.finish("READY", "already done", write=False)
            why = f"this box was already configured with {done_id}; re-run with --force to apply another config"
            return self.finish("FAILED", why, write=False, fault=REFUSAL)

        if facts is None and self.live and any(rule.link == "up" for rule in cfg.management.uplinks.rules):
            # a rule wants live ports: every port is down before anything configured it, and a down port shows
            # no carrier, so bring the box's ports up and give them a bounded moment to link, then look
            ports = [nic.name for nic in probe(self.layout.root).nics]
            try:
                hostnet.bring_up(ports, hostnet.ip_runner())
            except hostnet.HostNetError as exc:
                self.line(f"warning: cannot bring the ports up to see their links: {exc}")
        facts = facts or probe(self.layout.root)
        try:
            bound = match(cfg, facts)
        except Refusal as exc:
            self.line(f"REFUSED: {exc}")
            return self.finish("FAILED", str(exc), fault=REFUSAL)
        for warning in bound.warnings:
            self.line(f"warning: {warning}")
        uplinks = ", ".join(f"{n.name} ({n.pci_address})" for n in bound.uplinks)
        self.line(f"uplinks: {uplinks}; datastore: {', '.join(d.name for d in bound.datastore)}")
        self.details = {
            "resolved": {
                "uplinks": [asdict(n) for n in bound.uplinks],
                "datastore": [asdict(d) for d in bound.datastore],
            },
            "warnings": list(bound.warnings),
        }

        plan = make_plan(cfg, facts, bound, str(self.layout.root))
        try:
            conn = connect()
        except Exception as exc:  # libvirt not reachable: a clear FAILED, not a traceback
            return self.finish("FAILED", f"cannot connect to libvirt: {exc}")
        journal = Journal(self.layout.journal)
        resumed = journal.interrupted()
        self.details["resumed"] = resumed
        if resumed:
            self.line(f"resuming: an earlier run stopped after {len(resumed)} step(s), last {resumed[-1]}")
        _save(self.layout.status, json.dumps(self.status_doc("RUNNING", None), sort_keys=True) + "\n")
        backends = Backends(HostFiles(self.layout, live=self.live), LibvirtConnection(conn, self.layout), self)
        deadline = time.monotonic() + cfg.firstboot.timeout_seconds
        _, failure = apply_plan(plan, backends, journal, self._on_step, deadline)
        return self.finish("FAILED" if failure else "READY", failure, fault=STEP if failure else None)

    def _check_on_trial(self, cfg: config.UnitConfig, facts: Facts | None, connect: Callable[[], Any]) -> str | None:
        """What is wrong with this configured box under the core on trial, or None: the plan's own last check
        (networks active, pool active, autostart domains running), retried while libvirtd's autostart catches up."""
        try:
            facts = facts or probe(self.layout.root)
            plan = make_plan(cfg, facts, match(cfg, facts), str(self.layout.root))
            check = next(a for a in plan if isinstance(a, Verify))
            conn = connect()
        except Exception as exc:  # a core that cannot do this much is what the trial exists to catch
            return f"{type(exc).__name__}: {exc}"
        backends = Backends(HostFiles(self.layout, live=self.live), LibvirtConnection(conn, self.layout), self)
        deadline, problem = time.monotonic() + self.trial_check_s, None
        while True:
            try:
                check.run(backends)
                return None
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                return problem
            time.sleep(2)

    def _on_step(self, result: StepResult) -> None:
        self.steps.append(result)
        mark = "ok" if result.status == "ok" else "FAILED"
        self.line(f"[{mark:^6}] {result.id:<40} {result.seconds:7.2f}s  {result.detail}")


def first_boot(
    raw: bytes,
    public_key: bytes | None,
    root: Path,
    connect: Callable[[], Any],
    facts: Facts | None = None,
    *,
    force: bool = False,
    live: bool = False,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Run first boot on `root` (see FirstBootRun.run)."""
    return FirstBootRun(Layout(root), out, force=force, live=live).run(raw, public_key, connect, facts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hypervisor_core", description="oemkit core first boot")
    ap.add_argument("--config", type=Path, help=f"unit config (default: ROOT/{layout.UNIT_CONFIG})")
    ap.add_argument("--pubkey", type=Path, help=f"factory public key (default: ROOT/{layout.FACTORY_KEY})")
    ap.add_argument("--connect", default="qemu:///system", help="libvirt URI (default: qemu:///system)")
    ap.add_argument("--root", type=Path, default=Path("/"), help="the system to configure (default: /)")
    ap.add_argument("--facts", type=Path, help="facts JSON or a sysfs-shaped tree instead of probing ROOT")
    ap.add_argument("--force", action="store_true", help="run again although first boot is done")
    args = ap.parse_args(argv)
    state = Layout(args.root.resolve())  # libvirt pools need absolute paths
    boot = FirstBootRun(state, sys.stdout, force=args.force, live=str(state.root) == "/")
    try:
        raw, public, facts = read_inputs(args.config or state.unit_config, args.pubkey or state.factory_key, args.facts)
    except InputError as exc:
        # Nothing was read that could be trusted: no status is written (the box is left as it was), the console
        # says why and ends with the status line, as every run does.
        boot.line(f"REFUSED: {exc}")
        boot.finish("FAILED", str(exc), write=False, fault=REFUSAL)
        return 1
    report = boot.run(raw, public, lambda: connect(args.connect, LIBVIRTD_WAIT_S), facts)
    return 0 if report["status"] == "READY" else 1
