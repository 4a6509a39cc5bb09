"""The real core, built once per test session (registered by conftest's pytest_plugins).

It uses the persistent core cache — $OEMKIT_CORE_CACHE, else the user's ~/.cache/oemkit/core, read here before
any test redirects XDG_CACHE_HOME — so only the first run on a machine pays for the downloads and compression."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from oemkit.image import buildcache
from oemkit.image.core.cpio import write_newc
from oemkit.image.core.selection import Inode

REPO = Path(__file__).resolve().parents[1]
TEST_PUB = REPO / "tests" / "data" / "keys" / "signing.pub"
CORE_CACHE = buildcache.default_dir()  # at import: before the autouse fixture points XDG_CACHE_HOME at a temp folder


def core_cache() -> Path:
    return CORE_CACHE


def build_args(out: Path, *extra: str) -> list[str]:
    return ["core", "build", "-o", str(out), "--pubkey", str(TEST_PUB), "--cache", str(CORE_CACHE), *extra]


@pytest.fixture(scope="session")
def core_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COREDIR of the default build with the tests' public key."""
    # CI sets OEMKIT_REQUIRE_CORE=1: there a missing prerequisite is a failure, never a quiet skip of the core tests
    give_up = pytest.fail if os.environ.get("OEMKIT_REQUIRE_CORE") == "1" else pytest.skip
    if os.geteuid() != 0:
        give_up("building the core needs root (mmdebstrap --mode=root, chroot)")
    if shutil.which("mmdebstrap") is None:
        give_up("mmdebstrap is not installed (bash scripts/setup.sh)")
    from typer.testing import CliRunner

    from oemkit.cli.app import app

    out = tmp_path_factory.mktemp("core") / "core"
    result = CliRunner().invoke(app, [*build_args(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["coredir"] == str(out)
    return out


def derived_core(core: Path, dest: Path, tag: str, files: dict[str, bytes]) -> Path:
    """Another core made from `core`: its initramfs with `files` laid over it (one more newc archive appended,
    which the kernel unpacks after the others) and its own core id. How the A/B tests get a second core to upgrade
    to — a good one (a harmless file) or one that fails on the box (an agent that crashes) — without a second
    build from Debian packages."""
    dest.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "core.json"):
        shutil.copyfile(core / name, dest / name)
    meta = json.loads((core / "core.json").read_text())
    overlay = write_newc({path: Inode.blob(data) for path, data in files.items()}, meta["source_date_epoch"])
    with (dest / "initrd.img").open("ab") as fh:
        fh.write(overlay)
    meta["core_id"] = hashlib.sha256(f"{meta['core_id']}/{tag}".encode()).hexdigest()[:20]
    (dest / "core.json").write_text(json.dumps(meta, indent=1) + "\n")
    return dest
