"""Seal a whole order: one CSV row per unit (serial,profile,site[,model]), one sealed config per serial.

A build line runs thousands of units from a handful of (profile, site) pairs, so each pair is checked once and
each (pair, model) built once; per unit only what depends on the serial is done, by the same `seal_unit` a
single `oemkit compile` runs. A bad row is reported with its line and does not stop the others. Each file is
written whole (a temporary file, renamed) and the order is flushed to disk once, at its end: after a crash
mid-order, seal it again.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypervisor_core.fsutil import write_atomic
from oemkit.catalog.store import Catalog
from oemkit.errors import UnreadableInput
from oemkit.problems import Problem
from oemkit.profile.check import Checked, check
from oemkit.seal.compile import Request, Sealer

COLUMNS = ("serial", "profile", "site")
OPTIONAL = ("model",)


@dataclass
class RowResult:
    line: int
    serial: str
    problems: list[Problem] = field(default_factory=list)
    file: Path | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "line": self.line,
            "serial": self.serial,
            "status": "error" if self.problems else "ok",
            "file": str(self.file) if self.file else None,
            "problems": [p.to_dict() for p in self.problems],
        }


def read_orders(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInput(f"cannot read orders: {exc}", file=str(path)) from None
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))  # spreadsheets write a BOM
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        message = f"orders need the columns {', '.join(COLUMNS)}; missing {', '.join(missing)}"
        raise UnreadableInput(message, file=str(path), line=1, column=1)
    unknown = [c for c in reader.fieldnames or [] if c not in COLUMNS + OPTIONAL]
    if unknown:  # a misspelt "modle" column must not be dropped silently
        message = f"unknown column {unknown[0]!r}; the columns are {', '.join(COLUMNS + OPTIONAL)}"
        raise UnreadableInput(message, file=str(path), line=1, column=1)
    return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]


def compile_orders(orders: Path, key: Ed25519PrivateKey, catalog: Catalog, out_dir: Path) -> Iterator[RowResult]:
    rows = read_orders(orders)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = orders.parent
    sealer = Sealer(key, catalog)
    pairs: dict[tuple[Path, Path], Checked] = {}
    seen: dict[str, int] = {}
    for line, row in rows:
        serial = row["serial"]
        result = RowResult(line, serial)
        where = (str(orders), line, 1)
        empty = [c for c in ("profile", "site") if not row.get(c)]
        if empty:
            result.problems.append(Problem(*where, "row", f"the {empty[0]} column is empty"))
            yield result
            continue
        if serial.lower() in seen:
            message = f"serial {serial} is already ordered on line {seen[serial.lower()]}"
            result.problems.append(Problem(*where, "row", message))
            yield result
            continue
        seen[serial.lower()] = line
        pair = ((base / row["profile"]).resolve(), (base / row["site"]).resolve())
        if pair not in pairs:
            pairs[pair] = check(pair[0], pair[1], None, catalog.root, catalog=catalog)
        request = Request(serial, row.get("model") or None, where, "the order's model column", "row")
        sealed = sealer.seal_unit(pairs[pair], request)
        result.problems += sealed.problems
        if sealed.config is not None:
            result.file = out_dir / f"{serial}.json"
            write_atomic(result.file, sealed.text(), durable=False)  # each file whole; synced once, below
        yield result
    os.sync()  # the order is on disk when the command returns: one flush instead of two fsyncs per unit
