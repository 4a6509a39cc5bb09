"""Apply etc/oemkit/network.json to the running kernel with iproute2: bond, management VLAN and address, and the
Linux bridges libvirt's `forward mode="bridge"` guest networks attach to.

Run by first boot on a live appliance (`--root /`) and by the core's init at every boot
(`python -m hypervisor_core.hostnet`). `commands()` is pure and golden-testable; `apply()` runs them, each one
idempotent (links are created only when missing, addresses and routes are replaced), so a reboot or a rerun
converges. Uplinks are found by MAC address: interface names may differ from boot to boot, MACs do not. The
commands go to one `ip -batch -` (under emulation each `ip` process costs ~50 ms; a bonded, tagged host is a
dozen), which stops at the first failure; its line number names the command, as a lone `ip` would.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypervisor_core.config import parse_json
from hypervisor_core.fsutil import read_regular
from hypervisor_core.layout import NETWORK_CONFIG

BOND = "okbond0"
DHCP_SCRIPT = "/usr/share/oemkit/udhcpc.script"  # in the core (oemkit/image/core/files/udhcpc.script)
DHCP_PIDS = "/run/oemkit"
DHCP_TRIES, DHCP_TIMEOUT_S = 5, 2  # ~10 s for a first lease before udhcpc goes on in the background


class HostNetError(Exception):
    pass


def _by_mac(links: list[dict[str, Any]], ours: set[str]) -> dict[str, str]:
    """MAC → interface. A bond, bridge or VLAN we made carries its port's MAC; the port is the uplink."""
    out: dict[str, str] = {}
    for link in links:
        if link.get("address") and link["ifname"] not in ours and "." not in link["ifname"]:
            out.setdefault(link["address"].lower(), link["ifname"])
    return out


def commands(net: dict[str, Any], links: list[dict[str, Any]]) -> list[list[str]]:
    """The `ip` commands (without the leading `ip`) that make the kernel match `net`, given the current links
    (as `ip -j link show` reports them)."""
    return plan(net, links)[0]


def plan(net: dict[str, Any], links: list[dict[str, Any]]) -> tuple[list[list[str]], str]:
    """commands(), and the interface that carries the management address (what a DHCP client runs on)."""
    present = {link["ifname"] for link in links}
    macs = _by_mac(links, {BOND, *(b["bridge"] for b in net.get("bridges", []))})
    uplinks = []
    for up in net["uplinks"]:
        name = macs.get((up.get("mac") or "").lower())
        if name is None:
            raise HostNetError(f"uplink {up.get('name')} ({up.get('mac')}) is not on this box")
        uplinks.append(name)
    cmds: list[list[str]] = []

    def link(name: str, *spec: str) -> None:
        if name not in present:
            cmds.append(["link", "add", *spec])
            present.add(name)

    lower = uplinks[0]
    if net.get("bond"):
        link(BOND, BOND, "type", "bond", "mode", net["bond"], "miimon", "100")
        for name in uplinks:
            cmds += [["link", "set", name, "down"], ["link", "set", name, "master", BOND], ["link", "set", name, "up"]]
        lower = BOND
    cmds.append(["link", "set", lower, "up"])
    mgmt = lower
    if net.get("vlan"):
        mgmt = f"{lower}.{net['vlan']}"[:15]
        link(mgmt, "link", lower, "name", mgmt, "type", "vlan", "id", str(net["vlan"]))
        cmds.append(["link", "set", mgmt, "up"])
    untagged = [b for b in net.get("bridges", []) if not b.get("vlan")]
    if len(untagged) > 1:
        raise HostNetError(f"bridges {', '.join(b['bridge'] for b in untagged)} would all take the untagged uplink")
    for bridge in net.get("bridges", []):
        br = bridge["bridge"]
        link(br, br, "type", "bridge")
        if bridge.get("vlan"):
            port = f"{lower}.{bridge['vlan']}"[:15]
            link(port, "link", lower, "name", port, "type", "vlan", "id", str(bridge["vlan"]))
        else:
            port = lower
            if not net.get("vlan"):
                mgmt = br  # the untagged bridge carries the management address too
        cmds += [["link", "set", port, "master", br], ["link", "set", port, "up"], ["link", "set", br, "up"]]
    if net.get("address") == "static":
        cmds.append(["address", "replace", net["cidr"], "dev", mgmt])
        if net.get("gateway"):
            cmds.append(["route", "replace", "default", "via", net["gateway"], "dev", mgmt])
    return cmds, mgmt


_UNSAFE = set(" \t\n\"'\\#")  # characters `ip -batch` would split or quote on; no name or address has them


