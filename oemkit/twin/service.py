"""A twin's way to its provisioning service: the unit's phone-home address, as its signed config names it, forwarded
by QEMU's user networking to a service on this host's loopback — and nothing else reachable (restrict=on).

The box dials the URL of its config, so for a twin that URL's host must be an address inside QEMU's user network
(10.0.2.0/24), other than the ones QEMU itself answers on (.2 gateway, .3 DNS, .4 SMB) and the guest's own (.15).
A test or lab site names such an address (e.g. https://10.0.2.100:8443); a real site's DNS name cannot be forwarded
this way. Through libvirt this is not offered: libvirt runs QEMU with `-sandbox spawn=deny`, which forbids the
per-connection forwarder."""

from __future__ import annotations

import ipaddress
import sys
from urllib.parse import urlsplit

from oemkit.errors import OemkitError

USER_NET = ipaddress.ip_network("10.0.2.0/24")
RESERVED = {ipaddress.ip_address(f"10.0.2.{n}") for n in (0, 2, 3, 4, 15, 255)}


def guest_address(url: str) -> tuple[str, int]:
    """(IP, port) the box dials for `url`; OemkitError when a twin cannot forward it."""
    parts = urlsplit(url)
    try:
        ip = ipaddress.ip_address(parts.hostname or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise OemkitError(
            f"the unit's phone-home URL {url} names a host a twin cannot forward: use an address in {USER_NET} "
            "(e.g. https://10.0.2.100:8443) in a test site's profile"
        ) from None
    if ip not in USER_NET or ip in RESERVED:
        raise OemkitError(
            f"the unit's phone-home address {ip} is not one a twin can forward: an address in {USER_NET} other than "
            f"{', '.join(sorted(str(a) for a in RESERVED))}"
        )
    return str(ip), port


def guestfwd(url: str, service_port: int) -> str:
    """QEMU's guestfwd rule: the box's phone-home address to 127.0.0.1:`service_port`, one relay per connection."""
    if not 0 < service_port < 65536:
        raise OemkitError(f"--service {service_port}: not a TCP port")
    ip, port = guest_address(url)
    return f"tcp:{ip}:{port}-cmd:{sys.executable} -m oemkit.twin.relay 127.0.0.1 {service_port}"
