"""The facts of a box to rehearse first boot on, from whatever the factory has of it: a facts JSON (`oemkit facts
probe`), a sysfs-shaped folder (a real `/` or `oemkit facts from-dmi`), or a dmidecode dump of the server."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypervisor_core.facts import Facts, load_facts, probe
from oemkit.catalog.store import Catalog
from oemkit.errors import OemkitError, UnreadableInput
from oemkit.hardware.dmi import read_report
from oemkit.hardware.facts_tree import build_tree


def facts_of(path: Path, catalog: Catalog, serial: str) -> Facts:
    """DIR → probed; *.json → read; a dump → a temporary facts tree of its catalog model (with the dump's serial,
    or `serial` when the dump masks it, as most published dumps do), probed."""
    if path.is_dir() or path.suffix == ".json":
        try:
            return load_facts(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UnreadableInput(f"not a facts file or folder: {type(exc).__name__}: {exc}", file=str(path)) from None
    report = read_report(path)
    found = catalog.identify(report.identity)
    if found.model_id is None:
        raise OemkitError(f"not a catalog model: {found.reason}", file=str(path))
    model = catalog.get(found.model_id)
    assert model is not None  # identify answers only with ids of this catalog
    with tempfile.TemporaryDirectory(prefix="oemkit-facts-") as tmp:
        build_tree(Path(tmp), report, model, report.identity.product_serial or serial)
        return probe(Path(tmp))
