"""What the benchmark scripts share: the checkout on sys.path, the test key pair, and a table writer."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
KEY = REPO / "tests/data/keys/signing.key"
PUB = REPO / "tests/data/keys/signing.pub"
BENCHMARKS = REPO / "docs" / "benchmarks.md"


def write_section(text: str, begin: str, end: str) -> None:
    """Replace what docs/benchmarks.md holds between `begin` and `end` (the markers included) with `text`."""
    doc = BENCHMARKS.read_text()
    start, stop = doc.index(begin), doc.index(end) + len(end)
    BENCHMARKS.write_text(doc[:start] + text + doc[stop:])
