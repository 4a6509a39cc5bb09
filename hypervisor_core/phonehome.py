"""Zero-touch phone home, the box's side (docs/zero-touch.md): enrol the unit key once with the enrolment token,
then deliver the spooled first-boot reports, READY or FAILED, signed, oldest first.

`python3 -m hypervisor_core.phonehome` runs at every boot after the agent. It trusts only the URL and CA of the
unit config as the agent trusts it (the factory's signature checked: an unsigned or foreign config never makes the
box talk to anything), spools the agent's report.json once per report, enrols if it must, delivers within a
deadline (hypervisor_core/phonerun.py) and prints ONE summary line on stdout (the details on stderr). What is not
delivered stays spooled for the next boot; what cannot be spooled (a full disk) is sent from memory. `--init-failure
REASON` spools a FAILED record (origin "init") for an agent that could not run; `--spool-only` spools and sends
nothing (the init, before it reboots into the other bank).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypervisor_core import config, facts, layout, phonehttp, unitkey
from hypervisor_core.config import files
from hypervisor_core.fsutil import link_on_the_way
from hypervisor_core.layout import Layout
from hypervisor_core.phonereport import (
    AgentReport,
    init_failure_record,
    read_agent_report,
    read_core_id,
    remember,
    spooled_before,
    wrong_box,
)
from hypervisor_core.phonerun import DEADLINE_S, SERIAL, PhoneHome, Post, oserror
from hypervisor_core.spool import Entry, Spool, SpoolError


class Unusable(Exception):
    """An input the run cannot go on without; `str()` says which and why."""


def _read_config(config_path: Path, key_path: Path) -> config.UnitConfig:
    """The unit config, verified exactly as the agent verifies it."""
    try:
        return files.load_verified(config_path, key_path)
    except files.InputError as exc:
        raise Unusable(str(exc)) from None


def _spool_this_boot(
    state: Layout, spool: Spool, report: AgentReport | None, init: dict[str, Any] | None, say: Callable[[str], None]
) -> list[Entry]:
    """Spool this boot's records: the agent's report.json (once) and the init's failure record. Those the spool has
    no room for (disk images share the filesystem: a full disk is a first-boot failure to report) come back as
    entries held in memory, to be sent by this run."""
    records: list[tuple[dict[str, Any], float, str, str]] = []
    if report is not None and not spooled_before(state, report):
        records.append((report.record, report.made_at, report.id, "this boot's report"))
    if init is not None:  # its key chosen now: spooled after all by a write that then failed, it is still one report
        records.append((init, time.time(), secrets.token_hex(16), "the init's failure record"))
    unspooled = []
    for record, made_at, key, what in records:
        try:
            spool.add(record, made_at, key)
        except (OSError, SpoolError) as exc:
            why = oserror(exc, spool.folder) if isinstance(exc, OSError) else str(exc)
            say(f"phone home: cannot spool {what}: {why}")
            entry = spool.entry(record, made_at, key)
            entry.in_memory = True
            unspooled.append(entry)
            continue
        if report is not None and key == report.id:
            _remember(state, report, say)
    return unspooled


def _remember(state: Layout, report: AgentReport, say: Callable[[str], None]) -> None:
    try:
        remember(state, report)
    except OSError as exc:  # spooled again by the next run: the same id, so the same entry and report
        say(f"phone home: cannot note report.json as spooled ({oserror(exc, state.phonehome_last_report)})")


def _count(spool: Spool) -> int:
    try:
        return len(spool.entries())
    except (OSError, SpoolError):
        return 0


def main(
    argv: list[str] | None = None,
    *,
    post: Post = phonehttp.post,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m hypervisor_core.phonehome", description="oemkit phone home")
    ap.add_argument("--root", type=Path, default=Path("/"), help="the system whose state is used (default: /)")
    ap.add_argument("--config", type=Path, help=f"unit config (default: ROOT/{layout.UNIT_CONFIG})")
    ap.add_argument("--pubkey", type=Path, help=f"factory public key (default: ROOT/{layout.FACTORY_KEY})")
    ap.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds for the whole run (default: 60)")
    ap.add_argument("--init-failure", metavar="REASON", help="spool a FAILED record for an agent that could not run")
    ap.add_argument("--spool-only", action="store_true", help="spool this boot's records, send nothing")
    args = ap.parse_args(argv)
    if not (0 < args.deadline <= 3600):
        ap.error("--deadline must be more than 0 and at most 3600 seconds")
    state = Layout(args.root.resolve())

    def say(text: str) -> None:  # the details, on stderr; stdout has the one summary line
        print(text.encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr, flush=True)

    try:
        cfg = _read_config(args.config or state.unit_config, args.pubkey or state.factory_key)
        if cfg.phone_home is None:
            print("phone home: not configured")
            return 0
        ep = phonehttp.endpoint(cfg.phone_home.url, cfg.phone_home.ca_pem)
        if not SERIAL.fullmatch(cfg.serial):
            raise Unusable(f"serial {cfg.serial!r} cannot name the unit to the service")
        core_id = read_core_id(state.root)
        report = read_agent_report(state, core_id, say)
        wrong = wrong_box(report.record) if report else None
        if wrong and cfg.firstboot.on_hardware_mismatch == "halt":  # before any state is made
            print(f"phone home: not sent: {wrong} (firstboot.on_hardware_mismatch: halt)")
            return 0
        link = link_on_the_way(state.root, state.spool_rejected / "x")
        if link is not None:
            raise Unusable(f"{link} is a symbolic link: phone home keeps its state under {state.root} only")
        init = None
        if args.init_failure is not None:
            init = init_failure_record(args.init_failure, facts.boot_state(state.root), core_id, cfg.content_id)
    except (Unusable, phonehttp.EndpointError) as exc:
        print(f"phone home: REFUSED: {exc}")
        return 1
    except OSError as exc:
        print(f"phone home: REFUSED: {oserror(exc, state.state)}")
        return 1
    spool = Spool(state.spool, state.spool_rejected, state.phonehome_seq, say)
    unspooled = _spool_this_boot(state, spool, report, init, say)  # before the key: kept whatever happens to it
    if args.spool_only:
        lost = f", not spooled {len(unspooled)}" if unspooled else ""
        print(f"phone home: spooled {_count(spool)}{lost} (not sent: --spool-only)")
        return 1 if unspooled else 0
    try:
        seed = unitkey.load_or_create(state.unit_key)  # one that exists is read, whatever room is left
        run = PhoneHome(state, cfg.serial, ep, seed, spool, deadline_s=args.deadline, post=post,
                        unspooled=unspooled, sleep=sleep, clock=clock, say=say)  # fmt: skip
        outcome = run.run()
    except unitkey.UnitKeyError as exc:
        print(f"phone home: REFUSED: {exc}")
        return 1
    except (SpoolError, OSError) as exc:
        why = oserror(exc, state.phonehome) if isinstance(exc, OSError) else str(exc)
        print(f"phone home: stopped: {why}")
        return 1
    if report is not None and any(e.id == report.id for e in unspooled) and report.id in outcome.delivered_ids:
        _remember(state, report, say)  # delivered from memory: a later run need not spool it
    print(outcome.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
