#!/usr/bin/env python3
"""Prototype: build a bootable KVM-host core (kernel + initramfs) from Debian 12 packages only.

Run as root on Debian 12 (needs apt-get, dpkg-deb, mmdebstrap, xz/gzip/zstd, chroot).

    python3 build.py --cache CACHE --out OUTDIR [--compress xz|xz-bcj|zstd|gzip] [--flavour cloud-amd64|amd64]
                     [--agent /path/to/hypervisor_core] [--pubkey FILE]

Stages (each cached under CACHE, keyed by its inputs):
  1. kernel : apt-get download linux-image-<abi>-<flavour>, dpkg-deb -x          -> CACHE/kernel/<deb>/
  2. userland: mmdebstrap --variant=extract --include=<PACKAGES> (debs kept)    -> CACHE/stage/<key>/
  3. select : ELF DT_NEEDED closure from a few roots + data files, Python module
              closure measured by importing in the staged Python (chroot), .pyc only
  4. parts  : one reproducible newc cpio per part (sorted, mtime=SOURCE_DATE_EPOCH, uid/gid 0),
              each compressed separately (cached by content hash) and concatenated: the kernel
              unpacks a concatenation of compressed cpio archives.
  5. output : OUTDIR/{vmlinuz,initrd.img,manifest.json,footprint.json}; core id = sha256(vmlinuz+initrd)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
MIRRORS = (HERE / "mirrors.list").read_text()

# Debian packages the userland is taken from (dependencies are resolved by apt through mmdebstrap).
PACKAGES = [
    "busybox-static",
    "dmidecode",
    "python3.11-minimal",
    "libpython3.11-stdlib",
    "python3-libvirt",
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "qemu-system-x86",
]

# Kernel modules wanted (dependencies come from modules.dep).
MODULES = [
    "virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_rng", "virtio_console",
    "sd_mod", "sr_mod", "isofs",
    "kvm", "kvm_amd", "kvm_intel",
    "bridge", "bonding", "8021q", "tun", "vhost_net", "macvtap", "veth",
]

PY = "python3.11"
# Stdlib modules the agent (hypervisor_core) imports, plus what the init self-test uses.
PY_MODULES = [
    "json", "argparse", "dataclasses", "hashlib", "base64", "ipaddress", "uuid", "xml.etree.ElementTree",
    "typing", "pathlib", "socket", "secrets", "struct", "signal", "functools", "re", "time", "types",
    "collections.abc", "os", "sys", "traceback", "encodings.utf_8", "encodings.ascii",
    "encodings.latin_1", "encodings.aliases", "libvirt",
]

ROOT_GROUPS = {
    # part name -> (ELF roots, extra data paths/globs)   (paths inside the staged root)
    "rest": (["/bin/busybox", "/usr/sbin/dmidecode"], []),
    "libvirt": (
        [
            "/usr/sbin/libvirtd",
            "/usr/sbin/virtlogd",
            "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
            "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_network.so",
            "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_storage.so",
            "/usr/lib/x86_64-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_fs.so",
            "/usr/lib/x86_64-linux-gnu/libvirt/storage-file/libvirt_storage_file_fs.so",
        ],
        ["/usr/share/libvirt/cpu_map", "/usr/share/libvirt/schemas"],
    ),
    "qemu": (
        ["/usr/bin/qemu-system-x86_64", "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so"],
        [
            "/usr/share/seabios/bios-256k.bin",
            "/usr/share/seabios/vgabios-stdvga.bin",
            "/usr/lib/ipxe/qemu/efi-virtio.rom",
            "/usr/share/qemu/linuxboot_dma.bin",
            "/usr/share/qemu/kvmvapic.bin",
            "/usr/share/qemu/multiboot_dma.bin",
        ],
    ),
    "python": ([f"/usr/bin/{PY}"], []),  # stdlib + extension modules added by the import probe
}
PART_ORDER = ["rest", "modules", "libvirt", "qemu", "python", "agent"]
LIBDIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib", "/lib64"]

COMPRESSORS = {
    "xz": ["xz", "--check=crc32", "--lzma2=preset=9e,dict=64MiB", "-T1", "-c"],
    "xz-bcj": ["xz", "--format=xz", "--check=crc32", "--x86", "--lzma2=preset=9e,dict=64MiB", "-T1", "-c"],
    "zstd": ["zstd", "-19", "-T1", "-q", "-c"],
    "gzip": ["gzip", "-9", "-n", "-c"],
}

T0 = time.monotonic()
os.environ["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMES: dict[str, float] = {}


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.2f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if "__pycache__" in p.parts or not p.is_file():
            continue
        h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- stage 1: kernel
def fetch_kernel(cache: Path, flavour: str) -> tuple[Path, str, str]:
    meta = f"linux-image-{flavour}"
    out = run(["apt-cache", "depends", meta], capture_output=True, text=True).stdout
    pkg = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.strip().startswith("Depends: linux-image-"))
    ver = run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    cand = next(l.split(":", 1)[1].strip() for l in ver.splitlines() if "Candidate:" in l)
    key = f"{pkg}_{cand}"
    root = cache / "kernel" / key
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
        debdir = cache / "debs"
        debdir.mkdir(parents=True, exist_ok=True)
        debs = list(debdir.glob(f"{pkg}_*.deb"))
        if not debs:
            log(f"apt-get download {pkg}={cand}")
            run(["apt-get", "download", "-q", f"{pkg}={cand}"], cwd=debdir, stderr=subprocess.DEVNULL)
            debs = list(debdir.glob(f"{pkg}_*.deb"))
        root.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(debs[0]), str(root)])
        (root / ".done").write_text(debs[0].name)
    abi = pkg[len("linux-image-"):]
    return root, abi, f"{pkg}={cand}"


# ---------------------------------------------------------------- stage 2: userland via mmdebstrap
def fetch_userland(cache: Path) -> tuple[Path, list[str]]:
    key = sha256_bytes(json.dumps([SUITE, MIRRORS, sorted(PACKAGES)]).encode())[:16]
    root = cache / "stage" / key
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log(f"mmdebstrap --variant=extract ({len(PACKAGES)} packages) -> {root}")
        run(
            [
                "mmdebstrap", "--quiet", "--mode=root", "--variant=extract",
                "--aptopt=APT::Install-Recommends \"false\"",
                "--skip=essential/unlink,cleanup/apt/cache",
                "--include=" + ",".join(PACKAGES),
                SUITE, str(root), "-",
            ],
            input=MIRRORS.encode(),
        )
        manifest = []
        for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
            f = run(["dpkg-deb", "-f", str(deb), "Package", "Version"], capture_output=True, text=True).stdout
            d = dict(l.split(": ", 1) for l in f.strip().splitlines())
            manifest.append(f"{d['Package']}={d['Version']}")
        (root / ".manifest").write_text("\n".join(manifest) + "\n")
        (root / ".done").write_text("ok\n")
    return root, (root / ".manifest").read_text().split()


# ---------------------------------------------------------------- ELF helpers
def elf_needed(data: bytes) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF file (empty list if static / not ELF)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return []
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dyn = [], None
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _pa, p_filesz, _memsz, _al = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dyn = (p_offset, p_filesz)
    if dyn is None:
        return []

    def v2o(v):
        for va, off, sz in loads:
            if va <= v < va + sz:
                return v - va + off
        raise ValueError("vaddr not mapped")

    needed, strtab = [], None
    off, end = dyn[0], dyn[0] + dyn[1]
    while off < end:
        tag, val = struct.unpack_from("<qQ", data, off)
        off += 16
        if tag == 0:
            break
        if tag == 1:
            needed.append(val)
        elif tag == 5:
            strtab = v2o(val)
    out = []
    for n in needed:
        s = strtab + n
        out.append(data[s:data.index(b"\0", s)].decode())
    return out


class Selector:
    """Collects paths (inside the staged root) for the initramfs, following symlinks."""

    def __init__(self, root: Path):
        self.root = root
        self.entries: dict[str, tuple] = {}  # dest -> ("file", src) | ("link", target) | ("dir",)
        self.owner: dict[str, str] = {}  # dest -> part

    def _add(self, dest: str, entry: tuple, part: str) -> None:
        if dest not in self.entries:
            self.entries[dest] = entry
            self.owner[dest] = part

    def add_path(self, path: str, part: str) -> str:
        """Add `path` (absolute, inside root) and every symlink met on the way; returns the real path."""
        parts = [p for p in path.split("/") if p]
        cur = ""
        hops = 0
        while parts:
            comp = parts.pop(0)
            nxt = f"{cur}/{comp}"
            host = self.root / nxt.lstrip("/")
            if host.is_symlink():
                target = os.readlink(host)
                self._add(nxt, ("link", target), part)
                hops += 1
                if hops > 40:
                    raise RuntimeError(f"symlink loop at {path}")
                base = "" if target.startswith("/") else cur
                parts = [p for p in f"{base}/{target}".split("/") if p] + parts
                cur = ""
                # normalise '..'
                norm: list[str] = []
                for p in parts:
                    if p == "..":
                        if norm:
                            norm.pop()
                    elif p != ".":
                        norm.append(p)
                parts = norm
                continue
            cur = nxt
        host = self.root / cur.lstrip("/")
        if host.is_dir():
            self._add(cur, ("dir",), part)
        elif host.is_file():
            self._add(cur, ("file", host), part)
        else:
            raise FileNotFoundError(f"{path} not in staged root")
        return cur

    def add_tree(self, path: str, part: str) -> None:
        real = self.add_path(path, part)
        for p in sorted((self.root / real.lstrip("/")).rglob("*")):
            self.add_path("/" + str(p.relative_to(self.root)), part)

    def find_lib(self, name: str) -> str:
        for d in LIBDIRS:
            if (self.root / d.lstrip("/") / name).exists():
                return f"{d}/{name}"
        raise FileNotFoundError(f"shared library {name} not found in staged root")

    def add_elf_closure(self, roots: list[str], part: str) -> None:
        todo = list(roots)
        seen = set()
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            real = self.add_path(p, part)
            data = (self.root / real.lstrip("/")).read_bytes()
            if data[:4] == b"\x7fELF":
                # interpreter (PT_INTERP) for executables
                if b"/lib64/ld-linux-x86-64.so.2\0" in data[:4096]:
                    todo.append("/lib64/ld-linux-x86-64.so.2")
                todo.extend(self.find_lib(n) for n in elf_needed(data))


# ---------------------------------------------------------------- stage 3: selection
PROBE = r"""
import sys, json, importlib, pkgutil
mods = json.loads(sys.argv[1])
agent = sys.argv[2] if len(sys.argv) > 2 else ""
for m in mods:
    importlib.import_module(m)
