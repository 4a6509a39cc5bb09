"""Benchmarks of sealing and first boot, each against its floor measured in the same run. Prints Markdown.

(a) compile a 10,000-unit order (one profile, 100 sites) vs writing the same JSON with plain json.dumps;
(b) first boot of a 10-workload unit on libvirt's test driver vs a minimal script that defines the same
    pre-rendered XML on one connection.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import libvirt
from _common import KEY, PUB, REPO, write_section

from hypervisor_core import actions, config
from hypervisor_core.facts import probe
from hypervisor_core.firstboot import first_boot
from hypervisor_core.match import match
from hypervisor_core.plan import make_plan
from oemkit.catalog.store import load_catalog
from oemkit.hardware.dmi import read_report
from oemkit.hardware.facts_tree import build_tree
from oemkit.seal.compile import compile_unit
from oemkit.seal.keys import load_private_key
from oemkit.seal.orders import compile_orders

HOST = REPO / "tests/data/libvirt/empty-host.xml"
UNITS, SITES = 10_000, 100


def bench_orders(tmp: Path) -> list[str]:
    profile = REPO / "profiles" / "retail-branch.yaml"
    sites = tmp / "sites"
    sites.mkdir()
    for i in range(SITES):
        (sites / f"s{i:03}.yaml").write_text(
            "apiVersion: oemkit/v1\nkind: SiteOverlay\nprofile: retail-branch\n"
            f"site: {{code: st{i:03}, name: Store {i}}}\n"
            f"overrides:\n  host: {{timezone: Europe/Berlin}}\n  network:\n    management:\n"
            f"      address: {{address: 10.{i // 250}.{i % 250}.10/24, gateway: 10.{i // 250}.{i % 250}.1}}\n"
        )
    orders = tmp / "orders.csv"
    rows = ["serial,profile,site"] + [f"U{n:07},{profile},sites/s{n % SITES:03}.yaml" for n in range(UNITS)]
    orders.write_text("\n".join(rows) + "\n")
    key, catalog = load_private_key(KEY), load_catalog()
    t = time.perf_counter()
    results = list(compile_orders(orders, key, catalog, tmp / "out"))
    ours = time.perf_counter() - t
    assert all(not r.problems for r in results) and len(results) == UNITS
    docs = [json.loads(r.file.read_text()) for r in results[:SITES]]
    t = time.perf_counter()
    plain = tmp / "plain"
    plain.mkdir()
    for n in range(UNITS):
        (plain / f"U{n:07}.json").write_text(json.dumps(docs[n % SITES], indent=2, sort_keys=True) + "\n")
    floor = time.perf_counter() - t
    return [
        f"| compile a {UNITS:,}-unit order ({SITES} sites, one profile), sealed and signed | {ours:.1f} s "
        f"| {UNITS / ours:,.0f} units/s |",
        f"| write the same {UNITS:,} JSON documents with plain json.dumps (floor) | {floor:.1f} s | ratio "
        f"{ours / floor:.1f}x |",
    ]


def _profile_10(tmp: Path) -> Path:
    vms = "\n".join(
        f"    - {{name: vm{i:02}, vcpus: 1, memory_mib: 512, disks: [{{name: root, size_gib: 10}}], "
        f"networks: [lan], start_order: {i}}}"
        for i in range(10)
    )
    text = (REPO / "tests/data/profiles/base.yaml").read_text()
    text = text[: text.index("workloads:")] + "workloads:\n  vms:\n" + vms + "\n"
    text = text.replace("    - {name: backend, mode: isolated, cidr: 192.168.50.0/24}\n", "")
    text = text.replace("{interface: sata, count: 2}", "{interface: sata, min_size_gib: 400, count: 2}")
    path = tmp / "ten.yaml"
    path.write_text(text)
    (tmp / "site.yaml").write_text(
        "apiVersion: oemkit/v1\nkind: SiteOverlay\nprofile: test-branch\nsite: {code: b1, name: B}\n"
    )
    return path


def bench_firstboot(tmp: Path, runs: int = 15) -> list[str]:
    profile = _profile_10(tmp)
    catalog = load_catalog()
    compiled = compile_unit(profile, tmp / "site.yaml", "BENCH0001", load_private_key(KEY), catalog)
    assert not compiled.problems, compiled.problems
    raw = compiled.text().encode()
    report = read_report(REPO / "tests/data/dmi/dell/PowerEdge-R650/AF241F438036.txt")
    build_tree(tmp / "box", report, catalog.get("dell-poweredge-r650"), "BENCH0001")
    facts = probe(tmp / "box")
    public = config.read_public_key(PUB.read_text())
    cfg = config.load(raw, public)
    plan = make_plan(cfg, facts, match(cfg, facts), str(tmp / "root"))
    agent, minimal = [], []
    for n in range(runs):
        conn = libvirt.open(f"test://{HOST}")
        t = time.perf_counter()
        result = first_boot(raw, public, tmp / f"root{n}", lambda c=conn: c, facts, out=io.StringIO())
        agent.append(time.perf_counter() - t)
        assert result["status"] == "READY", result["reason"]
        conn = libvirt.open(f"test://{HOST}")
        t = time.perf_counter()
        for action in plan:  # the same XML, straight into libvirt: no checks, no journal, no host files
            if isinstance(action, actions.DefineNetwork):
                net = conn.networkDefineXML(action.xml)
                net.setAutostart(1)
                net.create()
            elif isinstance(action, actions.DefinePool):
                pool = conn.storagePoolDefineXML(action.xml)
                pool.setAutostart(1)
                pool.create()
            elif isinstance(action, actions.CreateVolume):
                conn.storagePoolLookupByName(action.pool).createXML(action.xml, 0)
            elif isinstance(action, actions.DefineDomain):
                conn.defineXMLFlags(action.xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            elif isinstance(action, actions.SetAutostart):
                conn.lookupByName(action.name).setAutostart(1)
            elif isinstance(action, actions.StartDomain):
                conn.lookupByName(action.name).create()
        minimal.append(time.perf_counter() - t)
    a_ms, m_ms = statistics.median(agent) * 1000, statistics.median(minimal) * 1000
    return [
        f"| first boot of a 10-workload unit on the test driver (verify, match, plan, apply, journal, report) "
        f"| {a_ms:.1f} ms | ratio {a_ms / m_ms:.1f}x |",
        f"| minimal script: the same pre-rendered XML defined on one connection (floor) | {m_ms:.1f} ms | |",
    ]


BEGIN, END = "<!-- bench:firstboot:begin -->", "<!-- bench:firstboot:end -->"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        lines = bench_orders(Path(tmp) / "a") + bench_firstboot(Path(tmp) / "b")
    text = "\n".join(
        [
            BEGIN,
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on this project's machine (2 cores); first "
            "boot is the median of 15 runs.",
            "",
            "| benchmark | time | vs floor |",
            "|---|---:|---:|",
            *lines,
            "",
            END,
        ]
    )
    print(text)
    if "--write" in sys.argv:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
