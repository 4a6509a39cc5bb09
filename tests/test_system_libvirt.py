"""The agent against a real libvirtd (qemu:///system): every kind of object defined once, QEMU really spawned,
and a crash at every step boundary converging on the same state as an uninterrupted run.

Needs root and scripts/libvirtd.sh (the README's test set-up runs it). Object names carry a per-run prefix and
everything is removed afterwards, so a developer's own libvirt objects are never touched.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from hypervisor_core.backends.libvirt import read_back
from hypervisor_core.render import bridge_name

from .conftest import REPO
from .firstboot_kit import PUB, R650_DUMP, compile_to, facts_tree, status_line

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
SERIAL = "CISYS0001"


def _connect() -> libvirt.virConnect:
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError as exc:  # a failure, not a skip: CI must exercise the real daemon
        pytest.fail(f"no libvirtd at {URI} ({exc}); run scripts/libvirtd.sh")


def _profile(prefix: str, image: Path, sha: str) -> str:
    return f"""\
apiVersion: oemkit/v1
kind: ApplianceProfile
metadata: {{name: systest}}
models: [dell-poweredge-r650]
host: {{hostname: "st-{{site}}-{{serial}}", timezone: UTC}}
network:
  management:
    uplinks: {{select: [{{port: LOM1}}, {{port: LOM2}}], count: 2}}
    bond: active-backup
    address: dhcp
  guest:
    - {{name: {prefix}-br, mode: bridge, vlan: 42}}
    - {{name: {prefix}-nat, mode: nat, cidr: 10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}.0/24}}
    - {{name: {prefix}-iso, mode: isolated, cidr: 192.168.{secrets.randbelow(200) + 20}.0/24}}
storage:
  datastore: {{interface: sata, min_size_gib: 400, count: 2}}
  layout: mirror
  pool: {prefix}-pool
security:
  admins:
    - name: admin
      ssh_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr2u3vP0yXq8gS6h7wV0b3fJkL9mN1oP2qR4sT5uV6w a@b"]
branding: {{oem_name: CI, product: System test}}
workloads:
  vms:
    - {{name: {prefix}-a, vcpus: 1, memory_mib: 64, disks: [{{name: root, size_gib: 1}}], networks: [{prefix}-nat],
       start_order: 1}}
    - {{name: {prefix}-b, vcpus: 1, memory_mib: 64, disks: [{{name: root, size_gib: 1}}], networks: [{prefix}-iso],
       start_order: 2}}
    - {{name: {prefix}-c, vcpus: 1, memory_mib: 64, networks: [{prefix}-br], start_order: 3}}
    - {{name: {prefix}-d, vcpus: 1, memory_mib: 64, networks: [{prefix}-iso], autostart: false,
       disks: [{{name: os, size_gib: 2, source: {{url: "{image.as_uri()}", sha256: {sha}}}}}]}}
"""


@functools.cache
def _kvm_runs_guests() -> bool:
    """Whether a KVM domain starts on this host. /dev/kvm can exist and still refuse guests (a host that is itself
    a guest: QEMU aborts setting an MSR), so it is tried, as the twin's accelerator probe tries it."""
    name = f"okt{secrets.token_hex(3)}-kvm"
    xml = (
        f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os><cpu mode='host-passthrough'/></domain>"
    )
    try:
        _connect().createXML(xml, 0).destroy()
    except libvirt.libvirtError:
        return False
    return True


def _cleanup(conn: libvirt.virConnect, prefix: str) -> None:
    for dom in conn.listAllDomains():
        if dom.name().startswith(prefix):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for pool in conn.listAllStoragePools():
        if pool.name().startswith(prefix):
            if pool.isActive():
                for vol in pool.listAllVolumes():
                    vol.delete()
                pool.destroy()
            pool.undefine()
    for net in conn.listAllNetworks():
        if net.name().startswith(prefix):
            if net.isActive():
                net.destroy()
            net.undefine()


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict]:
    conn = _connect()
    prefix = f"okt{secrets.token_hex(3)}"
    image = tmp_path / "os.qcow2"  # a real qcow2 image, as a workload's OS image would be
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    (tmp_path / "p.yaml").write_text(_profile(prefix, image, sha))
    (tmp_path / "s.yaml").write_text(
        "apiVersion: oemkit/v1\nkind: SiteOverlay\nprofile: systest\nsite: {code: ci, name: CI}\n"
    )
    compile_to(tmp_path / "p.yaml", tmp_path / "s.yaml", SERIAL, tmp_path / "unit.json")
    facts = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    if not _kvm_runs_guests():  # the box is this host: its workloads are KVM domains only if KVM can run them
        (facts / "dev/kvm").unlink()
    # The guest bridge the appliance's host layer (hostnet) builds on its uplinks; here a bare bridge of our own.
    bridge = bridge_name(f"{prefix}-br")
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    try:
        yield {"conn": conn, "prefix": prefix, "unit": tmp_path / "unit.json", "facts": facts, "tmp": tmp_path}
    finally:
        _cleanup(conn, prefix)
        subprocess.run(["ip", "link", "del", bridge], check=False)


def _agent(s: dict, root: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("OEMKIT_CRASH_AT", None)
    if crash_at:
        env["OEMKIT_CRASH_AT"] = crash_at
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hypervisor_core",
            "--config",
            str(s["unit"]),
            "--pubkey",
            str(PUB),
            "--root",
            str(root),
            "--facts",
            str(s["facts"]),
            "--connect",
            URI,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def _ours(conn: libvirt.virConnect, prefix: str) -> dict:
    held = read_back(conn)
    return {kind: [o for o in held[kind] if o["name"].startswith(prefix)] for kind in ("domains", "networks", "pools")}


def _host_files(root: Path) -> dict[str, str | None]:
    """Host config as comparable state. Identity is random per box (machine-id, SSH keys) and the state folder
    holds timestamps, so for those only their presence is compared."""
    out: dict[str, str | None] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(root))
            volatile = rel in ("etc/machine-id",) or rel.startswith(("etc/ssh/", "var/lib/oemkit/"))
            out[rel] = None if volatile else p.read_text()
    return out


