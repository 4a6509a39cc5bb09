"""What a run of the line did, as data: one result per row of the order, the totals, and the two renderings the
factory's tools read — the JSON report (OUT/line-report.json, `--json`) and JUnit XML (`--junit`, for CI servers)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("ok", "skipped", "failed")
# Characters XML 1.0 cannot hold at all (a tool's stderr may carry them); they become U+FFFD in the JUnit file.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class UnitResult:
    """One row of the order. `reason` says why it failed or was skipped; `image`, `sha256` and `bytes` describe the
    image a unit that is ok or skipped has (None when it failed)."""

    serial: str
    line: int
    status: str
    reason: str | None = None
    seconds: float = 0.0  # sealing its config plus its worker's part (the rerun check, the build)
    image: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    registered: bool | None = None  # with --register: whether the provisioning service took it (None: not asked)

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        if self.registered is None:  # a run without --register: the report keeps the shape it always had
            del out["registered"]
        return out


@dataclass
class Report:
    orders: str
    out: str
    core_id: str
    format: str
    workers: int
    executor: str  # "threads" or "processes"
    started: str  # ISO 8601, UTC
    rows: int  # rows in the order: every one has a result unless the run was interrupted
    units: list[UnitResult] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the run, sealing and building
    seal_seconds: float = 0.0  # of it, the time the main thread spent sealing (checks, blueprints, signatures)
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM
    error: str | None = None  # what stopped the run before its end, when not a signal
    stop_code: int | None = None  # the exit code a stopped run ends with (not in the report)

    def count(self, status: str) -> int:
        return sum(1 for u in self.units if u.status == status)

    @property
    def failed(self) -> bool:
        return self.count("failed") > 0

    def totals(self) -> dict[str, int]:
        return {
            "units": self.rows,
            "ok": self.count("ok"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "not_run": self.rows - len(self.units),  # left when the run was interrupted
        }

    def units_per_minute(self) -> float:
        """Units finished (any status) per minute of the run's wall time."""
        return round(len(self.units) * 60 / self.seconds, 2) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "out": self.out,
            "core_id": self.core_id,
            "format": self.format,
            "workers": self.workers,
            "executor": self.executor,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "seal_seconds": round(self.seal_seconds, 3),
            "interrupted": self.interrupted,
            "error": self.error,
            "totals": self.totals(),
            "units_per_minute": self.units_per_minute(),
            "units": [u.to_dict() for u in sorted(self.units, key=lambda u: u.line)],
        }


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def junit_xml(report: Report, suite: str) -> bytes:
    """JUnit XML: one <testsuite> named `suite` (in a <testsuites>), one <testcase> per unit named by its serial in
    order of the rows; a failed unit carries <failure message=REASON>, a skipped one <skipped message=REASON>; an ok
    unit's <system-out> names its image and sha256. Units an interrupted run did not reach are not test cases."""
    totals = report.totals()
    counts = {
        "tests": str(len(report.units)),
        "failures": str(totals["failed"]),
        "errors": "0",
        "skipped": str(totals["skipped"]),
        "time": f"{report.seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "oemkit line", **counts})
    stamp = report.started.removesuffix("Z").split(".")[0]  # JUnit's timestamp: ISO 8601 without a zone
    testsuite = ET.SubElement(root, "testsuite", {"name": suite, **counts, "timestamp": stamp})
    properties = ET.SubElement(testsuite, "properties")
    props = {"orders": report.orders, "out": report.out, "core_id": report.core_id, "format": report.format,
             "workers": str(report.workers), "executor": report.executor,
             "interrupted": "true" if report.interrupted else "false"}  # fmt: skip
    for name, value in props.items():
        ET.SubElement(properties, "property", {"name": name, "value": _text(value)})
    for unit in sorted(report.units, key=lambda u: u.line):
        case = ET.SubElement(testsuite, "testcase", {
            "name": _text(unit.serial), "classname": suite, "time": f"{unit.seconds:.3f}",
        })  # fmt: skip
        reason = _text(unit.reason or "")
        if unit.status == "failed":
            failure = ET.SubElement(case, "failure", {"message": reason, "type": "failed"})
            failure.text = reason
        elif unit.status == "skipped":
            ET.SubElement(case, "skipped", {"message": reason})
        if unit.image:
            ET.SubElement(case, "system-out").text = f"{unit.image} sha256:{unit.sha256} bytes:{unit.bytes}"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
