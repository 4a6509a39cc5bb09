"""Each kind of plan action on its own, in osbuild-style tables: (action, what it must leave behind).

Host actions run through the real HostFiles on a temporary root; libvirt actions through the real
LibvirtConnection on libvirt's test driver, with the XML the real renderer makes. Every action runs twice: first
boot reruns the whole plan after a crash, so the second run must converge on the same state.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
    load_ssh_public_key,
)

from hypervisor_core.actions import (
    Action,
    CreateVolume,
    DefineDomain,
    DefineNetwork,
    DefinePool,
    RecordDatastore,
    Report,
    SetAutostart,
    SetHostname,
    SetMachineId,
    SetSshHostKeys,
    StartDomain,
    Verify,
    WriteNetwork,
    WriteSettings,
    WriteUsers,
)
from hypervisor_core.backends import (
    Backends,
    BridgePort,
    DatastoreDisk,
    DomainCheck,
    UplinkPort,
    UserAccount,
)
from hypervisor_core.backends.host import HostFiles
from hypervisor_core.backends.libvirt import LibvirtConnection, read_back
from hypervisor_core.config import GuestNetwork, VmDisk, Workload
from hypervisor_core.layout import Layout
from hypervisor_core.render import domain_xml, network_xml, object_uuid, pool_xml, volume_name, volume_xml

from .conftest import REPO
from .firstboot_kit import test_uri

GOLDEN = REPO / "tests" / "golden"
STALE_POOL_HOST = REPO / "tests" / "data" / "libvirt" / "host-with-stale-pool.xml"
SERIAL = "J30ABC12"
CONTENT_ID = "sha256:" + "4c" * 32


class RecordingReport:
    """A ReportBackend that only counts: the real one (FirstBootRun) is tested in test_firstboot.py."""

    detail = "report written, status READY, first boot done"

    def __init__(self) -> None:
        self.calls = 0

    def record_success(self) -> str:
        self.calls += 1
        return self.detail


def _backends(root: Path, conn: libvirt.virConnect, report: RecordingReport | None = None) -> Backends:
    return Backends(HostFiles(Layout(root)), LibvirtConnection(conn, Layout(root)), report or RecordingReport())


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: its bytes and its permission bits."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.lstat().st_mode))
        for p in sorted(root.rglob("*"))
        if not p.is_dir()
    }


def _held(conn: libvirt.virConnect) -> dict:
    """What libvirt holds, without the URI (which differs per scenario file)."""
    return {k: v for k, v in read_back(conn).items() if k != "uri"}


# ------------------------------------------------------------------------------------------------- the host
Want = str | Callable[[str], bool]  # a file's exact text, or a predicate for generated content


def _json(expected: dict) -> Callable[[str], bool]:
    """A JSON file with this content (docs/host-config.md fixes the keys, not the indentation)."""
    return lambda text: text.endswith("\n") and json.loads(text) == expected


def _identity(key: str, valid: Callable[[str], bool]) -> Callable[[str], bool]:
    """identity.json recording exactly one generated value, under `key`."""
    return lambda text: list(json.loads(text)) == [key] and valid(json.loads(text)[key])


def _machine_id(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{32}\n?", text) is not None


def _private_key(text: str) -> bool:
    # parsed by another implementation than ours (cryptography), as sshd would have to
    return isinstance(load_ssh_private_key(text.encode(), password=None), Ed25519PrivateKey)


def _public_key(text: str) -> bool:
    line = re.fullmatch(r"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\S+ root@oemkit\n", text)
    return line is not None and isinstance(load_ssh_public_key(text.encode()), Ed25519PublicKey)


IDENTITY = "var/lib/oemkit/identity.json"
SSH_KEY = "etc/ssh/ssh_host_ed25519_key"
SSH_FILES = {
    SSH_KEY: (_private_key, 0o600),
    SSH_KEY + ".pub": (_public_key, 0o644),
    IDENTITY: (_identity("ssh_host_ed25519_pub", _public_key), 0o600),
}
STOREOPS_KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr2u3vP0yXq8gS6h7wV0b3fJkL9mN1oP2qR4sT5uV6w storeops@example.com",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1aC2bD3cE4dF5eG6fH7gI8hJ9iK0jL1kM2lN3mO4nP storeops@laptop",
)
HASH = "$y$j9T$Yb1cC3eQ8hV0x6z9W1aD2/$3XcQm7bq8o0mX1Hk4pD3w9hC6eG7uJvYt5rS2nL1aB."
SSD = 960 << 30  # bytes
LOMS = (UplinkPort("enp4s0f0", "02:43:d4:96:fd:c6", "0000:04:00.0"), UplinkPort("enp4s0f1", None, "0000:04:00.1"))


@dataclass(frozen=True)
class HostCase:
    action: Action
    files: dict[str, tuple[Want, int]]  # every file the action leaves under the root: content and mode
    detail: str  # what the first run returns
    again: str  # what a rerun returns


HOST_CASES = {
    "machine-id": HostCase(
        SetMachineId(),
        {"etc/machine-id": (_machine_id, 0o444), IDENTITY: (_identity("machine_id", _machine_id), 0o600)},
        "generated",
        "kept",
    ),
    "ssh host keys": HostCase(SetSshHostKeys(True), SSH_FILES, "generated", "kept"),
    "ssh host keys, sshd off": HostCase(SetSshHostKeys(False), SSH_FILES, "generated (sshd off)", "kept"),
    "hostname": HostCase(
        SetHostname("br-ber01-j30abc12"),
        {
            "etc/hostname": ("br-ber01-j30abc12\n", 0o644),
            "etc/hosts": ("127.0.0.1\tlocalhost\n127.0.1.1\tbr-ber01-j30abc12\n::1\tlocalhost ip6-localhost\n", 0o644),
        },
        "br-ber01-j30abc12",
        "br-ber01-j30abc12",
    ),
    "settings": HostCase(
        WriteSettings(
            "Europe/Berlin",
            ("0.pool.ntp.org", "1.pool.ntp.org"),
            ("10.0.0.53", "10.0.1.53"),
            ("stores.example.com", "example.com"),
        ),
        {
            "etc/oemkit/settings.json": (
                _json(
                    {
                        "timezone": "Europe/Berlin",
                        "ntp": ["0.pool.ntp.org", "1.pool.ntp.org"],
                        "dns": {"servers": ["10.0.0.53", "10.0.1.53"], "search": ["stores.example.com", "example.com"]},
                    }
                ),
                0o644,
            ),
            "etc/timezone": ("Europe/Berlin\n", 0o644),
            "etc/resolv.conf": (
                "nameserver 10.0.0.53\nnameserver 10.0.1.53\nsearch stores.example.com example.com\n",
                0o644,
            ),
        },
        "Europe/Berlin",
        "Europe/Berlin",
    ),
    "settings without search domains": HostCase(
        WriteSettings("UTC", (), ("2001:db8::53",), ()),
        {
            "etc/oemkit/settings.json": (
                _json({"timezone": "UTC", "ntp": [], "dns": {"servers": ["2001:db8::53"], "search": []}}),
                0o644,
            ),
            "etc/timezone": ("UTC\n", 0o644),
            "etc/resolv.conf": ("nameserver 2001:db8::53\n", 0o644),  # no empty "search" line
        },
        "UTC",
        "UTC",
    ),
    "network, bonded and static": HostCase(
        WriteNetwork(
            LOMS,
            "active-backup",
            100,
            "static",
            "10.41.0.10/24",
            "10.41.0.1",
            (BridgePort("pos", "ok-pos", 110), BridgePort("cameras", "ok-cameras", None)),
        ),
        {
            "etc/oemkit/network.json": (
                _json(
                    {
                        "uplinks": [
                            {"name": "enp4s0f0", "mac": "02:43:d4:96:fd:c6", "pci_address": "0000:04:00.0"},
                            {"name": "enp4s0f1", "mac": None, "pci_address": "0000:04:00.1"},
                        ],
                        "bond": "active-backup",
                        "vlan": 100,
                        "address": "static",
                        "cidr": "10.41.0.10/24",
                        "gateway": "10.41.0.1",
                        "bridges": [
                            {"network": "pos", "bridge": "ok-pos", "vlan": 110},
                            {"network": "cameras", "bridge": "ok-cameras", "vlan": None},
                        ],
                    }
                ),
                0o644,
            )
        },
        "active-backup over enp4s0f0, enp4s0f1, vlan 100, static",
        "active-backup over enp4s0f0, enp4s0f1, vlan 100, static",
    ),
    "network, one uplink on DHCP": HostCase(
        WriteNetwork(LOMS[:1], None, None, "dhcp", None, None, ()),
        {
            "etc/oemkit/network.json": (
                _json(
                    {
                        "uplinks": [{"name": "enp4s0f0", "mac": "02:43:d4:96:fd:c6", "pci_address": "0000:04:00.0"}],
                        "bond": None,
                        "vlan": None,
                        "address": "dhcp",
                        "cidr": None,
                        "gateway": None,
                        "bridges": [],
                    }
                ),
                0o644,
            )
        },
        "single over enp4s0f0, vlan none, dhcp",
        "single over enp4s0f0, vlan none, dhcp",
    ),
    "users": HostCase(
        WriteUsers((UserAccount("storeops", HASH, STOREOPS_KEYS), UserAccount("backup", None, ())), True, "strict"),
        {
            "etc/oemkit/users.json": (
                _json(
                    {
                        "admins": [
                            {"name": "storeops", "password_hash": HASH, "ssh_keys": list(STOREOPS_KEYS)},
                            {"name": "backup", "password_hash": None, "ssh_keys": []},
                        ],
                        "ssh": True,
                        "lockdown": "strict",
                    }
                ),
                0o600,  # holds password hashes
            ),
            # one key a line; an admin without keys gets no authorized_keys at all
            "home/storeops/.ssh/authorized_keys": ("".join(k + "\n" for k in STOREOPS_KEYS), 0o600),
        },
        "storeops, backup",
        "storeops, backup",
    ),
    "datastore": HostCase(
        RecordDatastore(
            "mirror",
            "datastore",
            (
                DatastoreDisk("sda", "S3Z1NX0M", "naa.5042490e34349a1f", SSD),
                DatastoreDisk("sdb", None, None, SSD),
            ),
        ),
        {
            "etc/oemkit/datastore.json": (
                _json(
                    {
                        "layout": "mirror",
                        "pool": "datastore",
                        "disks": [
                            {"name": "sda", "serial": "S3Z1NX0M", "by_id": "naa.5042490e34349a1f", "size_bytes": SSD},
                            {"name": "sdb", "serial": None, "by_id": None, "size_bytes": SSD},
                        ],
                    }
                ),
                0o644,
            )
        },
        "mirror of sda, sdb",
        "mirror of sda, sdb",
    ),
}


def _check_files(got: dict[str, tuple[bytes, int]], want: dict[str, tuple[Want, int]]) -> None:
    assert sorted(got) == sorted(want)  # these files and nothing else under the root
    for rel, (expected, mode) in want.items():
        content, got_mode = got[rel]
        text = content.decode()
        assert (text == expected) if isinstance(expected, str) else expected(text), f"{rel}: {text!r}"
        assert got_mode == mode, f"{rel}: mode {got_mode:o}, want {mode:o}"


@pytest.mark.parametrize("case", list(HOST_CASES.values()), ids=list(HOST_CASES))
def test_host_action(case: HostCase, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    conn = libvirt.open(test_uri())
    report = RecordingReport()
    b = _backends(root, conn, report)
    assert case.action.run(b) == case.detail
    first = _files(root)
    _check_files(first, case.files)
    assert case.action.run(b) == case.again
    assert _files(root) == first  # converged: same files, bytes and modes (machine-id and host key not re-made)
    assert _held(conn) == _state() and report.calls == 0  # a host action touches only the host


def test_identity_files_agree_and_an_images_identity_is_replaced(tmp_path: Path) -> None:
    # what a cloned flash card carries: the image's machine-id and host keys, which every box would share
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "etc/ssh/ssh_host_rsa_key").write_text("the image's private key\n")
    (tmp_path / "etc/ssh/ssh_host_rsa_key.pub").write_text("ssh-rsa AAAA the image's key\n")
    b = _backends(tmp_path, libvirt.open(test_uri()))
    assert SetMachineId().run(b) == "regenerated (the image carried one)"
    assert SetSshHostKeys(True).run(b) == "generated"
    machine_id = (tmp_path / "etc/machine-id").read_text()
    public = (tmp_path / (SSH_KEY + ".pub")).read_text()
    assert machine_id != "0123456789abcdef0123456789abcdef\n" and _machine_id(machine_id)
    assert sorted(p.name for p in (tmp_path / "etc/ssh").iterdir()) == [Path(SSH_KEY).name, Path(SSH_KEY).name + ".pub"]
    # identity.json names what is on disk (so a rerun recognises it as ours), and the key pair is one pair
    identity = json.loads((tmp_path / IDENTITY).read_text())
    assert identity == {"machine_id": machine_id.strip(), "ssh_host_ed25519_pub": public}
    private = load_ssh_private_key((tmp_path / SSH_KEY).read_bytes(), password=None).public_key()
    assert private.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() == public.rsplit(" ", 1)[0]
    assert (SetMachineId().run(b), SetSshHostKeys(True).run(b)) == ("kept", "kept")


# ------------------------------------------------------------------------------------------------- libvirt
# Real inputs: the objects of the retail profile, rendered by hypervisor_core/render.py (dmz is the clinic's NAT).
POS = GuestNetwork("pos", "bridge", vlan=110)
BACKEND = GuestNetwork("backend", "isolated", cidr="192.168.250.0/24")
DMZ = GuestNetwork("dmz", "nat", cidr="10.99.0.0/24")
POOL_PATH = "/var/lib/oemkit/pools/datastore"  # make_plan's path for root "/"; the test driver never touches it
POS_SERVER = Workload("pos-server", 4, 8192, (VmDisk("root", 60),), ("pos", "backend"), start_order=1)
ROOT_VOLUME = volume_name("pos-server", "root")

NET_POS = DefineNetwork("pos", network_xml(POS, SERIAL))
NET_BACKEND = DefineNetwork("backend", network_xml(BACKEND, SERIAL))
NET_DMZ = DefineNetwork("dmz", network_xml(DMZ, SERIAL))
POOL = DefinePool("datastore", POOL_PATH, pool_xml("datastore", POOL_PATH, SERIAL))
VOLUME = CreateVolume("datastore", ROOT_VOLUME, volume_xml(ROOT_VOLUME, 60), None, 60)
DOMAIN = DefineDomain("pos-server", domain_xml(POS_SERVER, "datastore", SERIAL, CONTENT_ID, "qemu"))
AUTOSTART = SetAutostart("pos-server", True)
START = StartDomain("pos-server", 1)
VERIFY = Verify(("pos", "backend"), "datastore", (DomainCheck("pos-server", True),))
STORAGE = (POOL, VOLUME)
DEFINED = (NET_POS, NET_BACKEND, *STORAGE, DOMAIN)  # what the plan makes before the domain steps
EVERYTHING = (*DEFINED, AUTOSTART, START)


def _net(name: str) -> dict:
    return {"name": name, "active": True, "autostart": True}


def _pool(*volumes: str) -> dict:
    return {"name": "datastore", "active": True, "autostart": True, "volumes": list(volumes)}


def _dom(running: bool = False, autostart: bool = False) -> dict:
    return {"name": "pos-server", "running": running, "autostart": autostart, "persistent": True}


def _state(domains=(), networks=(), pools=()) -> dict:
    return {"domains": list(domains), "networks": list(networks), "pools": list(pools)}


@dataclass(frozen=True)
class LibvirtCase:
    action: Action
    held: dict  # read_back afterwards (lists sorted by name), what `given` made included
    detail: str
    again: str  # a rerun says it found the object
    given: tuple[Action, ...] = ()  # the plan's earlier steps this one needs


NETS_AND_POOL = [_net("backend"), _net("pos")]
LIBVIRT_CASES = {
    "bridge network": LibvirtCase(NET_POS, _state(networks=[_net("pos")]), "defined", "exists"),
    "isolated network": LibvirtCase(NET_BACKEND, _state(networks=[_net("backend")]), "defined", "exists"),
    "nat network": LibvirtCase(NET_DMZ, _state(networks=[_net("dmz")]), "defined", "exists"),
    "pool": LibvirtCase(POOL, _state(pools=[_pool()]), "defined", "exists"),
    "blank volume": LibvirtCase(VOLUME, _state(pools=[_pool(ROOT_VOLUME)]), "created", "exists", given=(POOL,)),
    "domain": LibvirtCase(
        DOMAIN,
        _state([_dom()], NETS_AND_POOL, [_pool(ROOT_VOLUME)]),
        "defined",
        "redefined",
        given=(NET_POS, NET_BACKEND, *STORAGE),
    ),
    "autostart on": LibvirtCase(
        AUTOSTART, _state([_dom(autostart=True)], NETS_AND_POOL, [_pool(ROOT_VOLUME)]), "on", "on", given=DEFINED
    ),
    "autostart off": LibvirtCase(
        SetAutostart("pos-server", False),
        _state([_dom(autostart=False)], NETS_AND_POOL, [_pool(ROOT_VOLUME)]),
        "off",
        "off",
        given=(*DEFINED, AUTOSTART),  # on before, so "off" has something to turn off
    ),
    "start": LibvirtCase(
        START,
        _state([_dom(running=True, autostart=True)], NETS_AND_POOL, [_pool(ROOT_VOLUME)]),
        "started",
        "running",
        given=(*DEFINED, AUTOSTART),
    ),
    "verify": LibvirtCase(
        VERIFY,
        _state([_dom(running=True, autostart=True)], NETS_AND_POOL, [_pool(ROOT_VOLUME)]),
        "1 domains, 2 networks, pool datastore",
        "1 domains, 2 networks, pool datastore",
        given=EVERYTHING,
    ),
}


@pytest.mark.parametrize("case", list(LIBVIRT_CASES.values()), ids=list(LIBVIRT_CASES))
def test_libvirt_action(case: LibvirtCase, tmp_path: Path) -> None:
    conn = libvirt.open(test_uri())
    b = _backends(tmp_path / "root", conn)
    for step in case.given:
        step.run(b)
    assert case.action.run(b) == case.detail
    held = _held(conn)
    assert held == case.held
    assert case.action.run(b) == case.again
    assert _held(conn) == held  # converged on the same objects
    assert not (tmp_path / "root").exists()  # not qemu:///, and no image: nothing on the host


def test_libvirt_holds_the_rendered_objects(tmp_path: Path) -> None:
    # read_back shows names and states; the XML itself must have gone in too (the renderer's UUIDs, the sizes)
    conn = libvirt.open(test_uri())
    b = _backends(tmp_path, conn)
    for step in EVERYTHING:
        step.run(b)
    assert conn.networkLookupByName("pos").UUIDString() == object_uuid(SERIAL, "network", "pos")
    pool = conn.storagePoolLookupByName("datastore")
    assert pool.UUIDString() == object_uuid(SERIAL, "pool", "datastore")
    assert pool.storageVolLookupByName(ROOT_VOLUME).info()[1] == 60 << 30  # capacity in bytes
    dom = conn.lookupByName("pos-server")
    assert dom.UUIDString() == object_uuid(SERIAL, "domain", "pos-server")
    assert f'content_id="{CONTENT_ID}"' in dom.XMLDesc(0)  # our metadata survived libvirt's validation


def test_a_domain_libvirt_does_not_understand_is_refused_not_trimmed(tmp_path: Path) -> None:
    conn = libvirt.open(test_uri())
    bad = DefineDomain("pos-server", DOMAIN.xml.replace("<memballoon", "<balloon-of-the-future /><memballoon"))
    with pytest.raises(libvirt.libvirtError, match="failed to validate"):
        bad.run(_backends(tmp_path, conn))
    assert _held(conn)["domains"] == []


def _target_path(pool: libvirt.virStoragePool) -> str | None:
    return ET.fromstring(pool.XMLDesc(0)).findtext("target/path")


def test_a_pool_of_that_name_elsewhere_is_redefined_onto_the_plans_path(tmp_path: Path) -> None:
    conn = libvirt.open(f"test://{STALE_POOL_HOST}")
    stale = conn.storagePoolLookupByName("datastore")  # the test driver took the scenario file
    assert _target_path(stale) == "/srv/rehearsal-1/var/lib/oemkit/pools/datastore"
    b = _backends(tmp_path, conn)
    assert POOL.run(b) == "defined"  # not "exists": the pool it found was not ours
    pool = conn.storagePoolLookupByName("datastore")
    assert _target_path(pool) == POOL_PATH
    assert pool.UUIDString() == object_uuid(SERIAL, "pool", "datastore")
    assert _held(conn) == _state(pools=[_pool()])
    assert POOL.run(b) == "exists"  # and from now on it is
    assert _target_path(conn.storagePoolLookupByName("datastore")) == POOL_PATH


VERIFY_FAILURES = {
    "domain not running": (lambda conn: conn.lookupByName("pos-server").destroy(), "domain pos-server is not running"),
    "domain autostart off": (
        lambda conn: conn.lookupByName("pos-server").setAutostart(0),
        "domain pos-server autostart is False",
    ),
    "network down": (
        lambda conn: conn.networkLookupByName("backend").destroy(),
        "network backend is not active with autostart",
    ),
    "pool stopped": (lambda conn: conn.storagePoolLookupByName("datastore").destroy(), "pool datastore is not active"),
}


@pytest.mark.parametrize(("spoil", "problem"), list(VERIFY_FAILURES.values()), ids=list(VERIFY_FAILURES))
def test_verify_raises_when_libvirt_does_not_hold_the_plan(spoil, problem: str, tmp_path: Path) -> None:
    conn = libvirt.open(test_uri())
    b = _backends(tmp_path, conn)
    for step in EVERYTHING:
        step.run(b)
    assert VERIFY.run(b) == "1 domains, 2 networks, pool datastore"  # all well first: the failure is the spoiling's
    spoil(conn)
    with pytest.raises(RuntimeError, match=f"^{re.escape(problem)}$"):
        VERIFY.run(b)


# ------------------------------------------------------------------------------------------------- the report
REPORT_CASES = {"report": Report()}


@pytest.mark.parametrize("action", list(REPORT_CASES.values()), ids=list(REPORT_CASES))
def test_report_action_records_success_once(action: Action, tmp_path: Path) -> None:
    conn = libvirt.open(test_uri())
    report = RecordingReport()
    assert action.run(_backends(tmp_path / "root", conn, report)) == RecordingReport.detail
    assert report.calls == 1
    assert not (tmp_path / "root").exists() and _held(conn) == _state()  # the report backend does it all


# ------------------------------------------------------------------------------------------------- every kind
TABLED = [c.action for c in HOST_CASES.values()] + [c.action for c in LIBVIRT_CASES.values()]
TABLED += list(REPORT_CASES.values())


def _kinds(cls: type[Action]) -> set[type[Action]]:
    """Every kind of action of the product: a class that names its own `kind` (a base such as LibvirtObject names
    none; a test's own fake subclass, if any, does not count). One that forgot run() or describe() is abstract and
    cannot be instantiated for its row, so it fails here too."""
    out = set()
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("hypervisor_core.") and "kind" in vars(sub):
            out.add(sub)
        out |= _kinds(sub)
    return out


def test_every_action_kind_has_a_table_row() -> None:
    kinds = _kinds(Action)
    assert len(kinds) >= 15  # the walk found the actions module's classes
    missing = sorted(k.__name__ for k in kinds - {type(a) for a in TABLED})
    assert missing == [], f"action kinds without a row in tests/test_actions.py: {missing}"


def _golden_steps() -> set[tuple[str, str]]:
    return {(s["kind"], s["id"]) for f in sorted(GOLDEN.glob("plan-*.json")) for s in json.loads(f.read_text())}


@pytest.mark.parametrize("action", TABLED, ids=lambda a: type(a).__name__)
def test_action_ids_are_the_goldens_and_describe_is_one_line(action: Action) -> None:
    # the journal, the report and the plan goldens name steps by id: a renamed id breaks a resumed first boot
    assert (action.kind, action.id) in _golden_steps()
    assert action.to_dict()["id"] == action.id and action.to_dict()["kind"] == action.kind
    text = action.describe()
    assert text.strip() and text == text.strip() and "\n" not in text, repr(text)
