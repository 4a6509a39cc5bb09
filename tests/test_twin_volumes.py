"""A twin's volumes (oemkit/twin/volumes.py): a qcow2 unit is read only through the backing file its build gave it;
removal takes exactly one serial's volumes and goes on past a step that fails (real libvirtd, tiny volumes, no
boot)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import libvirt
import pytest

from oemkit.errors import UnreadableInput
from oemkit.twin import volumes
from oemkit.twin.appliance import BuiltUnit


def _qcow2(path: Path, backing: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(backing), str(path)],
                   check=True)  # fmt: skip


def _unit(folder: Path) -> BuiltUnit:
    return BuiltUnit(folder, {"serial": folder.name}, folder / "appliance.qcow2", "qcow2", b"{}")


def test_a_qcow2_unit_is_read_through_its_own_base_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".base").mkdir(parents=True)
    (out / "S1").mkdir()
    (out / ".base" / "core.raw").write_bytes(b"\x5a" * 65536)
    _qcow2(out / "S1" / "appliance.qcow2", Path("../.base/core.raw"))
    flat = volumes.raw_image(_unit(out / "S1"), tmp_path)
    assert flat.read_bytes() == b"\x5a" * 65536
    # a crafted unit whose qcow2 names another file: never read, never uploaded into a twin
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"not the image" * 100)
    (out / "S2").mkdir()
    _qcow2(out / "S2" / "appliance.qcow2", secret)
    with pytest.raises(UnreadableInput, match=r"not the order's own OUT/\.base image"):
        volumes.raw_image(_unit(out / "S2"), tmp_path / "x")


@pytest.mark.libvirtd
def test_cleaning_takes_exactly_one_serials_volumes() -> None:
    conn = libvirt.open("qemu:///system")
    try:
        pool = volumes.ensure_pool(conn)
        made = [volumes.volume(pool, f"oemkit-twin-VOLTEST1-{p}", 1 << 20, "raw") for p in ("disk0.raw", "vars.fd")]
        other = volumes.volume(pool, "oemkit-twin-VOLTEST1-X-disk0.raw", 1 << 20, "raw")  # another serial's
        try:
            removed, failed = volumes.clean(conn, pool, "VOLTEST1")
            assert sorted(removed) == sorted(v.name() for v in made) and failed == []
            assert volumes.clean(conn, pool, "VOLTEST1") == ([], [])  # nothing left, nothing to fail
            assert other.name() in [v.name() for v in pool.listAllVolumes(0)]
        finally:
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith("oemkit-twin-VOLTEST1"):
                    vol.delete(0)
    finally:
        conn.close()
