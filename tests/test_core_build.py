"""The real core build (root, Debian mirrors on the first run; warm from the persistent cache afterwards)."""

from __future__ import annotations

import hashlib
import json
import lzma
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.catalog.store import load_catalog
from oemkit.cli.app import app
from oemkit.image.core import cpio, elf
from oemkit.image.core.recipe import FOOTPRINT_PARTS, HARDWARE_MODULES, PY

from .conftest import REPO
from .core_fixtures import TEST_PUB, build_args

pytestmark = pytest.mark.slow
runner = CliRunner()
AGENT = "/usr/lib/python3/dist-packages/hypervisor_core"


@pytest.fixture(scope="module")
def contents(core_dir: Path) -> dict[str, dict[str, cpio.Member]]:
    """part → path → entry, unpacked from initrd.img by the manifest's offsets."""
    manifest = json.loads((core_dir / "manifest.json").read_text())
    initrd = (core_dir / "initrd.img").read_bytes()
    out = {}
    for part in manifest["parts"]:
        data = initrd[part["offset"] : part["offset"] + part["stream_bytes"]]
        out[part["name"]] = {"/" + e.name: e for e in cpio.read_newc(lzma.decompress(data))}
    return out


def _all(contents: dict[str, dict[str, cpio.Member]]) -> dict[str, cpio.Member]:
    merged: dict[str, cpio.Member] = {}
    for entries in contents.values():  # in initrd order: a later part's path wins, as in the kernel
        merged.update(entries)
    return merged


def test_core_json_and_footprint_match_the_files(core_dir: Path) -> None:
    meta = json.loads((core_dir / "core.json").read_text())
    doc = json.loads((core_dir / "footprint.json").read_text())
    manifest = json.loads((core_dir / "manifest.json").read_text())
    vmlinuz, initrd = (core_dir / "vmlinuz").read_bytes(), (core_dir / "initrd.img").read_bytes()
    assert meta["core_id"] == hashlib.sha256(vmlinuz + initrd).hexdigest()[:20] == doc["core_id"]
    assert meta["footprint"] == doc
    assert [p["name"] for p in doc["parts"]] == list(FOOTPRINT_PARTS)
    sizes = {p["name"]: p["compressed_bytes"] for p in doc["parts"]}
    assert sizes.pop("kernel") == len(vmlinuz)
    assert sum(sizes.values()) == len(initrd)
    assert doc["compressed_bytes"] == len(vmlinuz) + len(initrd)
    assert {p["name"]: p["uncompressed_bytes"] for p in manifest["parts"]} == {
        p["name"]: p["uncompressed_bytes"] for p in doc["parts"][1:]
    }
    assert meta["kernel"].startswith("linux-image-") and meta["kernel"].endswith(meta["kernel"].split("=")[1])
    assert meta["compression"] == "xz" and meta["flavour"] == "amd64"
    assert any(p.startswith("libvirt-daemon=") for p in meta["packages"])


def test_initrd_holds_what_a_kvm_host_needs(contents: dict[str, dict[str, cpio.Member]]) -> None:
    files = _all(contents)
    init = files["/init"]
    assert init.mode & 0o777 == 0o755
    assert init.data == (REPO / "oemkit" / "image" / "core" / "files" / "init").read_bytes()
    assert files["/usr/bin/python3"].is_link and files["/usr/bin/python3"].data.decode() == PY
    assert elf.is_elf(files[f"/usr/bin/{PY}"].data)
    assert files["/usr/share/oemkit/factory.pub"].data == TEST_PUB.read_bytes()
    assert "/etc/oemkit/factory.pub" not in files  # /etc/oemkit is state: the key must not live there
    inittab = files["/etc/inittab"].data.decode()
    assert "respawn" not in inittab and "askfirst" not in inittab  # no console shell on a locked-down box
    for tool in ("/usr/sbin/dnsmasq", "/usr/sbin/xtables-legacy-multi", "/usr/lib/libvirt/libvirt_leaseshelper"):
        assert elf.is_elf(files[tool].data), tool  # libvirt's NAT and isolated networks do not start without them
    assert files["/usr/sbin/iptables"].data == b"xtables-legacy-multi"
    assert b"nobody:" in files["/etc/passwd"].data  # dnsmasq drops to it
    for tool in ("/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-img"):
        assert elf.is_elf(files[tool].data), tool
    assert files["/var/run"].data == b"/run"
    assert b"libvirt-qemu:" in files["/etc/passwd"].data
    assert b'NAME="oemkit core"' in files["/etc/os-release"].data