if agent:
    sys.path.insert(0, agent)
    import hypervisor_core
    for info in pkgutil.walk_packages(hypervisor_core.__path__, "hypervisor_core."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
files = {}
for name, mod in sorted(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    if f and not f.startswith(agent or "\0"):
        files[name] = f
print(json.dumps({"files": files, "prefix": sys.prefix, "path": sys.path}))
"""

COMPILE = r"""
import sys, json, py_compile
jobs = json.loads(open(sys.argv[1]).read())
for src, dst, dname in jobs:
    py_compile.compile(src, cfile=dst, dfile=dname, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def chroot_python(root: Path, args: list[str], binds: dict[str, Path] | None = None) -> str:
    """Run the staged Python inside a chroot of the staged root; `binds` copies host dirs in temporarily."""
    tmp = root / "tmp" / f"probe-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for name, src in (binds or {}).items():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
        args = [a.replace("@TMP@", f"/tmp/{tmp.name}") for a in args]
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        return run(["/usr/sbin/chroot", str(root), f"/usr/bin/{PY}", "-B", *args], capture_output=True, text=True,
                   env=env).stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def select(stage: Path, kroot: Path, abi: str, work: Path, agent: Path | None, pubkey: Path | None):
    sel = Selector(stage)
    extra_files: dict[str, tuple] = {}  # dest -> ("file", hostpath) / ("data", bytes) / ("link", t) / ("dir",) / ("chr", maj, min)
    owner_extra: dict[str, str] = {}

    for part in ["rest", "libvirt", "qemu", "python"]:
        roots, data = ROOT_GROUPS[part]
        sel.add_elf_closure(roots, part)
        for d in data:
            if (stage / d.lstrip("/")).is_dir():
                sel.add_tree(d, part)
            else:
                sel.add_path(d, part)

    # ---- Python: module closure measured by importing in the staged interpreter
    probe_args = ["-c", PROBE, json.dumps(PY_MODULES)]
    binds = {}
    if agent:
        binds["agent/hypervisor_core"] = agent
        probe_args.append("@TMP@/agent")
    res = json.loads(chroot_python(stage, probe_args, binds))
    pyjobs = []
    pydir = work / "pyc"
    shutil.rmtree(pydir, ignore_errors=True)
    pydir.mkdir(parents=True)
    for name, f in sorted(res["files"].items()):
        if f.endswith(".py"):
            dest = f[:-3] + ".pyc"  # sourceless .pyc where the .py was
            out = pydir / dest.lstrip("/")
            out.parent.mkdir(parents=True, exist_ok=True)
            pyjobs.append((f, f"/pyc{dest}", f))
            extra_files[dest] = ("file", out)
            owner_extra[dest] = "python"
            # parent dirs
        elif f.endswith(".so"):
            sel.add_elf_closure([f], "python")
        else:
            raise RuntimeError(f"unexpected module file {f}")
    # landmarks Python's getpath() needs: lib/python3.11/os.py(c) (added above) and lib-dynload/
    sel.add_path(f"/usr/lib/{PY}/lib-dynload", "python")
    sel.add_path(f"/usr/bin/python3", "python") if (stage / "usr/bin/python3").exists() else None

    # agent modules
    if agent:
        for src in sorted(agent.rglob("*.py")):
            rel = src.relative_to(agent.parent)
            dest = f"/usr/lib/python3/dist-packages/{str(rel)[:-3]}.pyc"
            out = pydir / dest.lstrip("/")
            out.parent.mkdir(parents=True, exist_ok=True)
            pyjobs.append((f"@AGENT@/{rel}", f"/pyc{dest}", f"/usr/lib/python3/dist-packages/{rel}"))
            extra_files[dest] = ("file", out)
            owner_extra[dest] = "agent"
    # compile all .pyc with the staged interpreter (bind pydir in and out via the staged tmp)
    tmp = stage / "tmp" / f"pyc-{os.getpid()}"
    try:
        (tmp / "pyc").mkdir(parents=True)
        if agent:
            shutil.copytree(agent, tmp / "agent" / "hypervisor_core", ignore=shutil.ignore_patterns("__pycache__"))
        jobs = [(s.replace("@AGENT@", f"/tmp/{tmp.name}/agent"), d.replace("/pyc", f"/tmp/{tmp.name}/pyc", 1), n)
                for s, d, n in pyjobs]
        (tmp / "jobs.json").write_text(json.dumps(jobs))
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "0"}
        run(["/usr/sbin/chroot", str(stage), f"/usr/bin/{PY}", "-B", "-c", COMPILE, f"/tmp/{tmp.name}/jobs.json"], env=env)
        shutil.copytree(tmp / "pyc", pydir, dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if pubkey:
        extra_files["/etc/oemkit/factory.pub"] = ("data", pubkey.read_bytes())
        owner_extra["/etc/oemkit/factory.pub"] = "agent"

    # ---- busybox applets as symlinks (never shadowing a real binary we ship)
    applets = run([str(stage / "bin/busybox"), "--list-full"], capture_output=True, text=True).stdout.split()
    for a in sorted(applets):
        dest = "/" + a
        if dest in sel.entries or dest in extra_files:
            continue
        if dest == "/bin/busybox":
            continue
        extra_files[dest] = ("link", "/bin/busybox")
        owner_extra[dest] = "rest"

    # ---- kernel modules
    kmods = kroot / "lib/modules" / abi
    deps: dict[str, list[str]] = {}
    bymod: dict[str, str] = {}
    # parse modules.dep from a full depmod done by busybox on the unpacked kernel tree
    if not (kmods / "modules.dep").exists():
        run([str(stage / "bin/busybox"), "depmod", "-b", str(kroot), abi])
    for line in (kmods / "modules.dep").read_text().splitlines():
        m, _, rest = line.partition(":")
        deps[m] = rest.split()
        bymod[Path(m).name[:-3].replace("-", "_")] = m
    builtin = {Path(l).name[:-3].replace("-", "_") for l in (kmods / "modules.builtin").read_text().split()}
    wanted, missing = set(), []
    for name in MODULES:
        n = name.replace("-", "_")
        if n in bymod:
            todo = [bymod[n]]
            while todo:
                m = todo.pop()
                if m not in wanted:
                    wanted.add(m)
                    todo.extend(deps.get(m, []))
        elif n not in builtin:
            missing.append(name)
    if missing:
        raise RuntimeError(f"modules not found in kernel {abi}: {missing}")
    moddir = work / "modules"
    shutil.rmtree(moddir, ignore_errors=True)
    for m in sorted(wanted):
        (moddir / "lib/modules" / abi / m).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kmods / m, moddir / "lib/modules" / abi / m)
    for f in ["modules.builtin", "modules.order", "modules.builtin.modinfo"]:
        shutil.copy2(kmods / f, moddir / "lib/modules" / abi / f)
    run([str(stage / "bin/busybox"), "depmod", "-b", str(moddir), abi])
    for p in sorted((moddir / "lib/modules").rglob("*")):
        dest = "/" + str(p.relative_to(moddir))
        if p.is_file():
            extra_files[dest] = ("file", p)
            owner_extra[dest] = "modules"
    modopts = {"bonding": " max_bonds=0"}  # no stray bond0 before the agent configures bonds
    modules_loaded = [m + modopts.get(m, "") for m in MODULES
                      if m.replace("-", "_") in bymod and m not in ("kvm_amd", "kvm_intel")]

    # ---- our own files (init, config)
    files = HERE / "files"
    extra_files["/init"] = ("file", files / "init")
    extra_files["/selftest.py"] = ("file", files / "selftest.py")
    extra_files["/etc/modules"] = ("data", ("\n".join(modules_loaded) + "\n").encode())
    extra_files["/etc/passwd"] = ("data", b"root:x:0:0:root:/root:/bin/sh\nlibvirt-qemu:x:64055:64055:qemu:/var/lib/libvirt:/bin/false\n")
    extra_files["/etc/group"] = ("data", b"root:x:0:\nkvm:x:101:\nlibvirt:x:102:\nlibvirt-qemu:x:64055:\n")
    extra_files["/etc/nsswitch.conf"] = ("data", b"passwd: files\ngroup: files\nhosts: files\n")
    extra_files["/etc/hosts"] = ("data", b"127.0.0.1 localhost\n")
    extra_files["/etc/libvirt/qemu.conf"] = ("file", files / "qemu.conf")
    extra_files["/etc/libvirt/libvirtd.conf"] = ("file", files / "libvirtd.conf")
    extra_files["/etc/libvirt/virtlogd.conf"] = ("data", b"")
    extra_files["/etc/os-release"] = ("data", b'NAME="oemkit core (prototype)"\nID=oemkit-core\nID_LIKE=debian\n')
    extra_files["/etc/oemkit/packages.txt"] = ("data", b"")  # filled in later
    for d in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/var/lib/libvirt", "/var/log/libvirt",
              "/var/cache/libvirt", "/mnt"]:
        extra_files[d] = ("dir",)
    extra_files["/var/run"] = ("link", "/run")
    extra_files["/dev/console"] = ("chr", 5, 1)
    extra_files["/dev/null"] = ("chr", 1, 3)
    for k in list(extra_files):
        owner_extra.setdefault(k, "rest")

    entries = dict(sel.entries)
    owner = dict(sel.owner)
    for k, v in extra_files.items():
        entries[k] = v
        owner[k] = owner_extra[k]
    # experiments only: CORE_ABLATE=passwd-qemu,dmidecode,qemuconf,varrun,tcg drops one requirement each
    ablate = set(filter(None, os.environ.get("CORE_ABLATE", "").split(",")))
    if "passwd-qemu" in ablate:
        entries["/etc/passwd"] = ("data", b"root:x:0:0:root:/root:/bin/sh\n")
        entries["/etc/group"] = ("data", b"root:x:0:\n")
    if "dmidecode" in ablate:
        del entries["/usr/sbin/dmidecode"]
    if "qemuconf" in ablate:
        entries["/etc/libvirt/qemu.conf"] = ("data", b"")
    if "varrun" in ablate:
        del entries["/var/run"]
    if "tcg" in ablate:
        del entries["/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so"]
    return entries, owner, sorted(wanted)


# ---------------------------------------------------------------- stage 4: cpio
def cpio_newc(entries: dict[str, tuple], mtime: int) -> bytes:
    """Deterministic newc archive: parents first (sorted by path components), uid/gid 0, fixed mtime."""
    out = bytearray()
    # add parent directories
    allp = dict(entries)
    for p in list(entries):
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            allp.setdefault("/" + "/".join(parts[:i]), ("dir",))
    ino = 1
    for path in sorted(allp, key=lambda p: p.strip("/").split("/")):
        e = allp[path]
        name = path.strip("/").encode() + b"\0"
        rmaj = rmin = 0
        if e[0] == "dir":
            mode, data = stat.S_IFDIR | (0o1777 if path in ("/tmp",) else 0o755), b""
        elif e[0] == "link":
            mode, data = stat.S_IFLNK | 0o777, e[1].encode()
        elif e[0] == "chr":
            mode, data, rmaj, rmin = stat.S_IFCHR | 0o600, b"", e[1], e[2]
        elif e[0] == "data":
            mode, data = stat.S_IFREG | 0o644, e[1]
        else:
            src = Path(e[1])
            perm = stat.S_IMODE(src.stat().st_mode) & 0o755
            mode, data = stat.S_IFREG | perm, src.read_bytes()
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 2 if e[0] == "dir" else 1, mtime, len(data), 0, 0, rmaj, rmin, len(name), 0))
        out += hdr.encode() + name
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
        ino += 1
    name = b"TRAILER!!!\0"
    out += ("070701" + "".join(f"{v:08x}" for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(name), 0))).encode() + name
    out += b"\0" * (-len(out) % 512)
    return bytes(out)


