"""First boot: verify the unit config, check this is the box it was built for, plan, apply once, report.

Console contract: the OEM banner, the fixed "powered by" line, one line per step, and as the very last line
`OEMKIT-STATUS {json}` (status READY|FAILED, model, serial, reason, steps with seconds). Tools read that line,
never the prose. The same facts go to var/lib/oemkit/status.json and report.json for phoning home.
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

from hypervisor_core import __version__, config
from hypervisor_core.apply import StepResult, apply_plan
from hypervisor_core.backends.host import HostBackend, write_atomic
from hypervisor_core.facts import Facts, load_facts, probe
from hypervisor_core.match import Refusal, match
from hypervisor_core.plan import STATE_DIR, make_plan

POWERED_BY = f"powered by oemkit core {__version__}"
DONE = "firstboot.done"


class Console:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _status_doc(
    status: str, cfg: config.UnitConfig | None, reason: str | None, steps: list[StepResult], **extra: Any
) -> dict[str, Any]:
    return {
        "status": status,
        "model": cfg.model if cfg else None,
        "serial": cfg.serial if cfg else None,
        "reason": reason,
        "steps": [{"id": s.id, "seconds": s.seconds} for s in steps],
        **extra,
    }


def run(
    cfg_raw: bytes,
    public_key: bytes | None,
    root: Path,
    connect: Callable[[], Any],
    facts: Facts | None = None,
    force: bool = False,
    live: bool = False,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """The whole first boot. Returns the report; never raises — a bad config, a wrong box or a failure of our own
    all end as FAILED with a reason, and the status line is always the last thing on the console."""
    console = Console(out)
    state = root / STATE_DIR
    started = time.time()
    steps: list[StepResult] = []
    # Once a box is configured, only a run that applies (with --force) may replace its status and report.
    configured = (state / DONE).exists() and not force
    last: dict[str, Any] = {}

    def finish(
        status: str, cfg: config.UnitConfig | None, reason: str | None, write: bool = not configured, **extra: Any
    ) -> dict[str, Any]:
        doc = _status_doc(status, cfg, reason, steps)  # the console line: the contract, and nothing more
        report = {
            **doc,
            **extra,
            "steps": [asdict(s) for s in steps],
            "agent": __version__,
            "started": round(started, 3),
            "finished": round(time.time(), 3),
            "content_id": cfg.content_id if cfg else None,
        }
        if write:
            try:
                write_atomic(state / "status.json", json.dumps(doc, sort_keys=True) + "\n")
                write_atomic(state / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
            except OSError as exc:  # the console still gets the status
                report["reason"] = doc["reason"] = reason or f"cannot write the status: {exc.strerror}"
        console.line("OEMKIT-STATUS " + json.dumps(doc, sort_keys=True, separators=(",", ":")))
        last["report"] = report
        return report

    try:
        return _first_boot(cfg_raw, public_key, root, connect, facts, force, live, console, state, steps, finish)
    except Exception as exc:  # our own bug or an unexpected system error: still a clear FAILED, never a traceback
        if "report" in last:
            return last["report"]
        cfg = None
        return finish("FAILED", cfg, f"internal error: {type(exc).__name__}: {exc}")


def _first_boot(
    cfg_raw: bytes,
    public_key: bytes | None,
    root: Path,
    connect: Callable[[], Any],
    facts: Facts | None,
    force: bool,
    live: bool,
    console: Console,
    state: Path,
    steps: list[StepResult],
    finish: Callable[..., dict[str, Any]],
) -> dict[str, Any]:

    try:
        cfg = config.load(cfg_raw, public_key)
    except config.ConfigError as exc:
        console.line(f"oemkit core {__version__}: unit config refused")
        return finish("FAILED", None, str(exc))
    b = cfg.branding
    console.line(f"==== {b.oem_name} {b.product} ====")
    for text in (b.banner or "").splitlines():
        console.line(text)
    if b.support_url:
        console.line(f"Support: {b.support_url}")
    console.line(POWERED_BY)
    console.line(f"unit {cfg.serial} ({cfg.model}) for site {cfg.site}, config {cfg.content_id[:19]}")

    marker = state / DONE
    if marker.exists() and not force:
        done_id = marker.read_text().strip()
        if done_id == cfg.content_id:
            console.line("first boot already done for this config: nothing to do (--force re-runs it)")
            return finish("READY", cfg, "already done", write=False)
        return finish(
            "FAILED",
            cfg,
            f"this box was already configured with {done_id}; re-run with --force to apply another config",
            write=False,
        )

    facts = facts or probe(root)
    try:
        resolution = match(cfg, facts)
    except Refusal as exc:
        console.line(f"REFUSED: {exc}")
        return finish("FAILED", cfg, str(exc))
    for warning in resolution.warnings:
        console.line(f"warning: {warning}")
    console.line(
        "uplinks: "
        + ", ".join(f"{n.name} ({n.pci_address})" for n in resolution.uplinks)
        + "; datastore: "
        + ", ".join(d.name for d in resolution.datastore)
    )

    plan = make_plan(cfg, facts, resolution, str(root))
    try:
        conn = connect()
    except Exception as exc:  # libvirt not reachable: a clear FAILED, not a traceback
        return finish("FAILED", cfg, f"cannot connect to libvirt: {exc}")
    write_atomic(state / "status.json", json.dumps(_status_doc("RUNNING", cfg, None, []), sort_keys=True) + "\n")
    from hypervisor_core.backends.libvirt import LibvirtBackend

    host = HostBackend(root, live=live)
    lv = LibvirtBackend(conn)
    resolved = {
        "uplinks": [asdict(n) for n in resolution.uplinks],
        "datastore": [asdict(d) for d in resolution.datastore],
    }

    def on_step(result: StepResult) -> None:
        steps.append(result)
        mark = "ok" if result.status == "ok" else "FAILED"
        console.line(f"[{mark:^6}] {result.id:<40} {result.seconds:7.2f}s  {result.detail}")

    def write_report() -> str:
        doc = _status_doc("READY", cfg, None, steps)
        report = {**doc, "resolved": resolved, "warnings": list(resolution.warnings)}
        write_atomic(state / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
        write_atomic(state / "status.json", json.dumps(doc, sort_keys=True) + "\n")
        write_atomic(marker, cfg.content_id + "\n")  # only now: a failed or interrupted run stays re-runnable
        return "report written, first boot marked done"

    deadline = time.monotonic() + cfg.firstboot.timeout_seconds
    _, failure = apply_plan(plan, root, host, lv, on_step, write_report, deadline)
    if failure:
        return finish("FAILED", cfg, failure, resolved=resolved)
    return finish("READY", cfg, None, resolved=resolved, warnings=list(resolution.warnings))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hypervisor_core", description="oemkit core first boot")
    ap.add_argument("--config", type=Path, help="unit config (default: ROOT/var/lib/oemkit/unit.json)")
    ap.add_argument("--pubkey", type=Path, help="factory public key (default: ROOT/etc/oemkit/factory.pub)")
    ap.add_argument("--connect", default="qemu:///system", help="libvirt URI (default: qemu:///system)")
    ap.add_argument("--root", type=Path, default=Path("/"), help="the system to configure (default: /)")
    ap.add_argument("--facts", type=Path, help="facts JSON or a sysfs-shaped tree instead of probing ROOT")
    ap.add_argument("--force", action="store_true", help="run again although first boot is done")
    args = ap.parse_args(argv)
    root = args.root.resolve()  # libvirt pools need absolute paths
    cfg_path = args.config or root / STATE_DIR / "unit.json"
    pub_path = args.pubkey or root / "etc/oemkit/factory.pub"
    out = Console(sys.stdout)
    try:
        raw = cfg_path.read_bytes()
        public = config.read_public_key(pub_path.read_text(errors="replace"))
        facts = load_facts(args.facts) if args.facts else None
    except (OSError, ValueError, KeyError, TypeError, config.ConfigError) as exc:
        reason = f"cannot read {getattr(exc, 'filename', None) or 'input'}: {getattr(exc, 'strerror', None) or exc}"
        out.line(
            "OEMKIT-STATUS "
            + json.dumps(
                {"status": "FAILED", "model": None, "serial": None, "reason": reason, "steps": []},
                sort_keys=True,
                separators=(",", ":"),
            )
        )
        return 1

    def connect() -> Any:
        import libvirt

        from hypervisor_core.backends import libvirt as _quiet  # noqa: F401  (libvirt's stderr printer off)

        deadline = time.monotonic() + 60  # at boot, libvirtd may still be starting
        while True:
            try:
                return libvirt.open(args.connect)
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    report = run(raw, public, root, connect, facts, args.force, live=str(root) == "/")
    return 0 if report["status"] == "READY" else 1
