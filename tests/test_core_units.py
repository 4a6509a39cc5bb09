"""The core builder's pieces, fast and offline: cpio, ELF, module closure, footprint and budget, cache, CLI errors."""

from __future__ import annotations

import codecs
import hashlib
import json
import lzma
import os
import re
import stat
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.image import buildcache
from oemkit.image.core import cpio, elf, footprint, kmod, pystdlib, rebuild, srcedit
from oemkit.image.core.compression import CompressionError, compressor, plan
from oemkit.image.core.debian import Userland
from oemkit.image.core.recipe import PY_SEEDS
from oemkit.image.core.selection import Initramfs, Inode, SelectError, Selector
from oemkit.image.tools import BuildError

from .conftest import REPO

runner = CliRunner()
PUB = REPO / "tests" / "data" / "keys" / "signing.pub"


# ------------------------------------------------------------------------------------------- cpio
def _nodes(tmp_path: Path) -> dict[str, Inode]:
    exe = tmp_path / "tool"
    exe.write_bytes(b"\x7fELF not really")
    exe.chmod(0o4775)  # set-uid and group write never reach the core
    return {
        "/usr/bin/tool": Inode.file(exe),
        "/etc/motd": Inode.blob(b"hello\n"),
        "/bin/sh": Inode.link("/bin/busybox"),
        "/tmp": Inode.dir(0o1777),
        "/dev/console": Inode.chr(5, 1),
        "/init": Inode.blob(b"#!/bin/sh\n", 0o755),
    }


def test_cpio_round_trip(tmp_path: Path) -> None:
    data = cpio.write_newc(_nodes(tmp_path), mtime=1_700_000_000)
    assert len(data) % 512 == 0
    entries = {e.name: e for e in cpio.read_newc(data)}
    # parents first, each once, sorted by path components
    names = [e.name for e in cpio.read_newc(data)]
    assert names == ["bin", "bin/sh", "dev", "dev/console", "etc", "etc/motd", "init", "tmp", "usr", "usr/bin",
                     "usr/bin/tool"]  # fmt: skip
    assert entries["usr/bin/tool"].data == b"\x7fELF not really"
    assert stat.S_IMODE(entries["usr/bin/tool"].mode) == 0o755
    assert entries["bin/sh"].is_link and entries["bin/sh"].data == b"/bin/busybox"
    assert entries["usr"].is_dir and stat.S_IMODE(entries["usr"].mode) == 0o755
    assert stat.S_IMODE(entries["tmp"].mode) == 0o1777
    assert stat.S_ISCHR(entries["dev/console"].mode) and entries["dev/console"].rdev == (5, 1)
    assert stat.S_IMODE(entries["init"].mode) == 0o755
    assert {(e.uid, e.gid, e.mtime) for e in entries.values()} == {(0, 0, 1_700_000_000)}


def test_cpio_same_bytes_whatever_the_order(tmp_path: Path) -> None:
    nodes = _nodes(tmp_path)
    forward = cpio.write_newc(nodes, mtime=1)
    backward = cpio.write_newc(dict(reversed(list(nodes.items()))), mtime=1)
    assert forward == backward
    assert cpio.write_newc(nodes, mtime=2) != forward  # the mtime is the only clock in it


def test_cpio_reader_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="no newc header"):
        cpio.read_newc(b"not an archive")


