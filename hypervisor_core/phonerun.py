"""One run of phone home for one unit (docs/zero-touch.md, "On the box"): enrol the unit key if this box is not
enrolled as this serial with this key, then deliver the spooled reports, and any this run could not spool, oldest
first, within one deadline. hypervisor_core/phonehome.py is the command around it.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hypervisor_core import phonehttp, unitkey
from hypervisor_core.fsutil import read_regular, write_atomic
from hypervisor_core.layout import Layout
from hypervisor_core.phonereport import REPORT_KEYS
from hypervisor_core.spool import MAX_BODY_BYTES, Entry, Spool, SpoolError

DEADLINE_S = 60.0  # the whole run: enrolment, every report, every retry
REQUEST_TIMEOUT_S = 10.0
BACKOFF_S, BACKOFF_CAP_S, JITTER = 1.0, 8.0, 0.25  # 1, 2, 4, 8, 8... s, each plus up to a quarter more
MIN_TRY_S = 1.0  # a retry is made only with at least this left of the deadline
SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{1,30}[A-Za-z0-9]")  # the contract's rule for a serial in a path
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
NOT_ENROLLED = "not enrolled"
Post = Callable[[phonehttp.Endpoint, str, bytes, Mapping[str, str], float], phonehttp.Answer]


@dataclass
class Outcome:
    delivered: int = 0
    rejected: int = 0
    spooled: int = 0
    unsaved: int = 0  # records of this boot neither spooled nor delivered
    enrolled_now: bool = False
    why: str | None = None  # why what is spooled stays spooled
    delivered_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        counts = [f"delivered {self.delivered}"] + ([f"rejected {self.rejected}"] if self.rejected else [])
        counts += [f"spooled {self.spooled}"] + ([f"not spooled {self.unsaved}"] if self.unsaved else [])
        text = ("enrolled, " if self.enrolled_now else "") + ", ".join(counts)
        return f"phone home: {text}" + (f" ({self.why})" if self.why else "")


class _Stop(Exception):
    """This report cannot go now, nor any after it: `str()` says why."""


class _SetAside(Exception):
    """This report can never go: `str()` says why."""


def oserror(exc: OSError, path: Path) -> str:
    """`exc` with the path it concerns: exc.filename is None for a write that found the disk full."""
    return f"{exc.filename or path}: {exc.strerror or exc}"


class PhoneHome:
    """One run's enrolment and delivery for one unit."""

    def __init__(self, state: Layout, serial: str, ep: phonehttp.Endpoint, seed: bytes, spool: Spool, *,
                 deadline_s: float = DEADLINE_S, post: Post = phonehttp.post, unspooled: Sequence[Entry] = (),
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = print) -> None:  # fmt: skip
        self.layout, self.serial, self.ep, self.seed, self.spool = state, serial, ep, seed, spool
        self.public, self.public_b64 = unitkey.public_key(seed), unitkey.public_b64(seed)
        self.unspooled = list(unspooled)  # this boot's records the spool had no room for: sent last, from memory
        self.post, self.sleep, self.clock, self.say = post, sleep, clock, say
        self.deadline = clock() + deadline_s
        self.outcome = Outcome()
        self.done: set[str] = set()  # ids delivered or set aside by this run

    def run(self) -> Outcome:
        why = self.enrol()
        if why is None:
            self.deliver()
        else:
            self.outcome.why = why
        try:
            self.outcome.spooled = len(self.spool.entries())
        except (SpoolError, OSError) as exc:
            self.say(f"phone home: the spool cannot be listed: {exc}")
        self.outcome.unsaved = sum(e.id not in self.done for e in self.unspooled)
        return self.outcome

    # ------------------------------------------------------------------------------------------------ enrolment
    def standing(self) -> str | None:
        """None when the enrolled marker names this serial and this unit key; else why this box is not enrolled
        as that (a unit key made again because unit.key vanished, another serial's config, a marker not ours)."""
        path = self.layout.phonehome_enrolled
        try:
            doc = json.loads(read_regular(path, 4096))
        except FileNotFoundError:
            return NOT_ENROLLED
        except (OSError, ValueError, RecursionError):
            doc = None
        serial, key = (doc.get("serial"), doc.get("public_key")) if isinstance(doc, dict) else (None, None)
        if not isinstance(serial, str) or not isinstance(key, str) or not SERIAL.fullmatch(serial):
            return f"{path} names no serial and unit key"
        if serial != self.serial:
            return f"enrolled as {serial}, not as {self.serial}"
        return None if key == self.public_b64 else f"enrolled as {serial} with another key"

    def enrol(self) -> str | None:
        """None once the unit is enrolled (before or now); otherwise why it is not."""
        marker, token_path = self.layout.phonehome_enrolled, self.layout.enrol_token
        standing = self.standing()
        if standing is None:
            _remove(token_path)  # burned by the service already: a copy from the config partition again
            return None
        if not os.path.lexists(token_path):
            if standing == NOT_ENROLLED:
                return "not enrolled: no enrolment token on this box"
            return f"{standing}: needs re-registration (no enrolment token on this box); the reports are kept"
        if standing != NOT_ENROLLED:
            self.say(f"phone home: {standing}: enrolling again with the enrolment token")
        try:
            token = read_regular(token_path, 1024).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return f"not enrolled: cannot read the enrolment token: {getattr(exc, 'strerror', None) or exc}"
        if not TOKEN.fullmatch(token):
            return "not enrolled: the enrolment token file holds no token (43 base64url characters)"
        body = json.dumps({"token": token, "public_key": self.public_b64}).encode()
        answer = self._exchange(f"/v1/units/{self.serial}/enrol", body, {})
        if isinstance(answer, str):
            return f"enrolment: {answer}"
        if answer.status != 200:
            what = {
                403: "the service does not accept this unit's token (an admin may re-register the unit)",
                409: "the unit is bound to another key: it needs re-registration",
            }.get(answer.status, answer.detail)
            return f"enrolment refused ({_status(answer)}): {what}; the token is kept"
        self.outcome.enrolled_now = True
        self.say(f"phone home: enrolled {self.serial} at {self.ep.where('')}")
        try:  # the marker first: a crash after it leaves a token, never a box that forgot it enrolled
            write_atomic(marker, json.dumps({"serial": self.serial, "public_key": self.public_b64}) + "\n", 0o644,
                         mkdir=True)  # fmt: skip
        except OSError as exc:  # a full disk: enrolled all the same; the token kept enrols again (same key: 200)
            self.say(f"phone home: cannot keep the enrolment ({oserror(exc, marker)}): the token is kept")
            return None
        _remove(token_path)
        return None

    # ------------------------------------------------------------------------------------------------- delivery
    def deliver(self) -> None:
        """Every entry, oldest first, until one cannot be delivered now (the order is the sequence's)."""
        try:
            spooled = self.spool.entries()
        except (SpoolError, OSError) as exc:
            self.say(f"phone home: the spool cannot be read: {exc}")
            spooled = []
        for entry in [*spooled, *self.unspooled]:
            if entry.in_memory and entry.id in self.done:
                continue  # spooled after all (a write that failed late), and delivered as such
            try:
                self._deliver(entry)
            except _Stop as stop:
                self.outcome.why = str(stop)
                return
            except _SetAside as aside:
                self._reject(entry, str(aside))

    def _deliver(self, entry: Entry) -> None:
        """Deliver one entry; _Stop when it cannot go now, _SetAside when it never can."""
        if entry.body is None or entry.signature is None or entry.seq is None:
            self._sign(entry)
        elif not unitkey.verify_report(self.public, entry.body.encode("ascii"), entry.signature):
            raise _SetAside("its signature does not verify with this unit's key")
        renumbered = False
        while True:
            assert entry.body is not None and entry.signature is not None
            signature = {"X-Oemkit-Signature": f"ed25519={entry.signature}"}
            answer = self._exchange(f"/v1/units/{self.serial}/reports", entry.body.encode("ascii"), signature)
            if isinstance(answer, str):
                raise _Stop(answer)
            if answer.status == 201 or (answer.status == 409 and answer.code == "duplicate"):
                self.spool.remove(entry)
                self.outcome.delivered += 1
                self.done.add(entry.id)
                self.outcome.delivered_ids.append(entry.id)
                return
            if answer.status == 409 and answer.code == "replay":
                # The id is new to the service (else: duplicate), its number is not: the state was restored from
                # an older copy. Catch up and send it again under a number above the service's, once.
                last = answer.doc.get("last_seq")
                if renumbered or not (isinstance(last, int) and not isinstance(last, bool) and 0 <= last < 10**18):
                    raise _SetAside(f"replay: the service has seen sequence {last}; this report is {entry.seq}")
                self.say(f"phone home: the service has seen sequence {last}: {entry.name} is numbered again")
                self._sign(entry, above=last)
                renumbered = True
                continue
            if answer.status == 401:  # the unit's standing, not this report: every report would get the same
                raise _Stop(f"{_status(answer)}: the service knows another key for {self.serial}: the unit needs "
                            "re-registration; the reports are kept")  # fmt: skip
            if answer.status == 403:
                raise _Stop(f"{_status(answer)}: {answer.detail}")
            if 400 <= answer.status < 500:
                raise _SetAside(f"{_status(answer)}: {answer.detail}")
            raise _Stop(f"unexpected answer HTTP {answer.status}")

    def _sign(self, entry: Entry, above: int = 0) -> None:
        """Number (above `above`) and sign the entry, and keep the exact bytes in it before they are sent."""
        doc = {**{k: entry.report.get(k) for k in REPORT_KEYS}, "serial": self.serial, "id": entry.id,
               "made_at": entry.made_at, "seq": 0}  # fmt: skip
        try:
            json.dumps(doc, allow_nan=False)  # before a number is used up on it
        except ValueError:
            raise _SetAside("its report holds a number JSON cannot carry (NaN or infinity)") from None
        try:
            seq = doc["seq"] = self.spool.next_seq(above)  # durable before the entry carries it
        except SpoolError as exc:
            raise _Stop(str(exc)) from None
        except OSError as exc:
            raise _Stop(f"cannot number the report: {oserror(exc, self.spool.seq_path)}") from None
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")
        if len(raw) > MAX_BODY_BYTES:
            raise _SetAside(f"its body would be {len(raw)} bytes; the contract's limit is 64 KiB")
        entry.seq, entry.body, entry.signature = seq, raw.decode("ascii"), unitkey.sign_report(self.seed, raw)
        if entry.in_memory:
            return
        try:
            self.spool.save(entry)  # the exact bytes kept: every retry sends them again
        except OSError as exc:  # sent all the same: its id makes a resend under another number count once
            self.say(f"phone home: cannot keep the signed report ({oserror(exc, entry.path)}): sending it anyway")

    def _reject(self, entry: Entry, reason: str) -> None:
        self.done.add(entry.id)
        if entry.in_memory:
            self.say(f"phone home: dropped a report of this boot (it was never spooled): {reason}")
        else:
            self.spool.reject(entry.path, reason)
        self.outcome.rejected += 1

    def _exchange(self, path: str, body: bytes, headers: Mapping[str, str]) -> phonehttp.Answer | str:
        """The service's answer (any status but 429 and 5xx), or why there is none by the deadline. A transient
        failure (refused, reset, unreachable, timed out, 5xx, no answer) is retried until the deadline: the init
        raises the link and DHCP just before, and spanning tree may hold the port for 30 s. A 429 waits what
        Retry-After says if that fits in the deadline; otherwise this boot stops there."""
        why = "deadline reached"
        for attempt in itertools.count():
            left = self.deadline - self.clock()
            if left <= 0:
                return why
            wait = min(BACKOFF_S * 2**attempt, BACKOFF_CAP_S) * (1 + random.uniform(0, JITTER))
            try:
                answer = self.post(self.ep, path, body, headers, min(REQUEST_TIMEOUT_S, left))
            except phonehttp.TransportError as exc:
                if exc.permanent:
                    return str(exc)
                why = str(exc)
            else:
                if answer.status == 429:
                    why = "rate limited (429)"
                    if answer.retry_after is not None:
                        if self.clock() + answer.retry_after + MIN_TRY_S > self.deadline:
                            return f"{why}; retrying after {answer.retry_after:.0f} s would pass the deadline"
                        wait = answer.retry_after
                elif answer.status >= 500:
                    why = f"HTTP {answer.status} from the service"
                else:
                    return answer
            room = self.deadline - self.clock() - MIN_TRY_S
            if room <= 0:
                return f"{why}; {attempt + 1} tries until the deadline"
            self.sleep(min(wait, room))  # the last wait shortened: one more try just before the deadline
        raise AssertionError("unreachable")


def _status(answer: phonehttp.Answer) -> str:
    return f"{answer.status} {answer.code}" if answer.code else str(answer.status)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a folder where the token was: said, never a traceback
        print(f"phone home: cannot remove {path}: {exc.strerror or exc}", file=sys.stderr)