def test_ip_is_iproute2_not_busybox(contents: dict[str, dict[str, cpio.Member]]) -> None:
    files = _all(contents)
    assert elf.is_elf(files["/bin/ip"].data) and b"busybox" not in files["/bin/ip"].data[: 1 << 20].lower()
    sbin_ip = files["/sbin/ip"]
    assert not sbin_ip.is_link or sbin_ip.data == b"/bin/ip"  # iproute2's own link, never busybox's applet
    assert files["/sbin/modprobe"].data == b"/bin/busybox"  # other applets are busybox


def test_python_is_sourceless_and_measured(contents: dict[str, dict[str, cpio.Member]]) -> None:
    files = _all(contents)
    assert not [p for p in files if p.endswith(".py")], "no Python sources in the core"
    agent = {p for p in contents["agent"] if p.startswith(AGENT)}
    assert {f"{AGENT}/__init__.pyc", f"{AGENT}/__main__.pyc", f"{AGENT}/firstboot.pyc", f"{AGENT}/hostnet.pyc"} <= agent
    assert f"/usr/lib/{PY}/os.pyc" in files and f"/usr/lib/{PY}/lib-dynload" in files  # getpath()'s landmarks
    assert "/usr/lib/python3/dist-packages/libvirt.pyc" in files
    assert f"/usr/lib/{PY}/urllib/request.pyc" in files  # imported inside a function by images.py
    assert f"/usr/lib/{PY}/textwrap.pyc" in files  # imported inside argparse's functions
    assert f"/usr/lib/{PY}/tkinter/__init__.pyc" not in files  # nothing the agent does not import
    assert not [p for p in files if "readline" in p]  # the interactive prompt's, never used by `python3 -m`


@pytest.fixture(scope="module")
def unpacked(core_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The initrd unpacked into a folder, as the kernel would (device nodes left out)."""
    root = tmp_path_factory.mktemp("initrd")
    manifest = json.loads((core_dir / "manifest.json").read_text())
    initrd = (core_dir / "initrd.img").read_bytes()
    for part in manifest["parts"]:
        data = lzma.decompress(initrd[part["offset"] : part["offset"] + part["stream_bytes"]])
        for e in cpio.read_newc(data):
            dest = root / e.name
            if e.is_dir:
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            if e.is_link:
                dest.symlink_to(e.data.decode())
            elif stat.S_ISREG(e.mode):
                dest.write_bytes(e.data)
                dest.chmod(stat.S_IMODE(e.mode))
    return root


def _in_core(root: Path, *cmd: str) -> subprocess.CompletedProcess:
    """Run a command of the core with only the core's files (chroot; the host's kernel)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    return subprocess.run(["/usr/sbin/chroot", str(root), *cmd], capture_output=True, text=True, env=env, timeout=60)


def test_the_core_runs_its_own_tools(unpacked: Path) -> None:
    helped = _in_core(unpacked, "python3", "-m", "hypervisor_core", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage:"), helped.stderr
    refused = _in_core(unpacked, "python3", "-m", "hypervisor_core", "--bogus")
    assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr, refused.stderr  # not ImportError
    probe = (
        "import json, subprocess\n"
        "out = subprocess.run(['ip', '-j', 'link', 'show'], check=True, capture_output=True).stdout\n"
        "print(json.loads(out)[0]['ifname'])"
    )
    ip = _in_core(unpacked, "python3", "-c", probe)  # the agent's way of running ip: iproute2, with JSON
    assert ip.returncode == 0 and ip.stdout.strip(), ip.stderr
    imports = "import hypervisor_core.firstboot, hypervisor_core.hostnet, libvirt, urllib.request; print('ok')"
    assert _in_core(unpacked, "python3", "-c", imports).stdout == "ok\n"
    for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "dmidecode"):
        done = _in_core(unpacked, tool, "--version")
        assert done.returncode == 0, (tool, done.stderr)


def test_modules_follow_the_recipe_and_the_catalog(contents: dict[str, dict[str, cpio.Member]]) -> None:
    mods = contents["modules"]
    names = {Path(p).name.split(".ko")[0].replace("-", "_") for p in mods if ".ko" in p}
    wanted = {d for m in load_catalog() for d in (n.driver for n in m.nics)} | {"virtio_net", "nvme", "kvm_amd"}
    assert wanted <= names
    alias = next(e for p, e in mods.items() if p.endswith("/modules.alias")).data.decode()
    assert "virtio:d00000001v*" in alias  # virtio_net by modalias, for coldplug
    etc_modules = contents["rest"]["/etc/modules"].data.decode().splitlines()
    assert "bonding" in etc_modules and "kvm" in etc_modules
    # crc32c for ext4 and the conntrack stack: followed from the modules' soft dependencies, loaded before them
    assert "crc32c_generic" in contents["rest"]["/etc/modules.softdep"].data.decode().split()
    options = contents["rest"]["/etc/modprobe.d/oemkit.conf"].data.decode().splitlines()
    assert {"options bonding max_bonds=0", "options scsi_mod scan=sync"} <= set(options)
    assert not {"kvm_amd", "kvm_intel"} & set(etc_modules)
    assert set(HARDWARE_MODULES) - names - {"tpm_crb", "tpm_tis"} == set()  # those two are built in here


