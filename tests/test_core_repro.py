"""Two cold builds of the core, each with its own empty cache, give the same core id and identical bytes
(scripts/core-repro.sh does the work and compares every output file), the source rebuilds and the capabilities
harvest included. Slow: two full cold builds, about 3.5 minutes each."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_two_cold_builds_are_byte_identical() -> None:
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        (pytest.fail if os.environ.get("OEMKIT_REQUIRE_CORE") == "1" else pytest.skip)("needs root and mmdebstrap")
    # bounded: a hung mirror or build must fail CI in time, not eat its 90 minutes
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "core-repro.sh")], capture_output=True, text=True, timeout=40 * 60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "core-repro: REPRODUCIBLE" in done.stdout
    ids = {line.split("core ", 1)[1].split(",")[0] for line in done.stdout.splitlines() if line.startswith("cold")}
    assert len(ids) == 1, done.stdout
