"""The appliance's disk pieces without a core: FAT and GPT images from the real tools (reproducible, no root), read
back by `image verify`'s GPT reader; bad manifests and non-images are located refusals."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from oemkit.errors import UnreadableInput
from oemkit.image.appliance import disk, uki
from oemkit.image.appliance.verify import partitions, verify

EPOCH = 1_700_000_000


def _image(tmp: Path) -> Path:
    payload = tmp / "payload.txt"
    payload.write_text("hello\n")
    fat = disk.fat_image(tmp / "cfg.img", 8, "OEMKIT-CFG", "0E5A0002", {"/unit.json": payload}, EPOCH, fat_bits=None)
    part = disk.Partition("oemkit-config", disk.LINUX_DATA_TYPE, "6f3a2c1e-0000-4000-8000-000000000002", fat, 8)
    return disk.gpt_disk(tmp / "disk.raw", "6f3a2c1e-0000-4000-8000-000000000001", [part], EPOCH)


def test_disk_images_are_reproducible_and_read_back(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _image(tmp_path / "a"), _image(tmp_path / "b")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    assert partitions(first) == {"oemkit-config": (1 << 20, 8 << 20)}


def test_uki_sections_are_laid_out_above_the_stub_without_overlap(tmp_path: Path) -> None:
    files = {}
    for name, size in (("osrel", 100), ("cmdline", 40), ("linux", 8_300_000), ("initrd", 25_100_000)):
        files[name] = tmp_path / name
        files[name].write_bytes(b"\0" * size)
    sections = uki.layout(files["osrel"], files["cmdline"], files["linux"], files["initrd"])
    assert sections[0].vma == uki.STUB_END
    for before, after in itertools.pairwise(sections):
        assert after.vma >= before.vma + before.data.stat().st_size and (after.vma - uki.STUB_END) % uki.ALIGN == 0


def test_not_an_image_or_no_manifest_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.raw"
    plain.write_bytes(bytes(4096))
    with pytest.raises(UnreadableInput, match="no GPT"):
        partitions(plain)
    with pytest.raises(UnreadableInput, match="cannot read"):
        verify(tmp_path)
    (tmp_path / "manifest.json").write_text('{"files": {}}')
    with pytest.raises(UnreadableInput, match="not an image manifest"):
        verify(tmp_path)