def compress(cache: Path, raw: bytes, method: str) -> bytes:
    key = sha256_bytes(raw + json.dumps(COMPRESSORS[method]).encode())
    path = cache / "parts" / f"{key}.{method}"
    if path.exists():
        return path.read_bytes()
    data = run(COMPRESSORS[method], input=raw, capture_output=True).stdout
    data += b"\0" * (-len(data) % 4)  # the kernel skips zero padding between concatenated archives
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=HERE / "cache")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--compress", choices=sorted(COMPRESSORS), default="xz")
    ap.add_argument("--flavour", default="cloud-amd64")
    ap.add_argument("--agent", type=Path, default=None, help="path to the hypervisor_core package")
    ap.add_argument("--pubkey", type=Path, default=None)
    a = ap.parse_args(argv)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "1700000000"))
    a.cache.mkdir(parents=True, exist_ok=True)

    t = time.monotonic()
    kroot, abi, kpkg = fetch_kernel(a.cache, a.flavour)
    TIMES["kernel_fetch"] = time.monotonic() - t
    t = time.monotonic()
    stage, manifest = fetch_userland(a.cache)
    TIMES["userland_fetch"] = time.monotonic() - t
    log(f"kernel {kpkg}; {len(manifest)} userland packages staged")

    t = time.monotonic()
    work = a.cache / "work" / f"{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    entries, owner, mods = select(stage, kroot, abi, work, a.agent, a.pubkey)
    entries["/etc/oemkit/packages.txt"] = ("data", ("\n".join([kpkg] + manifest) + "\n").encode())
    TIMES["select"] = time.monotonic() - t

    t = time.monotonic()
    raws = {}
    for part in PART_ORDER:
        sub = {k: v for k, v in entries.items() if owner[k] == part}
        if sub:
            raws[part] = cpio_newc(sub, mtime)
    TIMES["cpio"] = time.monotonic() - t
    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        # BCJ (x86 branch filter) helps executables but not relocatable kernel modules
        meth = {p: ("xz" if a.compress == "xz-bcj" and p == "modules" else a.compress) for p in raws}
        comp = dict(zip(raws, ex.map(lambda p: compress(a.cache, raws[p], meth[p]), raws)))
    TIMES["compress"] = time.monotonic() - t

    vmlinuz = (kroot / "boot" / f"vmlinuz-{abi}").read_bytes()
    initrd = b"".join(comp[p] for p in PART_ORDER if p in comp)
    core_id = sha256_bytes(vmlinuz + initrd)[:20]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "vmlinuz").write_bytes(vmlinuz)
    (a.out / "initrd.img").write_bytes(initrd)
    parts = [{"name": "kernel", "compressed_bytes": len(vmlinuz), "uncompressed_bytes": len(vmlinuz)}]
    for p in PART_ORDER:
        if p in raws:
            nfiles = sum(1 for k in entries if owner[k] == p)
            parts.append({"name": p, "compressed_bytes": len(comp[p]), "uncompressed_bytes": len(raws[p]),
                          "entries": nfiles, "raw_sha256": sha256_bytes(raws[p])})
            if os.environ.get("CORE_DUMP_RAW"):
                (a.out / f"part-{p}.cpio").write_bytes(raws[p])
    foot = {
        "core_id": core_id,
        "compression": a.compress,
        "compressed_bytes": sum(p["compressed_bytes"] for p in parts),
        "uncompressed_bytes": sum(p["uncompressed_bytes"] for p in parts),
        "budget_bytes": 32 * 1024 * 1024,
        "parts": parts,
    }
    (a.out / "footprint.json").write_text(json.dumps(foot, indent=1) + "\n")
    files_by_part = {p: sorted(k for k in entries if owner[k] == p) for p in PART_ORDER}
    (a.out / "manifest.json").write_text(json.dumps(
        {"core_id": core_id, "kernel": kpkg, "abi": abi, "packages": manifest, "modules": mods,
         "files": files_by_part}, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    TIMES["total"] = time.monotonic() - T0
    (a.out / "build-times.json").write_text(json.dumps({k: round(v, 2) for k, v in TIMES.items()}) + "\n")
    log(f"core {core_id}: vmlinuz {len(vmlinuz)} B, initrd {len(initrd)} B; times {json.dumps({k: round(v, 2) for k, v in TIMES.items()})}")
    print(core_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
