"""Workload disk images: from the box's store or fetched, and used only when their SHA-256 is the signed one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hypervisor_core.diskimages import DiskImageError, obtain
from hypervisor_core.layout import DISK_IMAGES, Layout


def _image(tmp_path: Path, data: bytes = b"QFI\xfb" + bytes(4096)) -> tuple[Path, str]:
    path = tmp_path / "disk.qcow2"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_fetched_into_the_store_then_found_there(tmp_path: Path) -> None:
    image, sha = _image(tmp_path)
    got = obtain(Layout(tmp_path / "root"), image.as_uri(), sha)
    assert got == tmp_path / "root" / DISK_IMAGES / sha and got.read_bytes() == image.read_bytes()
    image.unlink()  # the source is gone: the store copy serves
    assert obtain(Layout(tmp_path / "root"), "https://unreachable.invalid/x", sha) == got


def test_a_wrong_image_is_refused_and_not_kept(tmp_path: Path) -> None:
    image, _ = _image(tmp_path)
    with pytest.raises(DiskImageError, match="refused"):
        obtain(Layout(tmp_path / "root"), str(image), "0" * 64)
    assert not any((tmp_path / "root" / DISK_IMAGES).iterdir())


def test_a_damaged_store_copy_is_fetched_again(tmp_path: Path) -> None:
    image, sha = _image(tmp_path)
    store = tmp_path / "root" / DISK_IMAGES
    store.mkdir(parents=True)
    (store / sha).write_bytes(b"bit rot")
    assert obtain(Layout(tmp_path / "root"), str(image), sha).read_bytes() == image.read_bytes()


def test_an_unreachable_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiskImageError, match="cannot fetch"):
        obtain(Layout(tmp_path / "root"), (tmp_path / "missing.qcow2").as_uri(), "0" * 64)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "fifo-uri"])
def test_a_local_source_that_is_no_file_is_refused_without_opening_it(kind: str, tmp_path: Path) -> None:
    fifo = tmp_path / "img.fifo"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    source = {"fifo": str(fifo), "dev-zero": "/dev/zero", "fifo-uri": fifo.as_uri()}[kind]
    with pytest.raises(DiskImageError, match="not a regular file"):
        obtain(Layout(tmp_path / "root"), source, "a" * 64)
    assert not (tmp_path / "root" / DISK_IMAGES).exists() or list((tmp_path / "root" / DISK_IMAGES).iterdir()) == []


def test_an_image_larger_than_its_volume_is_not_copied_to_the_end(tmp_path: Path) -> None:
    image, sha = _image(tmp_path, bytes(3 << 20))
    with pytest.raises(DiskImageError, match="larger than its volume"):
        obtain(Layout(tmp_path / "root"), image.as_uri(), sha, max_bytes=1 << 20)
    assert list((tmp_path / "root" / DISK_IMAGES).iterdir()) == []  # nothing kept, no temporary file
