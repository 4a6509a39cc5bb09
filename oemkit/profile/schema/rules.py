"""Rules about a unit that hold whatever the profile's apiVersion: the serial and the host name it renders. The
CLI, `compile --orders`, unit overlays, lint and sealing all call these, so they can never disagree."""

from __future__ import annotations

import re

from hypervisor_core.config.v1 import HOST_NAME_MAX

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"  # profile, network, VM, disk, admin names: they become file names
SERIAL_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{1,30})[A-Za-z0-9]$"  # it ends up in a host name
_SERIAL = re.compile(SERIAL_PATTERN)
MIN_SERIAL, MAX_SERIAL = 3, 32  # SERIAL_PATTERN's bounds
MIN_SITE, MAX_SITE = 1, 16  # Site.code's bounds
MAX_LABEL = 63  # DNS, per label
MAX_NAME = 253  # DNS, the whole name
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def serial_problem(serial: str) -> str | None:
    """Why `serial` cannot be a unit's serial, or None."""
    if _SERIAL.fullmatch(serial):
        return None
    return f"serial {serial!r} is not 3-32 letters, digits and '-' (not at either end)"


def hostname_problem(hostname: str) -> str | None:
    """Why the host name a unit renders (its template filled with the site code and serial) cannot be set, or None:
    every label 1-63 characters of a-z, 0-9 and '-' (DNS), the whole within what Linux's sethostname takes (64,
    stricter than DNS's 253). The box would refuse such a config; the factory says so first, with the line."""
    for label in hostname.split("."):
        if len(label) > MAX_LABEL:
            return f"renders to {hostname!r}: the label {label!r} is {len(label)} characters, the limit is {MAX_LABEL}"
        if not _LABEL.fullmatch(label):
            return f"renders to {hostname!r}: {label!r} is not a host name label (a-z, 0-9, '-' inside)"
    if len(hostname) > MAX_NAME:
        return f"renders to {hostname!r}: {len(hostname)} characters, DNS takes {MAX_NAME}"
    if len(hostname) > HOST_NAME_MAX:
        return f"renders to {hostname!r}: {len(hostname)} characters, Linux takes host names of up to {HOST_NAME_MAX}"
    return None
