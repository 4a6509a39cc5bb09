"""The core's init and the agent agree on every state path and name: hypervisor_core/layout.py defines them once, the
init declares the same in its layout block and uses only those variables afterwards."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hypervisor_core import layout

from .conftest import REPO

INIT = REPO / "oemkit" / "image" / "core" / "files" / "init"
BEGIN, END = "# --- layout:", "# --- end of layout ---"


def _block() -> tuple[str, str]:
    text = INIT.read_text()
    start, stop = text.index(BEGIN), text.index(END)
    return text[start:stop], text[:start] + text[stop:]


LAYOUT_NAMES = ("STATE", "UNIT", "DONE", "HOST_CONFIG", "NETWORK", "HOSTNAME_FILE", "FACTORY_KEY", "STATE_LABEL",
                "STATE_PART_NAME", "CONFIG_LABEL", "CONFIG_PARTITION_LABEL", "CONFIG_NAME", "STATUS_LINE",
                "STATE_DIRS", "STATE_FILES")  # fmt: skip


def _init_values(names: tuple[str, ...] = LAYOUT_NAMES) -> dict[str, str]:
    """The block, run by a real POSIX shell: what the init's variables really hold."""
    script = _block()[0] + "".join(f'printf "%s\\n" "${name}"\n' for name in names)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines(), strict=True))


def test_the_init_declares_the_layout_of_the_agent() -> None:
    values = _init_values()
    assert values == {
        "STATE": f"/{layout.STATE_DIR}",
        "UNIT": f"/{layout.UNIT_CONFIG}",
        "DONE": f"/{layout.DONE_MARKER}",
        "HOST_CONFIG": f"/{layout.HOST_CONFIG}",
        "NETWORK": f"/{layout.NETWORK_CONFIG}",
        "HOSTNAME_FILE": f"/{layout.HOSTNAME}",
        "FACTORY_KEY": f"/{layout.FACTORY_KEY}",
        "STATE_LABEL": layout.STATE_LABEL,
        "STATE_PART_NAME": layout.STATE_PART_NAME,
        "CONFIG_LABEL": layout.CONFIG_LABEL,
        "CONFIG_PARTITION_LABEL": layout.CONFIG_PARTITION_LABEL,
        "CONFIG_NAME": layout.CONFIG_NAME,
        "STATUS_LINE": layout.STATUS_LINE,
        "STATE_DIRS": " ".join(layout.PERSISTENT_DIRS),
        "STATE_FILES": " ".join(layout.PERSISTENT_FILES),
    }


def test_the_init_installs_the_seed_where_the_build_puts_it_and_libvirt_looks() -> None:
    from oemkit.image.core import capseed

    values = _init_values(("CAPS_QEMU", "CAPS_FILE", "CAPS_SEED", "CAPS_CACHE"))
    assert values["CAPS_QEMU"] == capseed.QEMU and values["CAPS_SEED"] == capseed.SEED_PATH
    assert values["CAPS_FILE"] == capseed.CACHE_NAME  # libvirt names its cache file after the binary's path
    assert values["CAPS_CACHE"] == "/var/cache/libvirt/qemu/capabilities"


def test_the_init_uses_its_layout_variables_not_copies_of_the_values() -> None:
    """A path written out again below the block could drift from layout.py unnoticed; comments may name them."""
    _, rest = _block()
    code = "\n".join(line.split("#", 1)[0] for line in rest.splitlines())
    literals = [v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)]
    literals += [*layout.PERSISTENT_DIRS, *layout.PERSISTENT_FILES]
    literals = [v for v in literals if "libvirt" not in v]  # libvirt's own folders: the init makes their insides
    assert len(literals) > 20  # every name of the layout, not a hand-picked few
    # as a word of its own: "home" the folder, not the "home" in phonehome or phone_home
    assert sorted({v for v in literals if re.search(rf"(?<![\w.]){re.escape(v)}(?!\w)", code)}) == []


def test_the_factory_writes_what_the_init_reads(tmp_path: Path) -> None:
    """The config CD and the state disk the factory makes, read the way the init reads them."""
    from oemkit.twin import configdisk, session

    configdisk.write_config_iso(tmp_path / "cd.iso", b"{}\n")
    label = (tmp_path / "cd.iso").read_bytes()[16 * 2048 + 40 : 16 * 2048 + 72]  # the init's cd_label()
    assert label.decode().strip() == layout.CONFIG_LABEL
    assert configdisk.read_config_iso(tmp_path / "cd.iso") == b"{}\n"  # as unit.json, by its Rock Ridge name
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed (scripts/setup.sh installs e2fsprogs)")
    session.make_state_disk(tmp_path / "state.img", 8)
    superblock = (tmp_path / "state.img").read_bytes()[1024:2048]
    assert superblock[0x38:0x3A] == b"\x53\xef"  # ext4's magic
    assert superblock[0x78:0x88].rstrip(b"\0").decode() == layout.STATE_LABEL  # what findfs LABEL= looks for
