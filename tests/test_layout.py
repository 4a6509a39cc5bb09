"""The core's init and the agent agree on every state path and name: hypervisor_core/layout.py defines them once, the
init declares the same in its layout block and uses only those variables afterwards."""

from __future__ import annotations

import subprocess

from hypervisor_core import layout

from .conftest import REPO

INIT = REPO / "oemkit" / "image" / "core" / "files" / "init"
BEGIN, END = "# --- layout:", "# --- end of layout ---"


def _block() -> tuple[str, str]:
    text = INIT.read_text()
    start, stop = text.index(BEGIN), text.index(END)
    return text[start:stop], text[:start] + text[stop:]


def _init_values() -> dict[str, str]:
    """The block, run by a real POSIX shell: what the init's variables really hold."""
    names = ("STATE", "UNIT", "DONE", "NETWORK", "HOSTNAME_FILE", "FACTORY_KEY", "STATE_LABEL", "CONFIG_LABEL",
             "CONFIG_NAME", "STATE_DIRS", "STATE_FILES")  # fmt: skip
    script = _block()[0] + "".join(f'printf "%s\\n" "${name}"\n' for name in names)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines(), strict=True))


def test_the_init_declares_the_layout_of_the_agent() -> None:
    values = _init_values()
    assert values == {
        "STATE": f"/{layout.STATE_DIR}",
        "UNIT": f"/{layout.UNIT_CONFIG}",
        "DONE": f"/{layout.DONE_MARKER}",
        "NETWORK": f"/{layout.NETWORK_CONFIG}",
        "HOSTNAME_FILE": f"/{layout.HOSTNAME}",
        "FACTORY_KEY": f"/{layout.FACTORY_KEY}",
        "STATE_LABEL": layout.STATE_LABEL,
        "CONFIG_LABEL": layout.CONFIG_LABEL,
        "CONFIG_NAME": layout.CONFIG_NAME,
        "STATE_DIRS": " ".join(layout.PERSISTENT_DIRS),
        "STATE_FILES": " ".join(layout.PERSISTENT_FILES),
    }


def test_the_init_uses_its_layout_variables_not_copies_of_the_values() -> None:
    """A path written out again below the block could drift from layout.py unnoticed; comments may name them."""
    _, rest = _block()
    code = "\n".join(line.split("#", 1)[0] for line in rest.splitlines())
    literals = [
        layout.STATE_DIR, layout.UNIT_CONFIG, layout.DONE_MARKER, layout.NETWORK_CONFIG, layout.FACTORY_KEY,
        layout.STATE_LABEL, layout.CONFIG_LABEL, *layout.PERSISTENT_FILES,
    ]  # fmt: skip
    assert [v for v in literals if v in code] == []


def test_the_factory_writes_what_the_init_reads() -> None:
    """The config CD's label and file name, and the state disk's label, come from the same layout."""
    from oemkit.twin import configdisk, session

    assert configdisk.VOLUME_ID == layout.CONFIG_LABEL
    assert session.STATE_LABEL == layout.STATE_LABEL