# ------------------------------------------------------------------------------------------- ELF
def _elf(needed: tuple[str, ...], interp: str | None) -> bytes:
    """A minimal ELF64 little-endian file laid out as a linker does: headers, PT_INTERP, a PT_LOAD mapping the
    file at 0x400000, PT_DYNAMIC with DT_NEEDED entries pointing into DT_STRTAB (a virtual address)."""
    base, phoff, phnum = 0x400000, 64, 3
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in needed)
    interp_bytes = (interp or "").encode() + b"\0"
    interp_off = phoff + phnum * 56
    strtab_off = interp_off + len(interp_bytes)
    dyn_off = strtab_off + len(strtab) + (-(strtab_off + len(strtab)) % 8)
    offsets = [1 + sum(len(x) + 1 for x in needed[:i]) for i in range(len(needed))]
    dyn = b"".join(struct.pack("<qQ", 1, o) for o in offsets)  # DT_NEEDED
    dyn += struct.pack("<qQ", 5, base + strtab_off) + struct.pack("<qQ", 0, 0)  # DT_STRTAB, DT_NULL
    size = dyn_off + len(dyn)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack(
        "<IIQQQQQQ", 3 if interp else 6, 4, interp_off, base + interp_off, 0, len(interp_bytes), len(interp_bytes), 1
    )  # PT_INTERP (or a harmless PT_PHDR for a static-pie)
    phdrs += struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD
    phdrs += struct.pack("<IIQQQQQQ", 2, 6, dyn_off, base + dyn_off, 0, len(dyn), len(dyn), 8)  # PT_DYNAMIC
    body = header + phdrs + interp_bytes + strtab
    return body + bytes(dyn_off - len(body)) + dyn


def test_elf_needed_and_interpreter() -> None:
    found = elf.deps(_elf(("libvirt.so.0", "libc.so.6"), "/lib64/ld-linux-x86-64.so.2"))
    assert found == elf.ElfDeps(("libvirt.so.0", "libc.so.6"), "/lib64/ld-linux-x86-64.so.2")  # in the file's order


def test_elf_static_and_not_elf() -> None:
    assert elf.deps(_elf((), None)) == elf.ElfDeps()  # static-pie: a dynamic section, no needs, no loader
    assert elf.deps(b"#!/bin/sh\necho hi\n") == elf.ElfDeps()
    assert elf.deps(b"") == elf.ElfDeps()


def test_elf_truncated_is_an_error() -> None:
    with pytest.raises(elf.ElfError):
        elf.deps(_elf(("libc.so.6",), "/lib/ld.so")[:200])


def test_selector_follows_links_and_takes_the_closure() -> None:
    """This machine's own /bin/ls as the staged root: whatever its distribution, its needs and loader come along."""
    wanted = elf.deps(Path("/bin/ls").read_bytes())
    image = Initramfs()
    Selector(Path("/"), image).add_elf_closure(["/bin/ls"], "rest")
    files = [p for p, n in image.nodes.items() if n.kind == "file"]
    assert wanted.interp is not None
    assert os.path.realpath(wanted.interp) in files  # the loader, via PT_INTERP...
    parents = [wanted.interp.rsplit("/", n)[0] for n in range(wanted.interp.count("/"))]
    assert any(p in image for p in parents)  # ...and the way to it as packaged (a link of it, or of a folder above)
    for soname in wanted.needed:
        assert any(p.endswith(f"/{soname}") for p in files), soname
    assert set(image.owner.values()) == {"rest"}
    for path, node in image.nodes.items():  # every link met on the way is shipped as a link
        assert node.kind == ("link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"), path


def test_selector_missing_path(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dangling").symlink_to("nowhere")
    sel = Selector(tmp_path, Initramfs())
    with pytest.raises(SelectError, match="not in the staged Debian root"):
        sel.add_path("/bin/dangling", "rest")
    with pytest.raises(SelectError, match=r"libnothing\.so\.1 \(needed by /bin/x\)"):
        sel.find_lib("libnothing.so.1", "/bin/x")


# ------------------------------------------------------------------------------------------- modules
def module_elf(modinfo: list[str]) -> bytes:
    """A minimal ELF64 relocatable object with a .modinfo section, as a kernel module carries one."""
    info = b"".join(item.encode() + b"\0" for item in modinfo)
    names = b"\0.modinfo\0.shstrtab\0"
    info_at, names_at = 64, 64 + len(info)
    shoff = names_at + len(names)
    shoff += -shoff % 8
    header = (
        b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)
    )
    sections = bytes(64)  # the null section
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, info_at, len(info), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    body = header + info + names
    return body + bytes(shoff - len(body)) + sections


