"""The host backend: the box's own configuration, as files under a target root (documented in docs/host-config.md).

The core's init applies etc/oemkit/*.json at every boot; with `live=True` (the agent running on the appliance
itself) the parts that can change at once do so now. Identity (machine-id, SSH host keys) is generated here, on
the box, never copied from the image: a cloned flash card must not clone identities (ESXi KB 84280).
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import struct
from pathlib import Path
from typing import Any

from hypervisor_core import ed25519, hostnet
from hypervisor_core import layout as paths
from hypervisor_core.backends import BridgePort, DatastoreDisk, UplinkPort, UserAccount
from hypervisor_core.config.codec import plain
from hypervisor_core.fsutil import WriteRefused, link_on_the_way, read_regular, write_atomic
from hypervisor_core.layout import Layout

MAX_STATE_BYTES = 64 << 10  # identity.json, machine-id, a public key: a few hundred bytes each


def _text(path: Path, strip: bool = True) -> str:
    """A small state file's text; "" when it is missing or not a regular file (it is then written anew, or the
    write refuses what stands there)."""
    try:
        text = read_regular(path, MAX_STATE_BYTES).decode(errors="replace")
    except OSError:
        return ""
    return text.strip() if strip else text


def _ssh_string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def ssh_ed25519_keypair(comment: str) -> tuple[str, str]:
    """(private key in OpenSSH format, public key line) for a fresh Ed25519 host key."""
    seed = secrets.token_bytes(32)
    pub = ed25519.public_key(seed)
    blob = _ssh_string(b"ssh-ed25519") + _ssh_string(pub)
    check = secrets.token_bytes(4)
    private = check + check + blob + _ssh_string(seed + pub) + _ssh_string(comment.encode())
    private += bytes(range(1, 1 + (-len(private) % 8)))  # padding to the 8-byte cipher block ("none")
    body = (
        b"openssh-key-v1\0"
        + _ssh_string(b"none")
        + _ssh_string(b"none")
        + _ssh_string(b"")
        + struct.pack(">I", 1)
        + _ssh_string(blob)
        + _ssh_string(private)
    )
    text = base64.b64encode(body).decode()
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    pem += "".join(text[i : i + 70] + "\n" for i in range(0, len(text), 70))
    pem += "-----END OPENSSH PRIVATE KEY-----\n"
    return pem, f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}\n"


class HostFiles:
    """The HostBackend of the agent: files under `layout.root`, applied at once too when `live` (on `/`)."""

    def __init__(self, layout: Layout, live: bool = False) -> None:
        self.layout = layout
        self.live = live

    def _path(self, rel: str) -> Path:
        return self.layout.path(rel)

    def _write(self, path: Path, data: str, mode: int = 0o644) -> None:
        link = link_on_the_way(self.layout.root, path)
        if link is not None:  # never through a link out of the target root (a rehearsal's T/etc -> /etc)
            raise WriteRefused(0, f"a symbolic link on the way to {path}: refusing to write through it", str(link))
        write_atomic(path, data, mode, mkdir=True)  # the modes docs/host-config.md promises, whatever the umask

    def _identity(self) -> dict[str, Any]:
        try:
            found = json.loads(read_regular(self.layout.identity, MAX_STATE_BYTES))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def _remember(self, key: str, value: str) -> None:
        ident = self._identity()
        ident[key] = value
        self._write(self.layout.identity, json.dumps(ident, indent=2, sort_keys=True) + "\n", 0o600)

    def machine_id(self) -> str:
        path = self._path(paths.MACHINE_ID)
        current = _text(path)
        if current and current == self._identity().get("machine_id"):
            return "kept"  # ours, from an earlier (interrupted) run
        new = secrets.token_hex(16)
        self._write(path, new + "\n", 0o444)
        self._remember("machine_id", new)
        return "generated" if not current else "regenerated (the image carried one)"

    def ssh_host_keys(self, enabled: bool) -> str:
        key = self._path(paths.SSH_HOST_KEY)
        pub = key.with_name(key.name + ".pub")
        if key.exists() and _text(pub, strip=False) == self._identity().get("ssh_host_ed25519_pub"):
            return "kept"
        private, public = ssh_ed25519_keypair("root@oemkit")
        for other in key.parent.glob("ssh_host_*_key*"):  # an image's RSA/ECDSA keys would be every box's keys
            other.unlink()
        self._write(key, private, 0o600)
        self._write(pub, public, 0o644)
        self._remember("ssh_host_ed25519_pub", public)
        return "generated" + ("" if enabled else " (sshd off)")

    def hostname(self, hostname: str) -> str:
        self._write(self._path(paths.HOSTNAME), hostname + "\n")
        hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost\n"
        self._write(self._path(paths.HOSTS), hosts)
        if self.live:
            socket.sethostname(hostname)
        return hostname

    def _config(self, name: str, data: dict[str, Any], mode: int = 0o644) -> None:
        self._write(self.layout.host_config(name), json.dumps(plain(data), indent=2, sort_keys=True) + "\n", mode)

    def settings(
        self, timezone: str, ntp: tuple[str, ...], dns_servers: tuple[str, ...], dns_search: tuple[str, ...]
    ) -> str:
        self._config(
            "settings", {"timezone": timezone, "ntp": ntp, "dns": {"servers": dns_servers, "search": dns_search}}
        )
        self._write(self._path(paths.TIMEZONE), timezone + "\n")
        resolv = "".join(f"nameserver {s}\n" for s in dns_servers)
        if dns_search:
            resolv += f"search {' '.join(dns_search)}\n"
        self._write(self._path(paths.RESOLV_CONF), resolv)
        return timezone

    def network(
        self,
        uplinks: tuple[UplinkPort, ...],
        bond: str | None,
        vlan: int | None,
        address: str,
        cidr: str | None,
        gateway: str | None,
        bridges: tuple[BridgePort, ...],
    ) -> str:
        net = plain(
            {"uplinks": uplinks, "bond": bond, "vlan": vlan, "address": address, "cidr": cidr, "gateway": gateway,
             "bridges": bridges}
        )  # fmt: skip
        self._config("network", net)
        members = ", ".join(u.name for u in uplinks)
        summary = f"{bond or 'single'} over {members}, vlan {vlan or 'none'}, {address}"
        if self.live:  # on the appliance itself: now, not only at the next boot
            hostnet.apply(net, hostnet.ip_runner())
            summary += ", applied"
        return summary

    def users(self, admins: tuple[UserAccount, ...], ssh: bool, lockdown: str) -> str:
        self._config("users", {"admins": admins, "ssh": ssh, "lockdown": lockdown}, 0o600)  # holds hashes
        for admin in admins:
            if admin.ssh_keys:
                home = self._path(f"{paths.HOME}/{admin.name}/.ssh")
                self._write(home / "authorized_keys", "".join(k + "\n" for k in admin.ssh_keys), 0o600)
        return ", ".join(a.name for a in admins)

    def datastore(self, layout: str, pool: str, disks: tuple[DatastoreDisk, ...]) -> str:
        self._config("datastore", {"layout": layout, "pool": pool, "disks": disks})
        return f"{layout} of {', '.join(d.name for d in disks)}"
