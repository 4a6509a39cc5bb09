"""Zero-touch phone home, the box's side (docs/zero-touch.md): enrol the unit key once with the enrolment token,
then deliver the spooled first-boot reports, READY or FAILED, signed, oldest first.

`python3 -m hypervisor_core.phonehome` runs at every boot after the agent. It trusts only the URL and CA of the
unit config as the agent trusts it (the factory's signature checked: an unsigned or foreign config never makes the
box talk to anything), spools the agent's report.json once per report, enrols if it must, delivers within a
deadline and prints ONE summary line on stdout (the details on stderr). What is not delivered stays spooled for
the next boot. `--init-failure REASON` spools a FAILED record (origin "init") for an agent that could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hypervisor_core import config, facts, layout, phonehttp, unitkey
from hypervisor_core.fsutil import link_on_the_way, read_regular, write_atomic
from hypervisor_core.layout import Layout
from hypervisor_core.phonereport import (
    REPORT_KEYS,
    init_failure_record,
    read_agent_report,
    read_core_id,
    spool_once,
    wrong_box,
)
from hypervisor_core.spool import MAX_BODY_BYTES, Entry, Spool, SpoolError

DEADLINE_S = 60.0  # the whole run: enrolment, every report, every retry
REQUEST_TIMEOUT_S = 10.0
RETRIES = 3  # after the first try: 1 s, 2 s, 4 s, each plus up to a quarter more (jitter)
BACKOFF_S = 1.0
MAX_KEY_BYTES = 64 << 10
SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{1,30}[A-Za-z0-9]")  # the contract's rule for a serial in a path
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
Post = Callable[[phonehttp.Endpoint, str, bytes, Mapping[str, str], float], phonehttp.Answer]


@dataclass
class Outcome:
    delivered: int = 0
    rejected: int = 0
    spooled: int = 0
    enrolled_now: bool = False
    why: str | None = None  # why what is spooled stays spooled

    def line(self) -> str:
        counts = [f"delivered {self.delivered}"] + ([f"rejected {self.rejected}"] if self.rejected else [])
        text = ("enrolled, " if self.enrolled_now else "") + ", ".join([*counts, f"spooled {self.spooled}"])
        return f"phone home: {text}" + (f" ({self.why})" if self.why else "")


class PhoneHome:
    """One run's enrolment and delivery for one unit."""

    def __init__(self, state: Layout, serial: str, ep: phonehttp.Endpoint, seed: bytes, spool: Spool, *,
                 deadline_s: float = DEADLINE_S, post: Post = phonehttp.post,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = print) -> None:  # fmt: skip
        self.layout, self.serial, self.ep, self.seed, self.spool = state, serial, ep, seed, spool
        self.public = unitkey.public_key(seed)
        self.post, self.sleep, self.clock, self.say = post, sleep, clock, say
        self.deadline = clock() + deadline_s
        self.outcome = Outcome()

    def run(self) -> Outcome:
        why = self.enrol()
        if why is None:
            self.deliver()
        else:
            self.outcome.why = why
        self.outcome.spooled = len(self.spool.entries())
        return self.outcome

    # ------------------------------------------------------------------------------------------------ enrolment
    def enrol(self) -> str | None:
        """None once the unit is enrolled (before or now); otherwise why it is not."""
        marker, token_path = self.layout.phonehome_enrolled, self.layout.enrol_token
        if marker.exists():
            _remove(token_path)  # burned by the service already: a copy from the config partition again
            return None
        if not os.path.lexists(token_path):
            return "not enrolled: no enrolment token on this box"
        try:
            token = read_regular(token_path, 1024).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return f"not enrolled: cannot read the enrolment token: {getattr(exc, 'strerror', None) or exc}"
        if not TOKEN.fullmatch(token):
            return "not enrolled: the enrolment token file holds no token (43 base64url characters)"
        body = json.dumps({"token": token, "public_key": unitkey.public_b64(self.seed)}).encode()
        answer = self._exchange(f"/v1/units/{self.serial}/enrol", body, {})
        if isinstance(answer, str):
            return f"enrolment: {answer}"
        if answer.status != 200:
            what = {
                403: "the service does not accept this unit's token (an admin may re-register the unit)",
                409: "the unit is already bound to another key",
            }.get(answer.status, answer.detail)
            return f"enrolment refused ({_status(answer)}): {what}; the token is kept"
        mine = {"serial": self.serial, "public_key": unitkey.public_b64(self.seed)}
        write_atomic(marker, json.dumps(mine) + "\n", 0o644, mkdir=True)  # first: a crash after it leaves a token
        _remove(token_path)
        self.outcome.enrolled_now = True
        self.say(f"phone home: enrolled {self.serial} at {self.ep.where('')}")
        return None

    # ------------------------------------------------------------------------------------------------- delivery
    def deliver(self) -> None:
        """Every entry, oldest first, until one cannot be delivered now (the order is the sequence's)."""
        for entry in self.spool.entries():
            if not self._deliver(entry):
                return

    def _deliver(self, entry: Entry) -> bool:
        """Deliver or set aside one entry: True to go on with the next, False to stop (outcome.why says why)."""
        if entry.body is None or entry.signature is None or entry.seq is None:
            fields = {k: entry.report.get(k) for k in REPORT_KEYS}
            doc = {**fields, "serial": self.serial, "id": entry.id, "made_at": entry.made_at}
            try:
                seq = doc["seq"] = self.spool.next_seq()  # durable before the entry carries it
            except (SpoolError, OSError) as exc:
                self.outcome.why = str(exc)
                return False
            try:
                raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")
            except ValueError:  # NaN or infinity in an entry's report: no JSON the service reads
                return self._reject(entry, "its report holds a number JSON cannot carry (NaN or infinity)")
            if len(raw) > MAX_BODY_BYTES:
                return self._reject(entry, f"its body would be {len(raw)} bytes; the contract's limit is 64 KiB")
            entry.seq, entry.body, entry.signature = seq, raw.decode("ascii"), unitkey.sign_report(self.seed, raw)
            try:
                self.spool.save(entry)  # the exact bytes kept: every retry sends them again
            except OSError as exc:
                self.outcome.why = f"cannot write the spool: {exc.strerror or exc}"
                return False
        else:
            raw = entry.body.encode("ascii")
            if not unitkey.verify_report(self.public, raw, entry.signature):
                return self._reject(entry, "its signature does not verify with this unit's key")
        signature = {"X-Oemkit-Signature": f"ed25519={entry.signature}"}
        answer = self._exchange(f"/v1/units/{self.serial}/reports", raw, signature)
        if isinstance(answer, str):
            self.outcome.why = answer
            return False
        if answer.status == 201 or (answer.status == 409 and answer.code == "duplicate"):
            self.spool.remove(entry)
            self.outcome.delivered += 1
            return True
        if answer.status == 409 and answer.code == "replay":
            last = answer.doc.get("last_seq")
            if isinstance(last, int) and not isinstance(last, bool) and 0 < last < 10**18:
                self._catch_up(last)
            return self._reject(entry, f"replay: the service has seen sequence {last}; this report is {entry.seq}")
        if answer.status in (401, 403):  # the unit's standing, not this report: every report would get the same
            self.outcome.why = f"{_status(answer)}: {answer.detail}"
            return False
        if 400 <= answer.status < 500:
            return self._reject(entry, f"{_status(answer)}: {answer.detail}")
        self.outcome.why = f"unexpected answer HTTP {answer.status}"
        return False

    def _catch_up(self, last: int) -> None:
        """The service has seen `last` (the state was restored from an old copy?): never use it again."""
        try:
            if last > self.spool.last_seq():
                self.spool.set_seq(last)
        except (SpoolError, OSError) as exc:
            self.say(f"phone home: cannot move the sequence on to {last}: {exc}")

    def _reject(self, entry: Entry, reason: str) -> bool:
        self.spool.reject(entry.path, reason)
        self.outcome.rejected += 1
        return True

    def _exchange(self, path: str, body: bytes, headers: Mapping[str, str]) -> phonehttp.Answer | str:
        """The service's answer (any status but 429 and 5xx), or why there is none within the retries and the
        deadline: refused, timed out, 5xx, rate limited. Waits 1 s, 2 s, 4 s (+ jitter) or what Retry-After says."""
        why = "deadline reached"
        for attempt in range(RETRIES + 1):
            left = self.deadline - self.clock()
            if left <= 0:
                return why
            wait = BACKOFF_S * 2**attempt * (1 + random.uniform(0, 0.25))
            try:
                answer = self.post(self.ep, path, body, headers, min(REQUEST_TIMEOUT_S, left))
            except phonehttp.TransportError as exc:
                if exc.permanent:
                    return str(exc)
                why = str(exc)
            else:
                if answer.status == 429:
                    why = "rate limited (429)"
                    wait = answer.retry_after if answer.retry_after is not None else wait
                elif answer.status >= 500:
                    why = f"HTTP {answer.status} from the service"
                else:
                    return answer
            if attempt == RETRIES:
                break
            if self.clock() + wait > self.deadline:
                return f"{why}; retrying after {wait:.0f} s would pass the deadline"
            self.sleep(wait)
        return why


