"""Rules about a unit that hold whatever the profile's apiVersion: the serial and the host name it renders. The
CLI, `compile --orders`, unit overlays, lint and sealing all call these, so they can never disagree."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"  # profile, network, VM, disk, admin names: they become file names
SERIAL_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{1,30})[A-Za-z0-9]$"  # it ends up in a host name
_SERIAL = re.compile(SERIAL_PATTERN)
MAX_LABEL = 63  # DNS


def serial_problem(serial: str) -> str | None:
    """Why `serial` cannot be a unit's serial, or None."""
    if _SERIAL.fullmatch(serial):
        return None
    return f"serial {serial!r} is not 3-32 letters, digits and '-' (not at either end)"


def hostname_problem(hostname: str) -> str | None:
    """Why a rendered host name is too long for DNS, or None (the template itself was checked by the schema)."""
    first = hostname.split(".")[0]
    if len(first) > MAX_LABEL:
        return f"renders to {hostname!r}: its first label is {len(first)} characters, the limit is {MAX_LABEL}"
    return None
