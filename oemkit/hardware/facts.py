"""The facts of a box to rehearse first boot on, from whatever the factory has of it: a facts JSON (`oemkit facts
probe`), a sysfs-shaped folder (a real `/` or `oemkit facts from-dmi`), or a dmidecode dump of the server.

Every file is read once, bounded, and only if it is a regular file: the facts JSON and the dump through
`oemkit.inputs.read_input` (a FIFO, a device or an oversized file is refused: exit 2), a folder's files through the
agent's own probe (a FIFO or a device where a value should be is a value that cannot be read, as on a real box)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypervisor_core.facts import MAX_FACTS_BYTES, Facts, FactsError, parse_facts, probe
from oemkit.catalog.store import Catalog
from oemkit.errors import OemkitError, UnreadableInput
from oemkit.hardware.dmi import read_report
from oemkit.hardware.facts_tree import build_tree
from oemkit.inputs import read_input


def facts_of(path: Path, catalog: Catalog, serial: str) -> Facts:
    """DIR → probed; *.json → read; a dump → a temporary facts tree of its catalog model (with the dump's serial,
    or `serial` when the dump masks it, as most published dumps do), probed."""
    if path.is_dir():
        return probe(path)
    if path.suffix == ".json":
        raw = read_input(path, "facts", MAX_FACTS_BYTES)
        try:
            return parse_facts(raw)
        except FactsError as exc:
            raise UnreadableInput(str(exc), file=str(path)) from None
    report = read_report(path)
    found = catalog.identify(report.identity)
    if found.model_id is None:
        raise OemkitError(f"not a catalog model: {found.reason}", file=str(path))
    model = catalog.get(found.model_id)
    assert model is not None  # identify answers only with ids of this catalog
    with tempfile.TemporaryDirectory(prefix="oemkit-facts-") as tmp:
        build_tree(Path(tmp), report, model, report.identity.product_serial or serial)
        return probe(Path(tmp))
