"""The dmidecode parser on the shapes real dumps come in."""

from __future__ import annotations

from pathlib import Path

import pytest

from oemkit.errors import UnreadableInput
from oemkit.hardware.dmi import parse_size, parse_structures, read_report, report_from_structures

from .conftest import sample_dumps, samples_dir

QUIET = """\
System Information
\tManufacturer: Dell Inc.
\tProduct Name: PowerEdge R650
\tSerial Number: 7XK2Q53

Processor Information
\tSocket Designation: CPU1
\tType: Central Processor
\tManufacturer: Intel
\tVersion: Intel(R) Xeon(R) Silver 4310 CPU @ 2.10GHz
\tStatus: Populated, Enabled
Memory Device
\tSize: 16384 MB
Memory Device
\tSize: 16 GB
Memory Device
\tSize: No Module Installed
"""


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16 GB", 16 << 30),
        ("16384 MB", 16 << 30),
        ("512 kB", 512 << 10),
        ("3 TB", 3 << 40),
        ("No Module Installed", None),
        ("Unknown", None),
        (None, None),
    ],
)
def test_sizes(text: str | None, size: int | None) -> None:
    assert parse_size(text) == size


def test_quiet_output_without_handles_and_blank_lines() -> None:
    report = report_from_structures(parse_structures(QUIET, "q.txt"), "q.txt")
    assert report.identity.product_name == "PowerEdge R650"
    assert report.identity.product_serial == "7XK2Q53"
    assert report.memory_gib == 32
    assert (report.cpu_sockets, report.cpu_sockets_populated, report.virtualization) == (1, 1, "vmx")


def test_stray_latin1_byte_does_not_make_a_dump_unreadable(tmp_path: Path) -> None:
    dump = tmp_path / "d.txt"
    dump.write_bytes(QUIET.replace("Dell Inc.", "Dell Inc.").encode() + b"\tAsset Tag: Caf\xe9\n")
    assert read_report(dump).identity.sys_vendor == "Dell Inc."


def test_oversized_input_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        fh.truncate(17 * 1024 * 1024)
    with pytest.raises(UnreadableInput, match="the limit is"):
        read_report(big)


@pytest.mark.parametrize("dump", sample_dumps(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sample_matches_its_index_row(dump: Path) -> None:
    """INDEX.tsv (made from the dumps when they were collected) records sockets and memory independently."""
    rows = {}
    for line in (samples_dir() / "INDEX.tsv").read_text().splitlines()[1:]:
        cols = line.split("\t")
        rows[cols[1]] = cols
    row = rows[dump.relative_to(samples_dir()).as_posix()]
    report = read_report(dump)
    assert report.identity.sys_vendor == row[5]
    assert report.identity.product_name == row[6]
    assert report.cpu_sockets_populated == int(row[7])
    assert report.memory_gib == int(row[8])
