"""The libvirt backend: each method makes one object exist as the plan says, looking up before defining."""

from __future__ import annotations

import os
import time
from typing import Any
from xml.etree import ElementTree as ET

import libvirt

from hypervisor_core.backends import DomainCheck, VolumeSource
from hypervisor_core.diskimages import obtain
from hypervisor_core.fsutil import write_atomic
from hypervisor_core.layout import Layout


def quiet() -> None:
    """libvirt prints every error to stderr by default; ours are exceptions that end up in the report instead."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def connect(uri: str, wait_s: float = 0.0) -> libvirt.virConnect:
    """Open `uri`, retrying for up to `wait_s` seconds (at boot, libvirtd may still be starting)."""
    quiet()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


class LibvirtConnection:
    """The LibvirtBackend of the agent: one connection, and the state folder for volume markers and images."""

    def __init__(self, conn: libvirt.virConnect, layout: Layout) -> None:
        self.conn = conn
        self.layout = layout
        self.local = conn.getURI().startswith(("qemu:///", "qemu+unix:///"))

    def network(self, name: str, xml: str) -> str:
        try:
            old = self.conn.networkLookupByName(name)
        except libvirt.libvirtError:
            old = None
        before = _definition(old) if old is not None else None
        net = self.conn.networkDefineXML(xml)  # redefining identical XML is a no-op for libvirt
        net.setAutostart(1)
        after = _definition(net)
        changed = before is not None and after is not None and before != after
        if changed and net.isActive():  # a running network keeps its old settings until it is restarted
            net.destroy()
        if not net.isActive():
            net.create()
        return "defined" if old is None else "redefined, restarted" if changed else "exists"

    def pool(self, name: str, path: str, xml: str) -> str:
        try:
            pool = self.conn.storagePoolLookupByName(name)
            existed = True
        except libvirt.libvirtError:
            pool = self.conn.storagePoolDefineXML(xml)
            existed = False
        if existed and _pool_path(pool) != path:
            # a pool of that name pointing elsewhere (an earlier run with another root): make it ours
            if pool.isActive():
                pool.destroy()
            pool.undefine()
            pool = self.conn.storagePoolDefineXML(xml)
            existed = False
        if self.local:
            os.makedirs(path, mode=0o711, exist_ok=True)
        pool.setAutostart(1)
        if not pool.isActive():
            pool.create()
        pool.refresh()
        return "exists" if existed else "defined"

    def volume(self, pool: str, name: str, xml: str, source: VolumeSource | None, size_gib: int) -> str:
        """A volume, filled from its image when it has one. A marker in the state folder says the image went in
        whole: a volume without it (a crash mid-copy) is deleted and made again."""
        p = self.conn.storagePoolLookupByName(pool)
        marker = self.layout.volume_marker(pool, name)
        try:
            vol = p.storageVolLookupByName(name)
            if marker.exists() or source is None:
                return "exists"
            vol.delete(0)  # created, but its image never finished copying
        except libvirt.libvirtError:
            pass
        if source is None:
            p.createXML(xml, 0)
            return "created"
        # an image holds at most its volume (a qcow2 file adds a little metadata): nothing bigger is copied
        image = obtain(self.layout, source.url, source.sha256, max_bytes=(size_gib << 30) + (64 << 20))
        vol = p.createXML(xml, 0)
        size = image.stat().st_size
        stream = self.conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        with image.open("rb") as fh:
            stream.sendAll(lambda _s, n, f: f.read(n), fh)
        stream.finish()
        vol.resize(size_gib << 30, 0)  # the image's own size is usually smaller than the disk the VM gets
        write_atomic(marker, source.sha256 + "\n", 0o644, mkdir=True)
        return f"created from {source.sha256[:12]}"

    def domain(self, name: str, xml: str) -> str:
        try:
            self.conn.lookupByName(name)
            existed = True
        except libvirt.libvirtError:
            existed = False
        # VALIDATE: libvirt otherwise drops what it does not understand, silently
        self.conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        return "redefined" if existed else "defined"

    def autostart(self, name: str, enabled: bool) -> str:
        dom = self.conn.lookupByName(name)
        dom.setAutostart(int(enabled))
        return "on" if enabled else "off"

    def start(self, name: str) -> str:
        dom = self.conn.lookupByName(name)
        state, _ = dom.state()
        if state == libvirt.VIR_DOMAIN_RUNNING:
            return "running"
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
            return "resumed"
        dom.create()
        return "started"

    def verify(self, networks: tuple[str, ...], pool: str, domains: tuple[DomainCheck, ...]) -> str:
        problems = []
        for name in networks:
            net = self.conn.networkLookupByName(name)
            if not net.isActive() or not net.autostart():
                problems.append(f"network {name} is not active with autostart")
        p = self.conn.storagePoolLookupByName(pool)
        if not p.isActive():
            problems.append(f"pool {pool} is not active")
        for d in domains:
            dom = self.conn.lookupByName(d.name)
            if bool(dom.autostart()) != d.autostart:
                problems.append(f"domain {d.name} autostart is {bool(dom.autostart())}")
            if d.autostart and dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                problems.append(f"domain {d.name} is not running")
        if problems:
            raise RuntimeError("; ".join(problems))
        return f"{len(domains)} domains, {len(networks)} networks, pool {pool}"


def _definition(net: libvirt.virNetwork) -> str | None:
    """A network's persistent definition (what the next start uses); None where the driver keeps no separate one
    (libvirt's test driver), so a change of a running network cannot be told there."""
    try:
        return str(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
    except libvirt.libvirtError:
        return None


def _pool_path(pool: libvirt.virStoragePool) -> str | None:
    """The folder a pool stands on, read from libvirt's own XML (never by matching text)."""
    found = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
    return found.strip() if found else None


def read_back(conn: libvirt.virConnect) -> dict[str, Any]:
    """What libvirt holds now, read from libvirt itself (not from the plan)."""
    domains = []
    for dom in sorted(conn.listAllDomains(), key=lambda d: d.name()):
        state, _ = dom.state()
        domains.append(
            {
                "name": dom.name(),
                "running": state == libvirt.VIR_DOMAIN_RUNNING,
                "autostart": bool(dom.autostart()),
                "persistent": bool(dom.isPersistent()),
            }
        )
    networks = [
        {"name": n.name(), "active": bool(n.isActive()), "autostart": bool(n.autostart())}
        for n in sorted(conn.listAllNetworks(), key=lambda n: n.name())
    ]
    pools = []
    for p in sorted(conn.listAllStoragePools(), key=lambda p: p.name()):
        vols = sorted(v.name() for v in p.listAllVolumes()) if p.isActive() else []
        pools.append(
            {"name": p.name(), "active": bool(p.isActive()), "autostart": bool(p.autostart()), "volumes": vols}
        )
    return {"uri": conn.getURI(), "domains": domains, "networks": networks, "pools": pools}
