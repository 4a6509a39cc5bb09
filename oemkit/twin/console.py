"""Run QEMU on a twin, read the serial console, stop at the agent's OEMKIT-STATUS line (or the deadline).

The console is the only channel: the same one a factory test rack or a BMC's serial-over-LAN reads. Timings are
taken on the host for each `oemkit-core:` line the init prints, so the boot splits into kernel (QEMU start → init),
init (→ agent start) and agent (→ status).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from hypervisor_core.layout import STATUS_LINE

# Terminal control from the firmware and the kernel, which may precede a mark on its line: CSI sequences in ECMA-48's
# full grammar (SeaBIOS sends ESC[=3h), every other two-byte escape (ESC c: its reset), and the C0 controls left.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-~])|[\x00-\x08\x0b-\x1f\x7f]")
_MARK = re.compile(r"oemkit-core: (\w+) t=([0-9.]+)")
# A mark may follow the firmware's text on its line (SeaBIOS's "Booting from ROM.." ends without a newline), but
# never the agent's own output, which could carry a config's text: indented banner lines, step lines, refusals.
_NOT_MARKS = (" ", "\t", "[", "REFUSED:", STATUS_LINE)
STATUS = f"{STATUS_LINE} "
# After the status line, for the init's "ready" (state saved and synced). The init phones home between the two, within
# its own bounds (oemkit/image/core/files/init: the report network 60 s, phone home 150 s): a box whose service is
# down retries for its 60 s deadline, and a twin stopped 30 s after the status lost that boot's phone-home line.
SETTLE_SECONDS = 240.0


@dataclass
class BootResult:
    status: str  # READY | FAILED | TIMEOUT
    model: str | None
    serial: str | None
    reason: str | None
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # host seconds since QEMU start, per init mark
    guest_uptime: dict[str, float] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)  # the last console lines, for a failure's report
    bank: str | None = None  # the appliance bank the status came from (None: direct kernel boot, or unknown)
    pcr15: str | None = None  # PCR 15 as the box measured it
    boots: int = 1  # boots the console showed: more than one when the core failed on a bank on trial and rebooted
    core_failures: list[str] = field(default_factory=list)  # why each of those reboots happened, in order
    boot_started: float = 0.0  # host seconds since QEMU start at which the last boot began (its phases count from it)
    powered_off: bool = False  # QEMU exited by itself after the ready line (the core powered off, as asked)

    def split(self) -> dict[str, float | None]:
        p = self.phases
        end = self.seconds if self.status != "TIMEOUT" else None

        def span(a: float | None, b: float | None) -> float | None:
            return round(b - a, 2) if a is not None and b is not None else None

        return {
            "kernel": span(self.boot_started, p.get("init")),
            "init": span(p.get("init"), p.get("agent")),
            "agent": span(p.get("agent"), end),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "model": self.model,
            "serial": self.serial,
            "reason": self.reason,
            "seconds": round(self.seconds, 2),
            "steps": self.steps,
            "boot": self.split(),
            "phases": {k: round(v, 2) for k, v in self.phases.items()},
            "bank": self.bank,
            "pcr15": self.pcr15,
            "boots": self.boots,
            "core_failures": self.core_failures,
            "powered_off": self.powered_off,
        }


class Machine(Protocol):
    """What the console follower needs of a running twin: a plain QEMU process here, a libvirt domain in
    oemkit.twin.virt. `read` returns console bytes, b"" at the console's end, None when nothing came in time."""

    def read(self, timeout: float) -> bytes | None: ...

    def running(self) -> bool: ...

    def wait(self, timeout: float) -> int | None:
        """The exit code (0: the guest powered itself off) once stopped within `timeout`, else None."""
        ...

    def stop(self) -> None: ...


