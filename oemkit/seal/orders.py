"""Seal a whole order: one CSV row per unit (serial,profile,site[,model]), one sealed config per serial.

A build line runs thousands of units from a handful of (profile, site) pairs, so each pair is checked once and
each (pair, model) built once; per unit only what depends on the serial is done, by the same `seal_unit` a
single `oemkit compile` runs. A bad row is reported with its line and does not stop the others. Each file is
written whole (a temporary file, renamed) and the order's filesystem is flushed once, at its end (syncfs): after a
crash mid-order, seal it again with --force.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oemkit.catalog.store import Catalog
from oemkit.errors import OutputRefused, UnreadableInput
from oemkit.inputs import decode_utf8, read_input
from oemkit.outputs import check_new, sync_filesystem, write_output
from oemkit.problems import Problem
from oemkit.profile.check import Checked, check
from oemkit.profile.schema import serial_problem
from oemkit.seal.compile import Request, Sealer

# Every C0 control but tab, newline and carriage return; DEL and the C1 controls (what a Latin-1 file read as
# something else turns into): none of them belongs in a serial or a file name.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
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
    """The rows of an orders CSV with their line numbers. UTF-8 only (a BOM is allowed: spreadsheets write one).
    Refused whole, at its line:col, before any unit is sealed: a Latin-1 or UTF-16 file, a control character, a
    cell that spans lines (an unbalanced quote would silently swallow the rows after it), a row with more cells
    than the header has columns (a model given without a model column), a missing or unknown column."""
    file = str(path)
    text = decode_utf8(read_input(path, "orders"), file)
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        col = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        message = f"control character U+{ord(bad.group()):04X} in the orders: refused"
        raise UnreadableInput(message, file=file, line=line, column=col, hint="save the orders as plain CSV")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a cell over csv's field limit, a quote left open at the end of the file
            raise UnreadableInput(f"CSV: {exc}", file=file, line=start, column=1) from None
        if reader.line_num > start:
            message = f"a quoted cell runs from line {start} to line {reader.line_num}: an unbalanced quote?"
            hint = "no serial, profile, site or model holds a line break"
            raise UnreadableInput(message, file=file, line=start, column=1, hint=hint)
        if any(cell.strip() for cell in cells):  # blank lines are skipped, as spreadsheets write them
            rows.append((start, cells))
    if not rows:
        raise UnreadableInput(
            f"empty: orders need a header with the columns {', '.join(COLUMNS)}", file=file, line=1, column=1
        )
    (header_line, header), body = rows[0], rows[1:]
    columns = [c.strip() for c in header]
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        message = f"orders need the columns {', '.join(COLUMNS)}; missing {', '.join(missing)}"
        raise UnreadableInput(message, file=file, line=header_line, column=1)
    unknown = [c for c in columns if c not in COLUMNS + OPTIONAL]
    if unknown:  # a misspelt "modle" column must not be dropped silently
        message = f"unknown column {unknown[0]!r}; the columns are {', '.join(COLUMNS + OPTIONAL)}"
        raise UnreadableInput(message, file=file, line=header_line, column=1)
    out = []
    for line, cells in body:
        if len(cells) > len(columns):
            message = f"{len(cells)} cells, but the header has {len(columns)} columns ({', '.join(columns)})"
            raise UnreadableInput(message, file=file, line=line, column=1, hint="add the column to the header")
        out.append((line, {c: (cells[i].strip() if i < len(cells) else "") for i, c in enumerate(columns)}))
    return out


def compile_orders(
    orders: Path, key: Ed25519PrivateKey, catalog: Catalog, out_dir: Path, *, force: bool = False
) -> Iterator[RowResult]:
    """Seal every row into OUT_DIR/SERIAL.json. Without `force`, an order that would replace any existing unit
    config is refused whole before anything is written (OutputRefused): re-sealing is a decision, not a default."""
    rows = read_orders(orders)
    _check_outputs(out_dir, [row["serial"] for _, row in rows], force)
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
            out_dir.mkdir(parents=True, exist_ok=True)  # made by the first unit sealed: a refused order leaves none
            result.file = out_dir / f"{serial}.json"
            write_output(result.file, sealed.text(), force=force, durable=False)  # whole; synced once, below
        yield result
    if out_dir.is_dir():
        sync_filesystem(out_dir)  # the order is on disk when the command returns: one flush, not two fsyncs a unit


def _check_outputs(out_dir: Path, serials: list[str], force: bool) -> None:
    """Refuse the order before any work when an output it would write exists (without force) or is not a regular
    file. Only serials that can name a file are looked at; the others are refused per row later."""
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise OutputRefused("exists and is not a folder", file=str(out_dir))
    if not out_dir.is_dir():
        return
    taken = []
    for serial in serials:
        if serial_problem(serial) is None:
            try:
                check_new(out_dir / f"{serial}.json", force)
            except OutputRefused as exc:
                taken.append(exc)
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        first = taken[0]  # its hint says --force only where --force would help
        raise OutputRefused(f"{first.message}{more}; nothing was sealed", file=first.file, hint=first.hint)
