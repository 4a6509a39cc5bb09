"""The phone-home spool: reports waiting to be delivered, one JSON file each, oldest first (docs/zero-touch.md).

An entry is `STATE/phonehome/spool/<ns-time>-<id>.json`. It is written unsigned, with its idempotency key (`id`;
the same report spooled twice is one entry); when it is first sent it gets the next sequence number
(STATE/phonehome/seq, written and fsync'd before the entry carries it, so no number is ever used twice) and its
exact signed body and signature are written back into it, so every retry, in this boot or a later one, sends the
same bytes (numbered and signed again, same id, only when the service has seen its number). The spool is
bounded; anything in it that is not an entry of ours (not JSON, too big, a link, a FIFO, a folder) is moved aside
to `spool/rejected/` with a `.reason` file, never opened if it is not a regular file, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypervisor_core.fsutil import kind_of, read_regular, write_atomic

FORMAT = 1
MAX_ENTRIES = 64  # a box that never reaches its service: 64 boots' reports, the newest kept
MAX_REJECTED = 64  # entries set aside, kept for a look, the oldest removed
MAX_BODY_BYTES = 64 << 10  # the contract's bound on a request body
MAX_ENTRY_BYTES = 256 << 10  # the report and its signed body, escaped: well below
_NAME = re.compile(r"(?P<ns>[0-9]{20})-(?P<id>[0-9a-f]{32})\.json")
_KEY = re.compile(r"[0-9a-f]{32}")
_SEQ = re.compile(rb"\s*([0-9]{1,18})\s*")
_B64_SIG = re.compile(r"[A-Za-z0-9+/]{86}==")  # 64 bytes


class SpoolError(Exception):
    """The spool or its sequence file is unusable as a whole; `str()` says why."""


@dataclass
class Entry:
    path: Path
    id: str
    made_at: float
    report: dict[str, Any]  # the report's fields without serial, seq, id and made_at (added when it is signed)
    seq: int | None = None
    body: str | None = None  # the signed body, ASCII JSON: its bytes are what was signed and what is sent
    signature: str | None = None  # base64
    in_memory: bool = False  # it could not be spooled (a full disk): sent from memory by this run, or not at all

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def failed(self) -> bool:
        return self.report.get("status") == "FAILED"

    def to_json(self) -> str:
        doc = {"format": FORMAT, "id": self.id, "made_at": self.made_at, "report": self.report}
        doc |= {"seq": self.seq, "body": self.body, "signature": self.signature}
        return json.dumps(doc, sort_keys=True, indent=1) + "\n"


def parse_entry(path: Path, raw: bytes, name_id: str) -> Entry:
    """An entry from its file's bytes; ValueError says what is wrong with it."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deep") from None
    except ValueError as exc:  # also not UTF-8
        raise ValueError(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a spool entry of format {FORMAT}")
    if doc.get("id") != name_id:
        raise ValueError("its id is not the one in its name")
    made_at, report = doc.get("made_at"), doc.get("report")
    if not isinstance(made_at, (int, float)) or isinstance(made_at, bool) or not 0 <= made_at <= 1e11:
        raise ValueError("no made_at (seconds since 1970)")
    if not isinstance(report, dict):
        raise ValueError("no report")
    seq, body, signature = doc.get("seq"), doc.get("body"), doc.get("signature")
    if (seq, body, signature) != (None, None, None):
        if not (isinstance(seq, int) and not isinstance(seq, bool) and seq > 0):
            raise ValueError("a signed entry without a valid seq")
        if not isinstance(body, str) or not body.isascii() or len(body) > MAX_BODY_BYTES:
            raise ValueError("a signed entry whose body is not ASCII JSON of at most 64 KiB")
        if not isinstance(signature, str) or not _B64_SIG.fullmatch(signature):
            raise ValueError("a signed entry without a valid signature")
        try:
            sent = json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("its signed body is not JSON") from None
        if not isinstance(sent, dict) or sent.get("id") != name_id or sent.get("seq") != seq:
            raise ValueError("its signed body does not carry its id and seq")
    return Entry(path, name_id, float(made_at), report, seq, body, signature)


@dataclass
class Spool:
    folder: Path
    rejected: Path
    seq_path: Path
    say: Callable[[str], None] = print  # one line per thing set aside or dropped
    dropped: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------------ entries
    def entries(self) -> list[Entry]:
        """The entries, oldest first. What is not one is moved aside on the way."""
        if not self._folder(self.folder, make=False):
            return []  # nothing spooled yet; not made here: a full disk may not have room for a folder
        found = []
        for name in sorted(os.listdir(self.folder)):
            path = self.folder / name
            if path == self.rejected:
                continue
            if name.startswith(".") and name.endswith(".tmp"):  # a write a crash interrupted: never an entry
                _remove(path)
                continue
            m = _NAME.fullmatch(name)
            if m is None:
                self.reject(path, "not a spool entry's name")
                continue
            try:
                mode = os.lstat(path).st_mode
                if not stat.S_ISREG(mode):  # lstat: a link or a FIFO is moved, never followed or opened
                    self.reject(path, f"{kind_of(mode)}, not a regular file")
                    continue
                entry = parse_entry(path, read_regular(path, MAX_ENTRY_BYTES), m["id"])
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.reject(path, f"unreadable: {exc.strerror or exc}")
                continue
            except ValueError as exc:
                self.reject(path, str(exc))
                continue
            found.append(entry)
        return found

    def add(self, report: dict[str, Any], made_at: float, key: str | None = None) -> Entry:
        """Spool a report, unsigned, with its idempotency key (`key`, or a fresh one); the entry already spooled with
        that key if there is one. Then keep the spool within MAX_ENTRIES, dropping the oldest entries that are not
        FAILED first (a failure is what the central team must see)."""
        existing = self.entries()
        same = next((e for e in existing if e.id == key), None)
        if same is not None:  # spooled before (a crash came before it was remembered): one report, one entry
            self.say(f"phone home: {same.name} holds this report already: not spooled again")
            return same
        entry = self.entry(report, made_at, key, existing)
        self.save(entry)
        excess = len(existing) + 1 - MAX_ENTRIES
        if excess > 0:
            victims = [e for e in existing if not e.failed] + [e for e in existing if e.failed]
            for old in victims[:excess]:
                self.remove(old)
                status = old.report.get("status")
                self.dropped.append(old.name)
                self.say(f"phone home: spool full ({MAX_ENTRIES}): dropped the oldest {status} report {old.name}")
        return entry

    def entry(
        self, report: dict[str, Any], made_at: float, key: str | None = None, existing: list[Entry] | None = None
    ) -> Entry:
        """A new entry, not yet written: named after the newest one (`existing`, when known) and its key."""
        newest = max((int(e.name[:20]) for e in existing or []), default=0)
        ns = max(time.time_ns(), newest + 1)  # names keep the order even when the clock went back
        key = key or secrets.token_hex(16)
        if not _KEY.fullmatch(key):
            raise ValueError(f"an idempotency key is 32 hex digits, not {key!r}")
        return Entry(self.folder / f"{ns:020d}-{key}.json", key, made_at, report)

    def save(self, entry: Entry) -> None:
        write_atomic(entry.path, entry.to_json(), 0o600, mkdir=True)

    def remove(self, entry: Entry) -> None:
        _remove(entry.path)

    def reject(self, path: Path, reason: str) -> None:
        """Move `path` aside to rejected/ with a .reason file (removed instead when it cannot be moved)."""
        try:
            self._folder(self.rejected)
            os.replace(path, self.rejected / path.name)
        except (OSError, SpoolError):
            _remove(path)  # rejected/ is no folder of ours (never written through), or the move failed
            self.say(f"phone home: removed {path.name}: {reason}")
            return
        with contextlib.suppress(OSError):  # the entry is out of the way; its reason is also on the console
            write_atomic(self.rejected / f"{path.name}.reason", reason + "\n", 0o600)
        self.say(f"phone home: set aside {path.name}: {reason}")
        self._prune_rejected()

    # --------------------------------------------------------------------------------------------- sequence
    def last_seq(self) -> int:
        try:
            raw = read_regular(self.seq_path, 64)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SpoolError(f"cannot read {self.seq_path}: {exc.strerror or exc}") from None
        m = _SEQ.fullmatch(raw)
        if m is None:  # guessing could reuse a number the service has seen: refuse, keep the reports spooled
            raise SpoolError(f"{self.seq_path} holds no sequence number: reports cannot be numbered")
        return int(m[1])

    def next_seq(self, above: int = 0) -> int:
        """The next sequence number (above `above` too: one the service has seen), written durably before anyone
        uses it."""
        seq = max(self.last_seq(), above) + 1
        self.set_seq(seq)
        return seq

    def set_seq(self, seq: int) -> None:
        write_atomic(self.seq_path, f"{seq}\n", 0o600, mkdir=True)

    # ------------------------------------------------------------------------------------------------ helpers
    def _folder(self, path: Path, make: bool = True) -> bool:
        """Whether `path` is a folder (made when it is missing and `make`); SpoolError when it is something else."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            if make:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            return make
        if not stat.S_ISDIR(mode):
            raise SpoolError(f"{path} is {kind_of(mode)}, not a folder: refused")
        return True

    def _prune_rejected(self) -> None:
        try:
            items = [(os.lstat(p).st_ctime_ns, p) for p in self.rejected.iterdir()]  # ctime: when it was moved
        except OSError:
            return
        for _, path in sorted(items)[: max(0, len(items) - 2 * MAX_REJECTED)]:  # an entry and its reason each
            _remove(path)


def _remove(path: Path) -> None:
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            os.rmdir(path)  # only an empty one: a folder of ours is never walked
        else:
            path.unlink()
    except OSError:
        pass  # gone already, or not ours to remove: the next run says so again, never a loop
