"""Compile a whole order: one CSV row per unit (serial,profile,site[,model]), one sealed config per serial.

A build line runs thousands of units from a handful of (profile, site) pairs, so each pair is resolved, validated
and cross-checked once; per unit only what depends on the serial is done (host name, serial checks, sealing).
A bad row is reported with its line and does not stop the others.
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

from hypervisor_core.config import ConfigError
from oemkit.catalog.store import Catalog
from oemkit.compile import Compiled, build_document, seal
from oemkit.errors import UnreadableInput
from oemkit.problems import Problem
from oemkit.profile.check import Checked, check
from oemkit.profile.lint import render_hostname
from oemkit.profile.schema_v1 import SERIAL_PATTERN

SERIAL = re.compile(SERIAL_PATTERN)
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
        raise UnreadableInput(
            f"orders need the columns {', '.join(COLUMNS)}; missing {', '.join(missing)}",
            file=str(path),
            line=1,
            column=1,
        )
    unknown = [c for c in reader.fieldnames or [] if c not in COLUMNS + OPTIONAL]
    if unknown:  # a misspelt "modle" column must not be dropped silently
        raise UnreadableInput(
            f"unknown column {unknown[0]!r}; the columns are {', '.join(COLUMNS + OPTIONAL)}",
            file=str(path),
            line=1,
            column=1,
        )
    return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a crashed run never leaves a half-written config


def compile_orders(orders: Path, key: Ed25519PrivateKey, catalog: Catalog, out_dir: Path) -> Iterator[RowResult]:
    rows = read_orders(orders)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = orders.parent
    pairs: dict[tuple[Path, Path], Checked] = {}
    seen: dict[str, int] = {}
    for line, row in rows:
        result = RowResult(line, row.get("serial", ""))
        where = (str(orders), line, 1)

        def fail(message: str, result: RowResult = result, where: tuple[str, int, int] = where) -> RowResult:
            result.problems.append(Problem(where[0], where[1], where[2], "row", message))
            return result

        serial = row["serial"]
        empty = [c for c in ("profile", "site") if not row.get(c)]
        if empty:
            yield fail(f"the {empty[0]} column is empty")
            continue
        if not SERIAL.match(serial):
            yield fail(f"serial {serial!r} is not 3-32 letters, digits and '-' (not at either end)")
            continue
        if serial.lower() in seen:
            yield fail(f"serial {serial} is already ordered on line {seen[serial.lower()]}")
            continue
        seen[serial.lower()] = line
        pair = ((base / row["profile"]).resolve(), (base / row["site"]).resolve())
        if pair not in pairs:
            pairs[pair] = check(pair[0], pair[1], None, catalog.root, catalog=catalog)
        res = pairs[pair].resolved
        if res.errors or res.profile is None or res.site is None:
            result.problems += res.errors or res.problems
            yield result
            continue
        p = res.profile
        model_id = row.get("model") or (p.models[0] if len(p.models) == 1 else "")
        if model_id not in p.models:
            yield fail(f"model {model_id or '(none)'} is not one of {', '.join(p.models)}: set the model column")
            continue
        model = catalog.get(model_id)
        hostname = render_hostname(p.host.hostname, res.site.site.code, serial, model_id)
        if len(hostname.split(".")[0]) > 63:
            yield fail(f"host name {hostname!r} would be longer than 63 characters")
            continue
        try:
            compiled = Compiled(serial, [], seal(build_document(p, model, res.site.site.code, serial), key))
        except ConfigError as exc:  # the agent's own reader refuses it: report the row, go on with the order
            yield fail(f"the sealed config would be refused on the box: {exc}")
            continue
        result.file = out_dir / f"{serial}.json"
        _write(result.file, compiled.text())
        yield result
