"""What a burn-in did, as data: one result per built unit, the totals, and the two renderings the factory's tools
read — the JSON report (OUT/.burnin/report.json, `--json`) and JUnit XML (`--junit`, for CI servers)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any

from oemkit.line.report import _text as xml_text  # the one XML-safe text rule (a console's escapes become U+FFFD)

READY, FAILED, TIMEOUT, ERROR, CANCELLED = "READY", "FAILED", "TIMEOUT", "ERROR", "cancelled"
STATUSES = (READY, FAILED, TIMEOUT, ERROR, CANCELLED)
# Whose a result is: the unit's first boot as its console told it (READY, FAILED, TIMEOUT), or the burn-in's own
# machinery (libvirt refusing the twin, a unit folder that cannot be read): the latter says nothing of the unit.
FIRST_BOOT, INFRASTRUCTURE = "first-boot", "infrastructure"


@dataclass
class UnitResult:
    """One built unit's burn-in. Only `serial`, `status` and `reason` are known for every unit; what the twin
    measured is None when it never booted (an error, a unit cancelled before it started)."""

    serial: str
    model: str | None  # the manifest's: the box the image was built for
    status: str
    kind: str | None = None  # FIRST_BOOT or INFRASTRUCTURE; None for a cancelled unit
    reason: str | None = None
    step: str | None = None  # the first step of the plan that did not succeed (a FAILED first boot)
    folder: str | None = None
    twin: str | None = None  # the catalog model the twin was made as
    uri: str | None = None
    seconds: float = 0.0  # the unit's wall time: the image uploaded, the twin booted to its status, cleaned
    boot_seconds: float | None = None  # power-on to the status line
    boot: dict[str, float | None] = field(default_factory=dict)  # kernel / init / agent split
    phases: dict[str, float] = field(default_factory=dict)  # host seconds since power-on, per `oemkit-core:` mark
    boots: int | None = None
    bank: str | None = None
    pcr15: str | None = None
    pcr15_expected: str | None = None
    pcr15_match: bool | None = None  # None: the manifest predicts nothing
    disk_sha256: str | None = None  # the boot device's bytes the twin booted (a qcow2 unit flattened)
    image: str | None = None
    image_sha256: str | None = None  # the image file as shipped (for qcow2: the overlay)
    console_log: str | None = None
    cleaned: list[str] = field(default_factory=list)  # what an earlier run had left of this twin, removed first

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status

    @property
    def passed(self) -> bool:
        """READY, and the PCR 15 it measured is the factory's prediction (when there is one)."""
        return self.status == READY and self.pcr15_match is not False

    def verdict(self) -> str:
        """How the unit counts: "ready", "failed" (a FAILED first boot or a PCR 15 mismatch), "timeout", "error",
        "cancelled" — one each, so the totals add up to the units."""
        if self.status == READY:
            return "ready" if self.passed else "failed"
        return {FAILED: "failed", TIMEOUT: "timeout", ERROR: "error"}.get(self.status, "cancelled")

    def why(self) -> str:
        """The failure in one line: the failing step first, or the PCR 15 mismatch."""
        if self.status == READY and not self.passed:
            return f"PCR 15 mismatch: the box measured {self.pcr15}, the factory predicted {self.pcr15_expected}"
        if self.step and self.step not in (self.reason or ""):
            return f"{self.step}: {self.reason or ''}".rstrip(": ")
        return self.reason or self.status

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclass
class Report:
    out: str
    uris: list[str]
    parallel: int
    accel: str  # kvm | tcg: how the twins run (libvirt's domain type kvm | qemu)
    timeout: float  # seconds a unit may take to its status line
    started: str  # ISO 8601, UTC
    accel_why: str = ""
    units: list[UnitResult] = field(default_factory=list)  # in the order of OUT's folders, one per unit
    seconds: float = 0.0  # wall time, first twin to last
    interrupted: bool = False  # Ctrl-C or SIGTERM: the running twins were destroyed, the rest cancelled

    def totals(self) -> dict[str, int]:
        counts = {"units": len(self.units), "ready": 0, "failed": 0, "timeout": 0, "errors": 0, "cancelled": 0}
        for unit in self.units:
            verdict = unit.verdict()
            counts["errors" if verdict == "error" else verdict] += 1
        return counts

    @property
    def ok(self) -> bool:
        return bool(self.units) and all(u.passed for u in self.units)

    def units_per_hour(self) -> float:
        """Units burnt in (any status but cancelled) per hour of wall time."""
        done = sum(1 for u in self.units if u.status != CANCELLED)
        return round(done * 3600 / self.seconds, 1) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "uris": self.uris,
            "parallel": self.parallel,
            "accel": self.accel,
            "accel_why": self.accel_why,
            "timeout": self.timeout,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "totals": self.totals(),
            "units_per_hour": self.units_per_hour(),
            "units": [u.to_dict() for u in self.units],
        }


def junit_xml(report: Report, suite: str) -> bytes:
    """JUnit XML: one <testsuite> named `suite`, one <testcase> per unit (classname: its model, name: its serial).
    A FAILED first boot or a PCR 15 mismatch is a <failure> (message: the failing step and reason); a TIMEOUT or an
    infrastructure error an <error> (the unit was not judged); a cancelled unit <skipped>. <system-out> names the
    unit's console log."""
    totals = report.totals()
    counts = {
        "tests": str(totals["units"]),
        "failures": str(totals["failed"]),
        "errors": str(totals["timeout"] + totals["errors"]),
        "skipped": str(totals["cancelled"]),
        "time": f"{report.seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "oemkit burnin", **counts})
    stamp = report.started.removesuffix("Z").split(".")[0]  # JUnit's timestamp: ISO 8601 without a zone
    testsuite = ET.SubElement(root, "testsuite", {"name": xml_text(suite), **counts, "timestamp": stamp})
    properties = ET.SubElement(testsuite, "properties")
    props = {"out": report.out, "uris": " ".join(report.uris), "parallel": str(report.parallel),
             "accel": report.accel, "timeout": f"{report.timeout:g}",
             "interrupted": "true" if report.interrupted else "false"}  # fmt: skip
    for name, value in props.items():
        ET.SubElement(properties, "property", {"name": name, "value": xml_text(value)})
    for unit in report.units:
        case = ET.SubElement(testsuite, "testcase", {
            "name": xml_text(unit.serial), "classname": xml_text(unit.model or "unknown"),
            "time": f"{unit.seconds:.3f}",
        })  # fmt: skip
        message = xml_text(unit.why())
        verdict = unit.verdict()
        if verdict == "failed":
            ET.SubElement(case, "failure", {"message": message, "type": unit.status}).text = message
        elif verdict in ("timeout", "error"):
            kind = unit.status if unit.status == TIMEOUT else unit.kind or ERROR
            ET.SubElement(case, "error", {"message": message, "type": kind}).text = message
        elif verdict == "cancelled":
            ET.SubElement(case, "skipped", {"message": message})
        if unit.console_log:
            ET.SubElement(case, "system-out").text = xml_text(unit.console_log)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