def _module_tree(tmp_path: Path) -> kmod.ModuleTree:
    root = tmp_path / "lib" / "modules" / "6.1.0-test"
    root.mkdir(parents=True)
    deps = {
        "kernel/net/bonding/bonding.ko": "kernel/net/tls/tls.ko",
        "kernel/net/tls/tls.ko": "",
        "kernel/drivers/net/virtio-net.ko": "kernel/net/core/net_failover.ko kernel/net/core/failover.ko",
        "kernel/net/core/net_failover.ko": "kernel/net/core/failover.ko",
        "kernel/net/core/failover.ko": "",
        "kernel/fs/isofs/isofs.ko": "",
        "kernel/fs/jbd2/jbd2.ko": "",
        "kernel/crypto/crc32c_generic.ko": "",
        "kernel/arch/x86/crypto/crc32c-intel.ko": "",
        "kernel/drivers/net/ethernet/intel/ice/ice.ko": "",
    }
    (root / "modules.dep").write_text("".join(f"{m}: {d}".rstrip() + "\n" for m, d in deps.items()))
    modinfo = {
        "kernel/fs/jbd2/jbd2.ko": ["license=GPL", "softdep=pre: crypto-crc32c post: nosuch"],
        "kernel/drivers/net/ethernet/intel/ice/ice.ko": ["firmware=intel/ice/ddp/ice.pkg"],
    }
    for module in deps:
        (root / module).parent.mkdir(parents=True, exist_ok=True)
        (root / module).write_bytes(module_elf(modinfo.get(module, ["license=GPL"])))
    (root / "modules.alias").write_text(
        "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias pci:v00008086d*sv* ice\n"
    )
    (root / "modules.builtin").write_text("kernel/drivers/char/tpm/tpm_tis.ko\nkernel/fs/ext4/ext4.ko\n")
    return kmod.ModuleTree.load(root)


def test_module_closure(tmp_path: Path) -> None:
    found = kmod.resolve(_module_tree(tmp_path), ["bonding", "virtio_net", "tpm-tis", "ext4"])
    assert found.files == (
        "kernel/drivers/net/virtio-net.ko",
        "kernel/net/bonding/bonding.ko",
        "kernel/net/core/failover.ko",
        "kernel/net/core/net_failover.ko",
        "kernel/net/tls/tls.ko",
    )
    assert found.loadable == {"bonding", "virtio_net"}
    assert found.builtin == {"tpm_tis", "ext4"}
    assert found.pre_softdeps == found.unresolved_softdeps == found.firmware == ()


def test_soft_dependencies_and_firmware_follow_the_closure(tmp_path: Path) -> None:
    """jbd2 wants crc32c first (an alias two modules provide; busybox's modprobe would not load either), ice names
    its DDP firmware, and a soft dependency nothing provides is reported, not fatal."""
    found = kmod.resolve(_module_tree(tmp_path), ["jbd2", "ice"])
    assert "kernel/crypto/crc32c_generic.ko" in found.files and "kernel/arch/x86/crypto/crc32c-intel.ko" in found.files
    assert found.pre_softdeps == ("crc32c_intel", "crc32c_generic")
    assert found.unresolved_softdeps == ("nosuch",)
    assert found.firmware == ("intel/ice/ddp/ice.pkg",)
    assert kmod.softdeps("pre: a b post: c") == {"pre": ["a", "b"], "post": ["c"]}


def test_missing_modules_are_named(tmp_path: Path) -> None:
    with pytest.raises(kmod.ModuleError, match=r"6\.1\.0-test: nosuch_nic, vfio") as err:
        kmod.resolve(_module_tree(tmp_path), ["isofs", "vfio", "nosuch_nic"])
    assert "isofs" not in str(err.value)


def test_module_tree_without_index(tmp_path: Path) -> None:
    with pytest.raises(kmod.ModuleError, match="cannot read the kernel's module index"):
        kmod.ModuleTree.load(tmp_path)


