"""A twin's files on a libvirt host: volumes of the dir pool `oemkit-twins`, made, filled and removed through libvirt
(so a remote burn-in host needs nothing copied to it by other means).

Every file of a twin is a volume made through the API — the console log too, made empty before libvirt appends to
it — so libvirt always knows them and the pool is never refreshed while twins run: libvirt refuses a refresh while
another volume of the pool is being built, and parallel twins on one host build volumes all the time. Removal is
best-effort and by name: one step failing (a host gone) never keeps the others from running, and never replaces the
result of a boot."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO, Any

import libvirt

from oemkit.errors import UnreadableInput
from oemkit.image.tools import PATH
from oemkit.twin import domain
from oemkit.twin.appliance import BuiltUnit

POOL = "oemkit-twins"
POOL_DIR = domain.TWINS_DIR
CHUNK = 1 << 20
UNDEFINE = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)  # fmt: skip


def ensure_pool(conn: libvirt.virConnect) -> libvirt.virStoragePool:
    """The pool, defined and started if it is not (starting a pool reads its folder once)."""
    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        xml = f"<pool type='dir'><name>{POOL}</name><target><path>{POOL_DIR}</path></target></pool>"
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
    if not pool.isActive():
        pool.create(0)
    return pool


def _ours(serial: str) -> re.Pattern[str]:
    """Exactly this twin's volumes: a prefix alone would also match another serial's (J30BER01 vs J30BER01-X)."""
    parts = r"(image\.raw|boot1?\.qcow2|disk\d+\.raw|vars\.fd|console\.log)"
    return re.compile(re.escape(domain.volume_name(serial, "")) + parts)


def clean(conn: libvirt.virConnect, pool: libvirt.virStoragePool, serial: str) -> tuple[list[str], list[str]]:
    """Remove the twin of `serial` — the domain (stopped first) with its NVRAM and TPM state, its volumes — as far
    as each step goes: (what was removed, what could not be and why)."""
    name = domain.domain_name(serial)
    removed: list[str] = []
    failed: list[str] = []
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        dom = None
    if dom is not None:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        try:
            dom.undefineFlags(UNDEFINE)
            removed.append(f"domain {name}")
        except libvirt.libvirtError as exc:
            failed.append(f"domain {name}: {exc.get_error_message()}")
    try:
        volumes = [v for v in pool.listAllVolumes(0) if _ours(serial).fullmatch(v.name())]
    except libvirt.libvirtError as exc:
        return removed, [*failed, f"the pool's volumes: {exc.get_error_message()}"]
    for vol in volumes:
        try:
            vol.delete(0)
            removed.append(vol.name())
        except libvirt.libvirtError as exc:
            failed.append(f"{vol.name()}: {exc.get_error_message()}")
    return removed, failed


def volume(pool: libvirt.virStoragePool, name: str, capacity: int, fmt: str, backing: str | None = None) -> Any:
    """A new volume (sparse: nothing allocated), qcow2 ones over a raw backing volume."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(root, "allocation").text = "0"
    ET.SubElement(ET.SubElement(root, "target"), "format", type=fmt)
    if backing:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", type="raw")
    return pool.createXML(ET.tostring(root, encoding="unicode"), 0)


def upload(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, path: Path) -> tuple[Any, str]:
    """A new raw volume holding `path`'s bytes; their sha256."""
    size = path.stat().st_size
    vol = volume(pool, name, size, "raw")
    digest = hashlib.sha256()
    stream = conn.newStream(0)

    def chunk(_stream: Any, nbytes: int, fh: IO[bytes]) -> bytes:
        data = fh.read(min(nbytes, CHUNK))
        digest.update(data)
        return data

    try:
        vol.upload(stream, 0, size, 0)
        with path.open("rb") as fh:
            stream.sendAll(chunk, fh)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return vol, digest.hexdigest()


def raw_image(built: BuiltUnit, work: Path) -> Path:
    """The unit's image as the box's device holds it (a qcow2 one flattened through its backing file), read only —
    and only through the backing file the build gave it (OUT/.base/), never another file a crafted qcow2 names."""
    env = {"PATH": PATH, "LC_ALL": "C.UTF-8"}
    if built.fmt == "raw":
        return built.image
    info = subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json", "-f", built.fmt, str(built.image)],
                          capture_output=True, text=True, env=env, check=False)  # fmt: skip
    try:
        chain = json.loads(info.stdout) if info.returncode == 0 else None
    except ValueError:
        chain = None
    base = (built.folder.parent / ".base").resolve()
    backing = [Path(c["filename"]).resolve() for c in chain or [] if c.get("filename") != str(built.image)][:2]
    if chain is None or len(chain) != 2 or backing[0].parent != base or chain[1].get("format") != "raw":
        why = info.stderr.strip() or "its backing file is not the order's own OUT/.base image"
        raise UnreadableInput(f"cannot read the image: {why}", file=str(built.image))
    out = work / "image.raw"
    argv = ["qemu-img", "convert", "-f", built.fmt, "-O", "raw", str(built.image), str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise UnreadableInput(f"cannot read the image: {done.stderr.strip()}", file=str(built.image))
    return out
