"""The unit-config CD: an ISO 9660 image (Rock Ridge names) holding `unit.json`, which the core's init mounts on
first boot. A CD because the kernel never takes it for a datastore disk (first boot skips sr devices) and every
server's BMC can attach one as virtual media. Byte-identical for the same config: dates are fixed.
"""

from __future__ import annotations

import io
import os
import time
import types
from contextlib import contextmanager
from pathlib import Path

import pycdlib
import pycdlib.dates
import pycdlib.headervd
import pycdlib.pycdlib

from hypervisor_core.fsutil import write_atomic
from hypervisor_core.layout import CONFIG_LABEL, CONFIG_NAME
from oemkit.errors import OemkitError

VOLUME_ID = CONFIG_LABEL  # what the init looks for (ISO 9660 d-characters only)


@contextmanager
def _fixed_clock(epoch: int):
    """pycdlib stamps every record with time.time()/localtime(): give its modules a frozen UTC clock."""
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.time = lambda: float(epoch)
    clock.localtime = time.gmtime
    modules = (pycdlib.dates, pycdlib.headervd, pycdlib.pycdlib)
    saved = [getattr(m, "time") for m in modules]  # noqa: B009 (pycdlib's own `import time`, typed as absent)
    for m in modules:
        setattr(m, "time", clock)  # noqa: B010
    try:
        yield
    finally:
        for m, original in zip(modules, saved, strict=True):
            setattr(m, "time", original)  # noqa: B010


def write_config_iso(path: Path, unit_json: bytes, epoch: int | None = None) -> None:
    if epoch is None:
        text = os.environ.get("SOURCE_DATE_EPOCH", "1700000000")
        if not text.isdigit():
            raise OemkitError(f"SOURCE_DATE_EPOCH={text!r} is not a count of seconds")
        epoch = int(text)
    out = io.BytesIO()
    with _fixed_clock(epoch):
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, vol_ident=VOLUME_ID, rock_ridge="1.09")
        iso.add_fp(io.BytesIO(unit_json), len(unit_json), "/UNIT.JSON;1", rr_name=CONFIG_NAME)
        iso.write_fp(out)
        iso.close()
    write_atomic(path, out.getvalue())


def read_config_iso(path: Path) -> bytes:
    """What the guest will read: the config file on the CD, by its Rock Ridge name."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/" + CONFIG_NAME)
        return out.getvalue()
    finally:
        iso.close()