# ------------------------------------------------------------------------------------------- Python
def test_source_imports_include_function_level_ones(tmp_path: Path) -> None:
    pkg = tmp_path / "hypervisor_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from __future__ import annotations\nimport json\n")
    (pkg / "sub" / "x.py").write_text(
        "from hypervisor_core import y\nfrom xml.etree import ElementTree as ET\n"
        "def f():\n    import urllib.request\n    from . import z\n"
    )
    assert pystdlib.source_imports(pkg) == [("json", []), ("urllib.request", []), ("xml.etree", ["ElementTree"])]


# ------------------------------------------------------------------------------------------- footprint
PARTS = [
    {"name": "kernel", "compressed_bytes": 8_000_000, "uncompressed_bytes": 60_000_000},
    {"name": "rest", "compressed_bytes": 2_000_000, "uncompressed_bytes": 6_000_000},
    {"name": "modules", "compressed_bytes": 4_000_000, "uncompressed_bytes": 25_000_000},
    {"name": "libvirt", "compressed_bytes": 18_000_000, "uncompressed_bytes": 69_000_000},
    {"name": "qemu", "compressed_bytes": 5_000_000, "uncompressed_bytes": 31_000_000},
    {"name": "python", "compressed_bytes": 3_000_000, "uncompressed_bytes": 12_000_000},
    {"name": "agent", "compressed_bytes": 50_000, "uncompressed_bytes": 160_000},
]


def test_footprint_document_shape() -> None:
    doc = footprint.document("ab" * 10, PARTS, 40_100_000, "xz", "xz payload decompressed")
    assert {"compressed_bytes", "uncompressed_bytes", "budget_bytes", "parts"} <= doc.keys()
    assert doc["compressed_bytes"] == 40_050_000
    assert doc["uncompressed_bytes"] == sum(p["uncompressed_bytes"] for p in PARTS)
    assert doc["gap_to_32mib_bytes"] == 40_050_000 - 33_554_432
    assert [p["name"] for p in doc["parts"]] == ["kernel", "rest", "modules", "libvirt", "qemu", "python", "agent"]
    assert all(set(p) == {"name", "compressed_bytes", "uncompressed_bytes"} for p in doc["parts"])


def test_budget_pass_and_fail() -> None:
    assert footprint.over_budget(footprint.document("x", PARTS, 40_050_000, "xz", "")) is None
    message = footprint.over_budget(footprint.document("x", PARTS, 30_000_000, "xz", ""))
    assert message is not None
    assert "40,050,000" in message and "30,000,000" in message and "10,050,000" in message
    assert "libvirt 18,000,000, kernel 8,000,000, qemu 5,000,000" in message
    assert "modules" not in message


def _bzimage(vmlinux: bytes) -> bytes:
    """A minimal x86 boot image: setup header with HdrS, one setup sector, an xz payload with its size trailer."""
    payload = lzma.compress(vmlinux, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + struct.pack("<I", len(vmlinux))
    setup = bytearray(1024)
    setup[0x1F1] = 1
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, 16, len(payload))
    return bytes(setup) + b"\0" * 16 + payload + b"\0" * 100


def test_kernel_payload_is_measured() -> None:
    assert footprint.kernel_uncompressed(_bzimage(b"k" * 100_000)) == (100_000, "xz payload decompressed")
    with pytest.raises(footprint.UnreadableInput, match="not an x86 bzImage"):
        footprint.kernel_uncompressed(b"\0" * 4096)


