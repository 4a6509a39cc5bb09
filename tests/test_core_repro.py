"""Two cold builds of the core, each with its own empty cache, give the same core id and identical bytes
(scripts/core-repro.sh does the work and compares every output file). Slow: two full builds, 3 to 4 minutes."""

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
    done = subprocess.run(["bash", str(REPO / "scripts" / "core-repro.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "core-repro: REPRODUCIBLE" in done.stdout
    ids = {line.split("core ", 1)[1].split(",")[0] for line in done.stdout.splitlines() if line.startswith("cold")}
    assert len(ids) == 1, done.stdout