class QemuProcess:
    """QEMU as a child process, its serial console on stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def read(self, timeout: float) -> bytes | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout.fileno()], [], [], timeout)
        return os.read(self.proc.stdout.fileno(), 65536) if ready else None

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _lines(machine: Machine, deadline: Callable[[], float]):
    """Console lines as they come; stops at EOF or the deadline (which may move) even when the guest is silent."""
    buf = b""
    while True:
        left = deadline() - time.monotonic()
        if left <= 0:
            return
        chunk = machine.read(min(left, 1.0))
        if chunk is None:
            continue
        if not chunk:
            if buf:
                yield buf
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line


def watch(
    argv: list[str],
    timeout: float,
    log: IO[str] | None = None,
    echo: Callable[[str], None] | None = None,
    poweroff_wait: float = 0.0,
) -> BootResult:
    """Start `argv` (QEMU), follow its console to the status line (and the init's ready line), then stop it —
    after up to `poweroff_wait` seconds for it to exit by itself when the twin asked the core to power off."""
    started = time.monotonic()
    return follow(QemuProcess(argv), started, timeout, log, echo, poweroff_wait)


def follow(
    machine: Machine,
    started: float,
    timeout: float,
    log: IO[str] | None = None,
    echo: Callable[[str], None] | None = None,
    poweroff_wait: float = 0.0,
    label: str = "QEMU",
) -> BootResult:
    """Follow a started twin's console to the status line (and the init's ready line), then stop it; times count
    from `started` (host monotonic seconds at power-on)."""
    phases: dict[str, float] = {}
    uptime: dict[str, float] = {}
    tail: list[str] = []
    failures: list[str] = []
    boots, boot_started = 0, 0.0
    result: BootResult | None = None
    deadline = [started + timeout]  # moved closer once the status line is in
    try:
        for raw in _lines(machine, lambda: deadline[0]):
            now = time.monotonic() - started
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).replace("\r", "").rstrip()
            if log:
                log.write(f"[{now:8.2f}] {line}\n")
            if echo:
                echo(line)
            tail = [*tail, line][-30:]
            mark = None if line.startswith(_NOT_MARKS) else _MARK.search(line)
            if mark and mark.group(1) == "init":
                boots += 1
            if mark and mark.group(1) == "reboot":  # the core failed on a bank on trial: the firmware tries again
                failures.append(line[mark.end() :].strip())
                phases.clear()
                uptime.clear()
                boot_started = now
                continue
            if mark:
                phases.setdefault(mark.group(1), now)
                uptime.setdefault(mark.group(1), float(mark.group(2)))
                if mark.group(1) == "ready":  # the init has saved the state and synced: the box may be switched off
                    break
            # at the very start of a line (the agent indents the OEM's banner, so a banner can never forge one), and
            # a JSON object; anything else is console text
            if result is None and line.startswith(STATUS):
                try:
                    doc = json.loads(line[len(STATUS) :])
                except ValueError:
                    continue  # a status line cut by other console output: keep reading
                if not isinstance(doc, dict):
                    continue
                result = BootResult(
                    doc.get("status", "FAILED"),
                    doc.get("model"),
                    doc.get("serial"),
                    doc.get("reason"),
                    now,
                    doc.get("steps", []),
                    phases,
                    uptime,
                    tail,
                    doc.get("bank"),
                    doc.get("pcr15"),
                    max(boots, 1),
                    failures,
                    boot_started,
                )
                # Let the init save what first boot wrote and sync before QEMU is stopped, as a person would wait
                # for the ready line before pulling the plug; the result stands even if it never comes.
                deadline[0] = min(deadline[0], time.monotonic() + SETTLE_SECONDS)
        if result is not None:
            result.tail = tail
            if poweroff_wait and "ready" in phases:  # still up after it: stopped below, powered_off stays False
                result.powered_off = machine.wait(poweroff_wait) == 0
            return result
        elapsed = time.monotonic() - started
        if machine.running() and elapsed >= timeout:
            last = next((t for t in reversed(tail) if t.strip()), "(nothing)")
            return BootResult(
                "TIMEOUT", None, None, f"no OEMKIT-STATUS within {timeout:.0f} s; last console line: {last}",
                elapsed, [], phases, uptime, tail, None, None, max(boots, 1), failures, boot_started,
            )  # fmt: skip
        code = machine.wait(2)  # EOF on the console: the twin is stopping; "ready" without a status: it stays up
        last = next((t for t in reversed(tail) if t.strip()), "(nothing)")
        how = f"{label} exit {code}" if code is not None else "init done"
        return BootResult(
            "FAILED", None, None, f"the core ended without a status ({how}); last console line: {last}",
            elapsed, [], phases, uptime, tail, None, None, max(boots, 1), failures, boot_started,
        )  # fmt: skip
    finally:
        machine.stop()