def test_footprint_command_matches_the_issue(core_dir: Path) -> None:
    result = runner.invoke(app, ["core", "footprint", str(core_dir), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"compressed_bytes", "uncompressed_bytes", "budget_bytes", "parts"} <= doc.keys()
    built = json.loads((core_dir / "footprint.json").read_text())
    assert doc["parts"] == built["parts"]  # measured again, the same figures
    assert doc["compressed_bytes"] == built["compressed_bytes"] <= doc["budget_bytes"]
    assert [set(p) for p in doc["parts"]] == [{"name", "compressed_bytes", "uncompressed_bytes"}] * len(doc["parts"])


def test_warm_rebuild_is_identical(core_dir: Path, tmp_path: Path) -> None:
    """Its speed is measured in docs/benchmarks.md (scripts/bench_core.py), never asserted here."""
    result = runner.invoke(app, [*build_args(tmp_path / "again"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["core_id"] == json.loads((core_dir / "core.json").read_text())["core_id"]
    for name in ("vmlinuz", "initrd.img", "core.json", "footprint.json", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (core_dir / name).read_bytes(), name


def test_over_budget_fails_and_writes_no_core(core_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*build_args(tmp_path / "small"), "--budget-bytes", "1000"])
    assert result.exit_code == 1
    assert "over the budget of 1,000" in result.stderr and "biggest: libvirt" in result.stderr
    assert "total" in result.stdout  # the footprint is still shown
    assert not (tmp_path / "small").exists()
    kept = Path(result.stderr.rsplit("(footprint: ", 1)[1].rstrip(")\n"))
    assert json.loads(kept.read_text())["budget_bytes"] == 1000


def test_rebuilt_packages_replace_the_staged_ones(core_dir: Path, contents: dict[str, dict[str, cpio.Member]]) -> None:
    """libxml2 without ICU and dnsmasq without D-Bus/conntrack/nftset, from their own Debian source: recorded in
    core.json, and nothing they no longer link is in the core (the boot tests prove libvirt still works)."""
    meta = json.loads((core_dir / "core.json").read_text())
    assert {r["source"] for r in meta["rebuilt"]} == {"libxml2", "dnsmasq"}
    for record in meta["rebuilt"]:
        assert record["rebuilt"] == record["version"] + "+oemkit1" and all(
            len(d["sha256"]) == 64 for d in record["debs"]
        )
    assert {"libxml2", "dnsmasq-base"} <= {p.split("=")[0] for p in meta["packages"] if p.endswith("+oemkit1")}
    shipped = [p for part in contents.values() for p in part]
    assert not [
        p for p in shipped if any(k in p for k in ("libicu", "libdbus", "libnftables", "libsystemd", "libgcrypt"))
    ]
    assert any(p.endswith("/libxml2.so.2") for p in shipped)


def test_xml_round_trips_through_libxml2_without_icu(unpacked: Path) -> None:
    """libvirt's XML in the core goes through the rebuilt libxml2 (no ICU): non-ASCII text in a domain, a network's
    name — what a profile's names and descriptions put there — comes back unchanged (libvirt's embedded test
    driver, inside the core's own files). The real boots prove the same through the guest's libvirtd."""
    probe = r"""
import libvirt, xml.etree.ElementTree as ET
conn = libvirt.open("test:///default")
text = "Filiale München – Kasse 3 · Łódź · 東京 · ✓"
dom = conn.defineXML(f"<domain type='test'><name>pos-ü</name><title>{text}</title><description>{text}</description>"
                     "<memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>")
net = conn.networkDefineXML("<network><name>kasse-ß</name><bridge name='virbr-kasse'/></network>")
back = ET.fromstring(dom.XMLDesc())
assert back.findtext("title") == back.findtext("description") == text, back.findtext("title")
assert dom.name() == "pos-ü" and net.name() == "kasse-ß"
assert ET.fromstring(net.XMLDesc()).find("bridge").get("name") == "virbr-kasse"
print("ok")
"""
    done = _in_core(unpacked, "python3", "-c", probe)
    assert done.stdout == "ok\n", done.stderr
    assert not list(unpacked.rglob("libicu*"))
