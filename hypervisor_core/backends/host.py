"""The host backend: the box's own configuration, as files under a target root (documented in docs/host-config.md).

The core's init applies etc/oemkit/*.json at every boot; with `live=True` (the agent running on the appliance
itself) the parts that can change at once do so now. Identity (machine-id, SSH host keys) is generated here, on
the box, never copied from the image: a cloned flash card must not clone identities (ESXi KB 84280).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import struct
from pathlib import Path
from typing import Any

from hypervisor_core import ed25519

IDENTITY = "var/lib/oemkit/identity.json"


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write, fsync, rename: after a crash the file is the old one or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.oemkit-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


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


class HostBackend:
    def __init__(self, root: Path, live: bool = False) -> None:
        self.root = root
        self.live = live

    def _path(self, rel: str) -> Path:
        return self.root / rel

    def _identity(self) -> dict[str, Any]:
        try:
            return json.loads(self._path(IDENTITY).read_text())
        except (OSError, ValueError):
            return {}

    def _remember(self, key: str, value: str) -> None:
        ident = self._identity()
        ident[key] = value
        write_atomic(self._path(IDENTITY), json.dumps(ident, indent=2, sort_keys=True) + "\n", 0o600)

    def machine_id(self) -> str:
        path = self._path("etc/machine-id")
        current = path.read_text().strip() if path.exists() else ""
        if current and current == self._identity().get("machine_id"):
            return "kept"  # ours, from an earlier (interrupted) run
        new = secrets.token_hex(16)
        write_atomic(path, new + "\n", 0o444)
        self._remember("machine_id", new)
        return "generated" if not current else "regenerated (the image carried one)"

    def ssh_host_keys(self, enabled: bool) -> str:
        key = self._path("etc/ssh/ssh_host_ed25519_key")
        pub = key.with_name(key.name + ".pub")
        if key.exists() and pub.exists() and pub.read_text() == self._identity().get("ssh_host_ed25519_pub"):
            return "kept"
        private, public = ssh_ed25519_keypair("root@oemkit")
        for other in key.parent.glob("ssh_host_*_key*"):  # an image's RSA/ECDSA keys would be every box's keys
            other.unlink()
        write_atomic(key, private, 0o600)
        write_atomic(pub, public, 0o644)
        self._remember("ssh_host_ed25519_pub", public)
        return "generated" + ("" if enabled else " (sshd off)")

    def hostname(self, hostname: str) -> str:
        write_atomic(self._path("etc/hostname"), hostname + "\n")
        hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost\n"
        write_atomic(self._path("etc/hosts"), hosts)
        if self.live:
            socket.sethostname(hostname)
        return hostname

    def _config(self, name: str, data: dict[str, Any], mode: int = 0o644) -> None:
        write_atomic(self._path(f"etc/oemkit/{name}.json"), json.dumps(data, indent=2, sort_keys=True) + "\n", mode)

    def settings(self, timezone: str, ntp: list[str], dns_servers: list[str], dns_search: list[str]) -> str:
        self._config(
            "settings", {"timezone": timezone, "ntp": ntp, "dns": {"servers": dns_servers, "search": dns_search}}
        )
        write_atomic(self._path("etc/timezone"), timezone + "\n")
        resolv = "".join(f"nameserver {s}\n" for s in dns_servers)
        if dns_search:
            resolv += f"search {' '.join(dns_search)}\n"
        write_atomic(self._path("etc/resolv.conf"), resolv)
        return timezone

    def network(self, **net: Any) -> str:
        self._config("network", net)
        members = ", ".join(u["name"] for u in net["uplinks"])
        summary = f"{net['bond'] or 'single'} over {members}, vlan {net['vlan'] or 'none'}, {net['address']}"
        if self.live:  # on the appliance itself: now, not only at the next boot
            from hypervisor_core import hostnet

            hostnet.apply(net, hostnet.ip_runner())
            summary += ", applied"
        return summary

    def users(self, admins: list[dict[str, Any]], ssh: bool, lockdown: str) -> str:
        self._config("users", {"admins": admins, "ssh": ssh, "lockdown": lockdown}, 0o600)  # holds hashes
        for admin in admins:
            if admin["ssh_keys"]:
                home = self._path(f"home/{admin['name']}/.ssh")
                write_atomic(home / "authorized_keys", "".join(k + "\n" for k in admin["ssh_keys"]), 0o600)
        return ", ".join(a["name"] for a in admins)

    def datastore(self, layout: str, pool: str, disks: list[dict[str, Any]]) -> str:
        self._config("datastore", {"layout": layout, "pool": pool, "disks": disks})
        return f"{layout} of {', '.join(d['name'] for d in disks)}"