def _fake_core(folder: Path) -> dict:
    """A core folder as `core build` writes it, from synthetic parts (no root, no network)."""
    folder.mkdir()
    vmlinuz = _bzimage(b"kernel" * 1000)
    raws = {"rest": cpio.write_newc({"/init": Inode.blob(b"#!/bin/sh\n", 0o755)}, 1),
            "agent": cpio.write_newc({"/usr/share/oemkit/factory.pub": Inode.blob(PUB.read_bytes())}, 1)}  # fmt: skip
    initrd, parts, offset = b"", [], 0
    for name, raw in raws.items():
        stream = lzma.compress(raw, check=lzma.CHECK_CRC32)
        data = stream + b"\0" * (-len(stream) % 4)
        parts.append({"name": name, "offset": offset, "compressed_bytes": len(data), "stream_bytes": len(stream),
                      "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
        initrd += data
        offset += len(data)
    cid = footprint.core_id(vmlinuz, initrd)
    (folder / "vmlinuz").write_bytes(vmlinuz)
    (folder / "initrd.img").write_bytes(initrd)
    (folder / "manifest.json").write_text(json.dumps({"core_id": cid, "parts": parts}))
    (folder / "footprint.json").write_text("{}")
    (folder / "core.json").write_text(json.dumps({"core_id": cid, "compression": "xz",
                                                  "footprint": {"budget_bytes": 123_456}}))  # fmt: skip
    return {"core_id": cid, "raws": raws, "vmlinuz": vmlinuz}


def test_footprint_recomputed_from_the_files(tmp_path: Path) -> None:
    core = _fake_core(tmp_path / "core")
    result = runner.invoke(app, ["core", "footprint", str(tmp_path / "core"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["core_id"] == core["core_id"] and doc["budget_bytes"] == 123_456
    assert [p["name"] for p in doc["parts"]] == ["kernel", "rest", "agent"]
    assert doc["parts"][0] == {"name": "kernel", "compressed_bytes": len(core["vmlinuz"]), "uncompressed_bytes": 6000}
    assert [p["uncompressed_bytes"] for p in doc["parts"][1:]] == [len(r) for r in core["raws"].values()]
    assert doc["compressed_bytes"] == sum(p["compressed_bytes"] for p in doc["parts"])
    table = runner.invoke(app, ["core", "footprint", str(tmp_path / "core")])
    assert table.exit_code == 0 and "agent" in table.stdout and "32 MiB" in table.stdout


def test_footprint_refuses_a_changed_core(tmp_path: Path) -> None:
    _fake_core(tmp_path / "core")
    initrd = tmp_path / "core" / "initrd.img"
    data = bytearray(initrd.read_bytes())
    data[-1] ^= 1
    initrd.write_bytes(bytes(data))
    result = runner.invoke(app, ["core", "footprint", str(tmp_path / "core")])
    assert result.exit_code == 2
    assert "does not match the files" in result.stderr and "Traceback" not in result.output


def test_footprint_of_a_folder_that_is_not_a_core(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    for target in (tmp_path, tmp_path / "missing"):
        result = runner.invoke(app, ["core", "footprint", str(target)])
        assert result.exit_code == 2
        assert "not a core folder" in result.stderr
        assert isinstance(result.exception, SystemExit)  # a clean exit, never a traceback


# ------------------------------------------------------------------------------------------- build guards
def test_build_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = runner.invoke(app, ["core", "build", "-o", str(tmp_path / "core"), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "oemkit: error: building a core needs root (mmdebstrap --mode=root, chroot): run it with sudo"
    ]
    assert not (tmp_path / "core").exists() and not (tmp_path / "c").exists()


def test_build_names_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    gone = {"mmdebstrap", "zstd"}  # a host without them: the one failure a real machine here cannot show
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None if name in gone else real_which(name, path=path))
    result = runner.invoke(app, ["core", "build", "-o", str(tmp_path / "core"), "--compress", "zstd"])
    assert result.exit_code == 2
    assert result.stderr.startswith("oemkit: error: missing build tools: mmdebstrap, zstd (bash scripts/setup.sh")
    assert len(result.stderr.strip().splitlines()) == 1


def test_coredir_is_replaced_only_when_it_is_a_core(tmp_path: Path) -> None:
    from oemkit.image.core.build import _write_coredir
    from oemkit.image.tools import BuildError

    out = tmp_path / "core"
    _write_coredir(out, {"core.json": b"{}", "vmlinuz": b"1"})
    _write_coredir(out, {"core.json": b"{}", "initrd.img": b"2"})  # an earlier core is replaced whole
    assert sorted(p.name for p in out.iterdir()) == ["core.json", "initrd.img"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core"]  # no .tmp or .old left beside it
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(BuildError, match="not a core folder"):
        _write_coredir(tmp_path / "mine", {"core.json": b"{}"})
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_build_refuses_a_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "signing.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
    result = runner.invoke(app, ["core", "build", "-o", str(tmp_path / "core"), "--pubkey", str(bad)])
    assert result.exit_code == 2
    assert "not the factory's public key" in result.stderr and str(bad) in result.stderr
    missing = runner.invoke(app, ["core", "build", "-o", str(tmp_path / "core"), "--pubkey", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "cannot read public key" in missing.stderr


def test_build_refuses_unknown_choices(tmp_path: Path) -> None:
    for args, says in (
        (["--compress", "lz4"], "the first method must be one of xz, gzip, zstd"),
        (["--compress", "xz,modules=lz4"], "'modules=lz4' is not PART=METHOD"),
        (["--compress", "xz,kernel=zstd"], "'kernel=zstd' is not PART=METHOD"),  # the kernel is Debian's file
        (["--flavour", "rt-amd64"], "choose"),
    ):
        result = runner.invoke(app, ["core", "build", "-o", str(tmp_path / "core"), *args])
        assert result.exit_code == 2 and says in result.stderr, result.stderr


def test_compression_per_part() -> None:
    assert set(plan("xz").values()) == {"xz"}
    mixed = plan("xz, modules=zstd,python=zstd")
    assert (mixed["modules"], mixed["python"], mixed["libvirt"], mixed["seed"]) == ("zstd", "zstd", "xz", "xz")
    with pytest.raises(CompressionError):
        plan("")


def test_xz_filters_per_part() -> None:
    assert "--x86" in compressor("xz", "libvirt")
    assert "--x86" not in compressor("xz", "modules")  # BCJ enlarges relocatable kernel modules
    assert all("-T1" in compressor("xz", p) for p in ("rest", "modules"))


# ------------------------------------------------------------------------------------------- cache
def test_cache_stage_appears_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "stage" / "key"
    with pytest.raises(RuntimeError), buildcache.building(final) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert not final.exists() and list((tmp_path / "stage").iterdir()) == []
    with buildcache.building(final) as tmp:
        (tmp / "whole").write_text("x")
    assert [p.name for p in final.iterdir()] == ["whole"]


def test_cache_sweep_removes_dead_builds_only(tmp_path: Path) -> None:
    dead = tmp_path / "stage" / f"{buildcache.TMP_PREFIX}999999999-key"
    mine = tmp_path / "stage" / f"{buildcache.TMP_PREFIX}{os.getpid()}-other"
    for p in (dead, mine):
        p.mkdir(parents=True)
    buildcache.sweep(tmp_path)
    assert not dead.exists() and mine.exists()


def test_cli_help_does_not_import_the_builder() -> None:
    import subprocess
    import sys

    code = "import sys\nimport oemkit.cli.app\nprint(sorted(m for m in sys.modules if m.startswith('oemkit.image')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------- source rebuilds
def _source_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "libxml2"
    (tree / "debian").mkdir(parents=True)
    (tree / "debian" / "rules").write_text("doconfigure-main: CONFIGURE_FLAGS += --without-python --with-icu\n")
    (tree / "debian" / "changelog").write_text(
        "libxml2 (2.9.14+dfsg-1.3~deb12u6) bookworm-security; urgency=medium\n\n  * Fix.\n\n"
        " -- Someone <someone@debian.org>  Tue, 01 Jul 2025 10:00:00 +0200\n"
    )
    return tree


def test_source_edit_and_changelog(tmp_path: Path) -> None:
    tree = _source_tree(tmp_path)
    srcedit.apply(tree, [["debian/rules", "--with-icu", "--without-icu", 1]], "built --without-icu")
    assert "--without-icu" in (tree / "debian" / "rules").read_text()
    log = (tree / "debian" / "changelog").read_text()
    # the local version on top, dated as the entry before it: dpkg-buildpackage's SOURCE_DATE_EPOCH stays the source's
    assert log.startswith("libxml2 (2.9.14+dfsg-1.3~deb12u6+oemkit1) bookworm-security; urgency=medium\n")
    assert log.count("Tue, 01 Jul 2025 10:00:00 +0200") == 2


def test_source_edit_that_no_longer_matches_is_refused(tmp_path: Path) -> None:
    """A new Debian revision that moved the line fails the build instead of quietly shipping ICU again."""
    tree = _source_tree(tmp_path)
    before = (tree / "debian" / "rules").read_text()
    with pytest.raises(srcedit.EditError, match="found 0 times, the recipe expects 1"):
        srcedit.apply(tree, [["debian/rules", "--with-icu=yes", "--without-icu", 1]], "x")
    assert (tree / "debian" / "rules").read_text() == before
    assert srcedit.main([str(tmp_path / "nowhere"), str(tmp_path / "none.json")]) == 1


def test_a_recipe_without_rebuilds_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rebuild, "REBUILDS", ())
    staged = Userland(tmp_path, ("libxml2=2.9.14+dfsg-1.3~deb12u6", "zlib1g=1:1.2.13"))
    overlay = rebuild.rebuild(tmp_path / "cache", "bookworm", "deb x bookworm main\n", staged, print)
    assert overlay == rebuild.Overlay(None, {}, ()) and not (tmp_path / "cache").exists()
    assert overlay.apply(staged.packages) == staged.packages


def test_rebuilt_versions_replace_the_staged_ones() -> None:
    overlay = rebuild.Overlay(None, {"libxml2": "2.9.14+dfsg-1.3~deb12u6+oemkit1"}, ())
    assert overlay.apply(("zlib1g=1:1.2.13", "libxml2=2.9.14+dfsg-1.3~deb12u6")) == (
        "libxml2=2.9.14+dfsg-1.3~deb12u6+oemkit1",
        "zlib1g=1:1.2.13",
    )


def test_an_overlay_folder_where_the_stage_has_a_link_is_refused(tmp_path: Path) -> None:
    stage, overlay = tmp_path / "stage", tmp_path / "overlay"
    (stage / "usr/lib").mkdir(parents=True)
    (stage / "lib").symlink_to("usr/lib")
    (overlay / "usr/lib").mkdir(parents=True)
    rebuild.check_overlay(overlay, stage)  # /usr/lib is a folder in both: fine
    (overlay / "lib").mkdir()
    with pytest.raises(BuildError, match="a folder /lib where the stage has a link"):
        rebuild.check_overlay(overlay, stage)


def test_malformed_section_tables_are_refused() -> None:
    data = bytearray(module_elf(["license=GPL"]))
    struct.pack_into("<H", data, 0x3E, 7)  # e_shstrndx past the three sections
    with pytest.raises(elf.ElfError, match="section header table"):
        elf.section(bytes(data), ".modinfo")
    assert elf.section(module_elf(["a=b"]), ".nosuch") is None
    assert kmod.modinfo(module_elf(["softdep=pre: x", "firmware=f.bin"])) == [
        ("softdep", "pre: x"),
        ("firmware", "f.bin"),
    ]


def test_every_codec_the_agent_names_is_in_the_core() -> None:
    """A codec is looked up by name when it is used (`.decode("utf-16-le")`), so the import scan that picks the
    core's Python cannot see it: each one named in hypervisor_core must be seeded, or the agent fails on the box
    with "unknown encoding" (a boot found exactly that)."""
    named = set()
    for source in (REPO / "hypervisor_core").rglob("*.py"):
        named |= set(re.findall(r'\.(?:de|en)code\(\s*"([^"]+)"', source.read_text()))
    assert "utf-16-le" in named
    for name in named:
        module = "encodings." + codecs.lookup(name).name.replace("-", "_")
        assert module in PY_SEEDS, f"{name} ({module}) is not seeded into the core's Python"