def _status(answer: phonehttp.Answer) -> str:
    return f"{answer.status} {answer.code}" if answer.code else str(answer.status)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a folder where the token was: said, never a traceback
        print(f"phone home: cannot remove {path}: {exc.strerror or exc}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------- the CLI
class Unusable(Exception):
    """An input the run cannot go on without; `str()` says which and why."""


def _read_config(config_path: Path, key_path: Path) -> config.UnitConfig:
    """The unit config, verified exactly as the agent verifies it (firstboot.read_inputs, config.load)."""
    try:
        raw = read_regular(config_path, config.MAX_BYTES)
    except OSError as exc:
        raise Unusable(f"cannot read the unit config {config_path}: {exc.strerror or exc}") from None
    try:
        public = config.read_public_key(read_regular(key_path, MAX_KEY_BYTES).decode(errors="replace"))
    except OSError as exc:
        raise Unusable(f"cannot read the factory key {key_path}: {exc.strerror or exc}") from None
    except config.ConfigError as exc:
        raise Unusable(f"{key_path}: {exc}") from None
    try:
        return config.load(raw, public)
    except config.ConfigError as exc:
        raise Unusable(f"unit config refused: {exc}") from None


def main(
    argv: list[str] | None = None, *, post: Post = phonehttp.post, sleep: Callable[[float], None] = time.sleep
) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m hypervisor_core.phonehome", description="oemkit phone home")
    ap.add_argument("--root", type=Path, default=Path("/"), help="the system whose state is used (default: /)")
    ap.add_argument("--config", type=Path, help=f"unit config (default: ROOT/{layout.UNIT_CONFIG})")
    ap.add_argument("--pubkey", type=Path, help=f"factory public key (default: ROOT/{layout.FACTORY_KEY})")
    ap.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds for the whole run (default: 60)")
    ap.add_argument("--init-failure", metavar="REASON", help="spool a FAILED record for an agent that could not run")
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
        seed = unitkey.load_or_create(state.unit_key)
        spool = Spool(state.spool, state.spool_rejected, state.phonehome_seq, say)
        if report:
            spool_once(state, spool, report)
        if args.init_failure is not None:
            record = init_failure_record(args.init_failure, facts.boot_state(state.root), core_id, cfg.content_id)
            spool.add(record, time.time())
    except (Unusable, phonehttp.EndpointError, unitkey.UnitKeyError, SpoolError) as exc:
        print(f"phone home: REFUSED: {exc}")
        return 1
    except OSError as exc:
        print(f"phone home: REFUSED: its state {exc.filename}: {exc.strerror or exc}")
        return 1
    try:
        run = PhoneHome(state, cfg.serial, ep, seed, spool, deadline_s=args.deadline, post=post, sleep=sleep, say=say)
        outcome = run.run()
    except (SpoolError, OSError) as exc:
        print(f"phone home: stopped: {exc}")
        return 1
    print(outcome.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