def test_every_kind_defined_once_and_qemu_really_runs(system: dict) -> None:
    run = _agent(system, system["tmp"] / "root")
    status = status_line(run.stdout)
    assert status["status"] == "READY", run.stdout + run.stderr
    conn, prefix = system["conn"], system["prefix"]
    state = _ours(conn, prefix)
    assert {n["name"]: n["active"] for n in state["networks"]} == {
        f"{prefix}-br": True,
        f"{prefix}-iso": True,
        f"{prefix}-nat": True,
    }
    assert state["pools"] == [
        {
            "name": f"{prefix}-pool",
            "active": True,
            "autostart": True,
            "volumes": [f"{prefix}-a-root.img", f"{prefix}-b-root.img", f"{prefix}-d-os.img"],
        }
    ]
    os_vol = conn.storagePoolLookupByName(f"{prefix}-pool").storageVolLookupByName(f"{prefix}-d-os.img")
    assert os_vol.info()[1] == 2 << 30  # filled from the qcow2 image, then grown to the size the VM gets
    assert Path(os_vol.path()).read_bytes()[:4] == b"QFI\xfb"
    running = {d["name"]: d["running"] for d in state["domains"]}
    assert running == {f"{prefix}-a": True, f"{prefix}-b": True, f"{prefix}-c": True, f"{prefix}-d": False}
    for name in (f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"):  # nat, isolated and bridged guests
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].endswith(b"qemu-system-x86_64") and f"guest={name}".encode() in b" ".join(cmdline)
    vol = conn.storagePoolLookupByName(f"{prefix}-pool").storageVolLookupByName(f"{prefix}-a-root.img")
    assert vol.info()[1] == 1 << 30  # capacity 1 GiB, a real qcow2 file
    assert Path(vol.path()).read_bytes()[:4] == b"QFI\xfb"

    again = _agent(system, system["tmp"] / "root")
    assert status_line(again.stdout)["reason"] == "already done"
    assert _ours(conn, prefix) == state


def _step_ids(s: dict) -> list[str]:
    run = _agent(s, s["tmp"] / "reference")
    assert status_line(run.stdout)["status"] == "READY", run.stdout
    return [step["id"] for step in status_line(run.stdout)["steps"]]


def test_crash_at_every_step_boundary_converges(system: dict) -> None:
    conn, prefix, tmp = system["conn"], system["prefix"], system["tmp"]
    steps = _step_ids(system)
    reference = (_ours(conn, prefix), _host_files(tmp / "reference"))
    assert len(steps) >= 20
    # every boundary (killed right after a step's journal entry), and once between a define and its journal entry
    points = [f"{step}+" for step in steps] + [next(s for s in steps if s.startswith("libvirt.domain."))]
    for point in points:
        _cleanup(conn, prefix)
        root = tmp / f"crash-{point}"
        crashed = _agent(system, root, crash_at=point)
        assert crashed.returncode == -signal.SIGKILL, f"{point}: {crashed.stdout[-500:]}"
        assert "OEMKIT-STATUS" not in crashed.stdout
        rerun = _agent(system, root)
        status = status_line(rerun.stdout)
        if point == "report+":  # killed after the done-marker: the rerun finds first boot already done
            assert status["reason"] == "already done", point
        else:
            assert status["status"] == "READY", f"{point}: {rerun.stdout[-800:]}"
            assert "resuming: an earlier run stopped after" in rerun.stdout, point  # the journal told it
        assert _ours(conn, prefix) == reference[0], point  # same objects, nothing duplicated or leaked
        assert _host_files(root) == reference[1], point
        assert json.loads((root / "var/lib/oemkit/status.json").read_text())["status"] == "READY", point
        journal = [json.loads(x) for x in (root / "var/lib/oemkit/journal.jsonl").read_text().splitlines()]
        last = (journal[-1]["step"], journal[-1]["event"], journal[-1].get("status"))
        assert last in (("run", "end", "ok"), ("report", "done", None)), (point, last)


def test_a_changed_network_is_restarted_with_its_new_settings(tmp_path: Path) -> None:
    """A forced re-run with another config must not leave a running network on its old address: libvirt applies a
    new definition only at the next start, so the backend restarts a network whose definition changed."""
    from hypervisor_core.backends.libvirt import LibvirtConnection
    from hypervisor_core.config import GuestNetwork
    from hypervisor_core.layout import Layout
    from hypervisor_core.render import network_xml

    conn = _connect()
    prefix = f"okt{secrets.token_hex(3)}"
    name, third = f"{prefix}-nat", secrets.randbelow(200) + 20
    backend = LibvirtConnection(conn, Layout(tmp_path))
    try:
        first = network_xml(GuestNetwork(name, "nat", None, f"10.{third}.1.0/24"), SERIAL)
        assert backend.network(name, first) == "defined"
        assert backend.network(name, first) == "exists"  # the same definition: left running as it is
        second = network_xml(GuestNetwork(name, "nat", None, f"10.{third}.2.0/24"), SERIAL)
        assert backend.network(name, second) == "redefined, restarted"
        live = conn.networkLookupByName(name)
        assert live.isActive() and f"10.{third}.2.1" in live.XMLDesc(0)  # running with the new address
    finally:
        _cleanup(conn, prefix)