class IpRunner:
    """iproute2 for the host (or inside a network namespace: tests): one command, or a batch in one process."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.base = ["ip", *(["-n", netns] if netns else [])]

    def __call__(self, args: list[str]) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HostNetError(f"{' '.join([*self.base, *args])}: {_first_line(done.stderr)}")
        return done.stdout

    def batch(self, cmds: list[list[str]]) -> None:
        for args in cmds:
            if any(c in _UNSAFE for a in args for c in a):
                raise HostNetError(f"{' '.join(args)!r}: an argument ip -batch would misread")
        text = "".join(" ".join(args) + "\n" for args in cmds)
        done = subprocess.run([*self.base, "-batch", "-"], input=text, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            # ip -batch stops at the first failure and names its line: "Command failed -:3"
            failed = re.search(r"Command failed -:(\d+)", done.stderr)
            n = int(failed.group(1)) if failed else 0
            what = " ".join([*self.base, *cmds[n - 1]]) if 0 < n <= len(cmds) else " ".join([*self.base, "-batch"])
            errors = [line for line in done.stderr.splitlines() if not line.startswith("Command failed")]
            raise HostNetError(f"{what}: {_first_line(chr(10).join(errors))}")


def _first_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()] or ["(no error text)"]
    return lines[0].strip()[:200]  # the first line says what is wrong


def ip_runner(netns: str | None = None) -> IpRunner:
    return IpRunner(netns)


def apply(net: dict[str, Any], run: IpRunner, dhcp_script: str = DHCP_SCRIPT) -> list[str]:
    """Make the kernel match `net`. Returns what was run; with `address: dhcp`, a DHCP client on the management
    interface too (busybox udhcpc, `dhcp_script` applying its lease)."""
    links = json.loads(run(["-j", "link", "show"]) or "[]")
    cmds, mgmt = plan(net, links)
    if cmds:
        run.batch(cmds)
    done = ["ip " + " ".join(args) for args in cmds]
    if net.get("address") == "dhcp":
        done.append(dhcp(mgmt, run, dhcp_script))
    return done


def dhcp(iface: str, run: IpRunner, script: str = DHCP_SCRIPT) -> str:
    """A DHCP client on `iface` that keeps renewing its lease: busybox udhcpc, which waits (bounded: DHCP_TRIES
    discovers DHCP_TIMEOUT_S apart) for a first lease and then goes to the background either way, so a box whose
    DHCP server answers late still gets its address. One client per interface: a rerun leaves a live one be."""
    pidfile = Path(DHCP_PIDS) / f"udhcpc.{iface}.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return f"udhcpc -i {iface}: already running (pid {pid})"
    except (OSError, ValueError):
        pass  # none yet, or a stale pidfile from a client that is gone
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    argv = ["udhcpc", "-i", iface, "-s", script, "-b", "-t", str(DHCP_TRIES), "-T", str(DHCP_TIMEOUT_S),
            "-A", "10", "-p", str(pidfile)]  # fmt: skip
    prefix = ["ip", "netns", "exec", run.netns] if run.netns else []
    try:
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False,
                              timeout=DHCP_TRIES * DHCP_TIMEOUT_S + 10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostNetError(f"udhcpc on {iface}: {exc}") from None
    lease = re.search(r"lease of (\S+) obtained", done.stdout + done.stderr)
    if done.returncode != 0:
        raise HostNetError(f"udhcpc on {iface}: {_first_line(done.stderr or done.stdout)}")
    return f"udhcpc -i {iface}: " + (f"lease {lease.group(1)}" if lease else "no lease yet, keeps asking")


LINK_WAIT_S = 6.0  # a real port autonegotiates in 1-3 s; one without a cable never comes up: bounded


def bring_up(names: list[str], run: IpRunner, wait_s: float = LINK_WAIT_S) -> dict[str, bool]:
    """Bring the ports `names` administratively up and wait, bounded, for each to have a link; name -> carrier.
    A port that is down reports no carrier at all, so a rule that wants "a live port" can only be judged after
    this (first boot's ports are all down: nothing has configured them yet). Carrier is read from `ip`'s LOWER_UP
    flag, which works inside a network namespace as well as on the box."""
    if not names:
        return {}
    run.batch([["link", "set", name, "up"] for name in names])
    deadline = time.monotonic() + wait_s
    while True:
        flags = {link["ifname"]: link.get("flags", []) for link in json.loads(run(["-j", "link", "show"]) or "[]")}
        state = {name: "LOWER_UP" in flags.get(name, []) for name in names}
        if all(state.values()) or time.monotonic() >= deadline:
            return state
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hypervisor_core.hostnet",
        description=f"apply {NETWORK_CONFIG} (run by the core's init at every boot)",
    )
    ap.add_argument("--root", type=Path, default=Path("/"))
    ap.add_argument("--netns", help="apply inside this network namespace (tests)")
    args = ap.parse_args(argv)
    try:
        # the state disk is not trusted: bounded, strict JSON (depth, duplicates), and a shape first boot writes
        net = parse_json(read_regular(args.root / NETWORK_CONFIG, 1 << 20))
        if not isinstance(net, dict):
            raise ValueError(f"{NETWORK_CONFIG} is not a JSON object")
        for line in apply(net, ip_runner(args.netns)):
            print(line)
    except (OSError, ValueError, HostNetError) as exc:
        print(f"oemkit hostnet: {exc}", file=sys.stderr)
        return 1
    except (TypeError, KeyError, IndexError, AttributeError) as exc:  # valid JSON, but not what first boot writes
        print(f"oemkit hostnet: {NETWORK_CONFIG} is not what first boot writes ({type(exc).__name__}: {exc})",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
