"""Host networking from network.json: the ip commands (pure) and their effect on a real kernel, in a network
namespace of the test's own (bond and VLAN need kernel modules this build host lacks; the booted core has them)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_core import hostnet

from .conftest import REPO

NET = {
    "uplinks": [
        {"name": "eno1", "mac": "02:aa:00:00:00:01", "pci_address": "0000:04:00.0"},
        {"name": "eno2", "mac": "02:aa:00:00:00:02", "pci_address": "0000:04:00.1"},
    ],
    "bond": "active-backup",
    "vlan": 100,
    "address": "static",
    "cidr": "10.41.0.10/24",
    "gateway": "10.41.0.1",
    "bridges": [
        {"network": "pos", "bridge": "ok-pos", "vlan": 110},
        {"network": "lan", "bridge": "ok-lan", "vlan": None},
    ],
}
LINKS = [
    {"ifname": "lo", "address": "00:00:00:00:00:00"},
    {"ifname": "enp4s0f0", "address": "02:AA:00:00:00:01"},
    {"ifname": "enp4s0f1", "address": "02:aa:00:00:00:02"},
]


def test_commands_for_a_bonded_tagged_host() -> None:
    cmds = [" ".join(c) for c in hostnet.commands(NET, LINKS)]
    assert cmds == [
        "link add okbond0 type bond mode active-backup miimon 100",
        "link set enp4s0f0 down",
        "link set enp4s0f0 master okbond0",
        "link set enp4s0f0 up",
        "link set enp4s0f1 down",
        "link set enp4s0f1 master okbond0",
        "link set enp4s0f1 up",
        "link set okbond0 up",
        "link add link okbond0 name okbond0.100 type vlan id 100",
        "link set okbond0.100 up",
        "link add ok-pos type bridge",
        "link add link okbond0 name okbond0.110 type vlan id 110",
        "link set okbond0.110 master ok-pos",
        "link set okbond0.110 up",
        "link set ok-pos up",
        "link add ok-lan type bridge",
        "link set okbond0 master ok-lan",
        "link set okbond0 up",
        "link set ok-lan up",
        "address replace 10.41.0.10/24 dev okbond0.100",
        "route replace default via 10.41.0.1 dev okbond0.100",
    ]


def test_uplinks_are_found_by_mac_or_refused() -> None:
    with pytest.raises(hostnet.HostNetError, match="02:aa:00:00:00:02"):
        hostnet.commands(NET, LINKS[:2])


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of our own: needs root, as the README's test set-up has (CI must not skip it)."""
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("OEMKIT_REQUIRE_CORE") == "1" else pytest.skip)("a network namespace needs root")
    name = f"okt-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _ip(ns: str, *args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=True).stdout)


def _uplink(netns: str) -> None:
    """The box's LOM port with the MAC the uplink rule names (a veth: the namespace has no real NIC)."""
    veth = ["link", "add", "enp4s0f0", "address", "02:aa:00:00:00:01", "type", "veth", "peer", "name", "peer0"]
    subprocess.run(["ip", "-n", netns, *veth], check=True)


def test_apply_in_a_real_kernel_and_again(netns: str) -> None:
    _uplink(netns)
    net = {
        "uplinks": NET["uplinks"][:1],
        "bond": None,
        "vlan": None,
        "address": "static",
        "cidr": "10.77.0.5/24",
        "gateway": "10.77.0.1",
        "bridges": [{"network": "lan", "bridge": "ok-lan", "vlan": None}],
    }
    first = hostnet.apply(net, hostnet.ip_runner(netns))
    assert "ip link add ok-lan type bridge" in first
    links = {link["ifname"]: link for link in _ip(netns, "link", "show")}
    assert links["enp4s0f0"]["master"] == "ok-lan"
    addrs = {a["ifname"]: [i["local"] for i in a["addr_info"]] for a in _ip(netns, "addr", "show")}
    assert addrs["ok-lan"] == ["10.77.0.5"]
    assert _ip(netns, "route", "show", "default")[0]["gateway"] == "10.77.0.1"
    second = hostnet.apply(net, hostnet.ip_runner(netns))  # at the next boot: nothing created twice
    assert not any(c.startswith("ip link add") for c in second)
    assert {link["ifname"] for link in _ip(netns, "link", "show")} == set(links)


def test_a_failing_command_in_the_batch_is_named(netns: str) -> None:
    """All commands go to one `ip -batch -`; the one the kernel refuses is named as a lone `ip` would be, and the
    ones before it took effect (each is idempotent: the next boot converges)."""
    _uplink(netns)
    net = {
        "uplinks": NET["uplinks"][:1],
        "bond": None,
        "vlan": None,
        "address": "static",
        "cidr": "10.77.0.5/24",
        "gateway": "10.99.0.1",
        "bridges": [],
    }  # fmt: skip  (a gateway outside the subnet)
    with pytest.raises(hostnet.HostNetError) as err:
        hostnet.apply(net, hostnet.ip_runner(netns))
    assert str(err.value).startswith(f"ip -n {netns} route replace default via 10.99.0.1 dev enp4s0f0: "), err.value
    assert "Command failed" not in str(err.value)
    addrs = {a["ifname"]: [i["local"] for i in a["addr_info"]] for a in _ip(netns, "addr", "show")}
    assert addrs["enp4s0f0"] == ["10.77.0.5"]


def test_the_batch_refuses_what_ip_would_misread() -> None:
    with pytest.raises(hostnet.HostNetError, match="misread"):
        hostnet.ip_runner("never-used").batch([["link", "set", "eth0 down", "up"]])


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than"),
        ("[]", "is not a JSON object"),
        ('{"a": 1, "a": 2}', "duplicate key"),
    ],
    ids=["deep", "a-list", "duplicate-key"],
)
def test_a_damaged_network_json_is_refused_in_one_line(content: str, why: str, tmp_path, capsys) -> None:
    """The state disk is not trusted: whatever network.json holds, the boot-time applier says so, no traceback."""
    config = tmp_path / hostnet.NETWORK_CONFIG
    config.parent.mkdir(parents=True)
    config.write_text(content)
    assert hostnet.main(["--root", str(tmp_path), "--netns", "oemkit-test-absent"]) == 1
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1


def test_ports_are_brought_up_and_their_links_read_bounded(netns: str) -> None:
    """First boot's ports are down, and a down port shows no carrier: `bring_up` raises them and waits for links,
    but not forever for a port with no cable (here: a veth whose peer stays down)."""
    for port, peer in (("ocp1p1", "cable1"), ("ocp1p2", "cable2")):
        subprocess.run(["ip", "-n", netns, "link", "add", port, "type", "veth", "peer", "name", peer], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "cable1", "up"], check=True)  # the other end is plugged in
    run = hostnet.ip_runner(netns)
    state = hostnet.bring_up(["ocp1p1", "ocp1p2"], run, wait_s=0.6)
    assert state == {"ocp1p1": True, "ocp1p2": False}
    assert {link["ifname"]: link["operstate"] for link in _ip(netns, "link", "show")}["ocp1p1"] == "UP"
    assert hostnet.bring_up([], run) == {}


@pytest.fixture
def dhcp_server(netns: str, tmp_path: Path) -> Iterator[str]:
    """A second namespace with dnsmasq serving DHCP over a veth to the box's port (enp4s0f0) in `netns`."""
    if shutil.which("dnsmasq") is None or shutil.which("busybox") is None:
        (pytest.fail if os.environ.get("OEMKIT_REQUIRE_CORE") == "1" else pytest.skip)(
            "dnsmasq and busybox (udhcpc) are needed: bash scripts/setup.sh --dev installs them"
        )
    server = f"oks-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", server], check=True)
    dnsmasq = None
    try:
        veth = ["link", "add", "enp4s0f0", "address", "02:aa:00:00:00:01", "type", "veth", "peer", "name", "lan0"]
        subprocess.run(["ip", "-n", netns, *veth], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", "lan0", "netns", server], check=True)
        for args in (["addr", "add", "10.88.0.1/24", "dev", "lan0"], ["link", "set", "lan0", "up"]):
            subprocess.run(["ip", "-n", server, *args], check=True)
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", server, "dnsmasq", "--no-daemon", "--port=0", "--interface=lan0",
             "--bind-interfaces", "--dhcp-range=10.88.0.50,10.88.0.60,255.255.255.0,1h",
             "--dhcp-option=3,10.88.0.1", "--dhcp-option=6,10.88.0.53", f"--dhcp-leasefile={tmp_path / 'leases'}",
             "--conf-file=/dev/null", f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        yield server
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(10)
        subprocess.run(["ip", "netns", "del", server], check=False)


def test_dhcp_takes_a_lease_and_keeps_renewing_it(
    netns: str, dhcp_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`address: dhcp` on a real kernel: busybox's udhcpc (as the core runs it) against dnsmasq, the lease applied
    by the core's own hook script; a second apply (the next boot's init) starts no second client."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "udhcpc").symlink_to(shutil.which("busybox"))  # the core has busybox's applets as links
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(hostnet, "DHCP_PIDS", str(tmp_path / "run"))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")  # a profile that names no DNS server: the lease's goes in
    monkeypatch.setenv("OEMKIT_RESOLV_CONF", str(resolv))
    script = str(REPO / "oemkit" / "image" / "core" / "files" / "udhcpc.script")
    net = {"uplinks": NET["uplinks"][:1], "bond": None, "vlan": None, "address": "dhcp", "cidr": None,
           "gateway": None, "bridges": []}  # fmt: skip
    pidfile = tmp_path / "run" / "udhcpc.enp4s0f0.pid"
    try:
        done = hostnet.apply(net, hostnet.ip_runner(netns), dhcp_script=script)
        assert re.fullmatch(r"udhcpc -i enp4s0f0: lease 10\.88\.0\.(5\d|60)", done[-1]), done
        addrs = {a["ifname"]: [i["local"] for i in a.get("addr_info", [])] for a in _ip(netns, "-4", "addr", "show")}
        assert addrs["enp4s0f0"] == [done[-1].rsplit(" ", 1)[1]]
        assert _ip(netns, "route", "show", "default")[0]["gateway"] == "10.88.0.1"
        assert resolv.read_text() == "nameserver 10.88.0.53\n"
        again = hostnet.apply(net, hostnet.ip_runner(netns), dhcp_script=script)
        assert again[-1].startswith("udhcpc -i enp4s0f0: already running (pid ")
    finally:
        if pidfile.exists():  # the client we started (it forked into the background)
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
