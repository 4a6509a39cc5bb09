"""Everything the booted core contains, path by path and part by part: the recipe's binaries and data with their
closures, the measured Python set, the agent, the kernel modules, busybox's applets, and our own /init and /etc."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hypervisor_core.layout import FACTORY_KEY
from oemkit import __version__
from oemkit.image.core import kmod, pystdlib
from oemkit.image.core.debian import Kernel, Userland
from oemkit.image.core.recipe import (
    DATA,
    ELF_ROOTS,
    HARDWARE_MODULES,
    IPTABLES_LINKS,
    KVM_VENDOR_MODULES,
    LOADED_MODULES,
    MODULE_OPTIONS,
    OPTIONAL_DATA,
    PY,
    PY_SEEDS,
    XTABLES_IMPLICIT,
    XTABLES_USERS,
)
from oemkit.image.core.selection import Initramfs, Inode, Selector
from oemkit.image.tools import BuildError, run_tool

FILES = Path(__file__).resolve().parent / "files"
PATH_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    # libvirtd refuses to start without the user its QEMU driver is built for, even when qemu.conf says root
    "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/bin/false\n"
    # dnsmasq drops to these; it will not start for a libvirt network without them
    "libvirt-dnsmasq:x:108:108:Libvirt Dnsmasq:/var/lib/libvirt/dnsmasq:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nkvm:x:101:\nlibvirt:x:102:\nlibvirt-dnsmasq:x:108:\nlibvirt-qemu:x:64055:\nnogroup:x:65534:\n"
FOLDERS = ("/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/mnt", "/var/lib/libvirt", "/var/log/libvirt",
           "/var/cache/libvirt")  # fmt: skip


@dataclass(frozen=True)
class Inputs:
    """What goes into the core besides the Debian packages: our agent, /init and key, and the NIC drivers the
    hardware catalog names (a model added with a new driver gets it in the next core)."""

    agent: Path  # the hypervisor_core package folder
    init: Path  # the core's /init; its inittab sits beside it
    pubkey: bytes | None  # the factory's signing.pub as build read and checked it, read-only in the image
    drivers: tuple[str, ...]
    packages: tuple[str, ...] = ()  # name=version of what the core is made of, rebuilt packages' versions in


def assemble(
    userland: Userland, kernel: Kernel, inputs: Inputs, work: Path, overlay: Path | None = None
) -> tuple[Initramfs, kmod.ModuleSet]:
    image = Initramfs()
    sel = Selector(userland.root, image, overlay)
    for part in ("rest", "libvirt", "qemu", "python"):
        sel.add_elf_closure(ELF_ROOTS.get(part, ()), part)
        for plugins in DATA.get(f"{part}-plugins", ()):
            real = sel.add_path(plugins, part)
            sel.add_elf_closure(_xtables(sel, real), part)
        for path in DATA.get(part, ()):
            if path in OPTIONAL_DATA and not sel.exists(path):
                continue
            if sel.host(path).is_dir():
                sel.add_tree(path, part)
            else:
                sel.add_path(path, part)
    _python(sel, inputs.agent, work)
    if inputs.pubkey is not None:
        # read-only in the image, never in /etc/oemkit (which the state disk holds): no disk can bring its own key
        image.put(f"/{FACTORY_KEY}", Inode.blob(inputs.pubkey), "agent")
    _applets(image, userland.root / "bin" / "busybox")
    modules = _modules(image, kernel, sel, inputs.drivers, work)
    _own_files(image, kernel, inputs.packages, inputs.init)
    return image, modules


def _xtables(sel: Selector, folder: str) -> list[str]:
    """The iptables extensions libvirt can name: libxt_NAME.so (or libipt_/libip6t_) whose NAME is a string in
    XTABLES_USERS, and the implicit ones. The extension's own prefix is not part of the name iptables is given."""
    words: set[str] = set(XTABLES_IMPLICIT)
    for user in XTABLES_USERS:
        # whole C strings: the argument words libvirt passes (`"conntrack"`, `"MASQUERADE"`)
        words.update(w.decode() for w in re.findall(rb"([A-Za-z0-9_]{2,})\0", sel.host(user).read_bytes()))
    chosen = []
    for path in sorted(sel.host(folder).glob("*.so")):
        name = re.sub(r"^lib(xt|ipt|ip6t)_", "", path.stem)
        if name != path.stem and name in words:
            chosen.append(f"{folder}/{path.name}")
    if not any(c.endswith("/libxt_standard.so") for c in chosen):
        raise BuildError(f"{folder} has no libxt_standard.so: iptables could not write a single rule")
    return chosen


def _python(sel: Selector, agent: Path, work: Path) -> None:
    found = pystdlib.build_python(sel.root, agent, PY_SEEDS, work)
    for dest, compiled in found.stdlib_pyc.items():
        sel.image.put(dest, Inode.file(compiled, 0o644), "python")
    sel.add_elf_closure(found.extensions, "python")
    sel.add_path(f"/usr/lib/{PY}/lib-dynload", "python")  # getpath() looks for it
    if not sel.exists("/usr/bin/python3"):
        raise BuildError("the staged root has no /usr/bin/python3 (the init runs `python3 -m hypervisor_core`)")
    sel.add_path("/usr/bin/python3", "python")
    for dest, compiled in found.agent.items():
        sel.image.put(dest, Inode.file(compiled, 0o644), "agent")


def _applets(image: Initramfs, busybox: Path) -> None:
    """Every busybox applet as a symlink, unless a real tool of that name is shipped anywhere on PATH (so
    iproute2's /sbin/ip is never shadowed by busybox's, whatever the PATH order)."""
    real = {p.rsplit("/", 1)[1] for p in image.nodes if p.rsplit("/", 1)[0] in PATH_DIRS}
    for applet in sorted(run_tool([str(busybox), "--list-full"], what="busybox --list-full", text=True).stdout.split()):
        dest = "/" + applet
        if dest != "/bin/busybox" and dest.rsplit("/", 1)[1] not in real:
            image.put(dest, Inode.link("/bin/busybox"), "rest")


FIRMWARE_DIRS = ("/lib/firmware", "/usr/lib/firmware")


def _modules(image: Initramfs, kernel: Kernel, sel: Selector, drivers: tuple[str, ...], work: Path) -> kmod.ModuleSet:
    tree = kmod.ModuleTree.load(kernel.modules)
    wanted = list(LOADED_MODULES) + list(KVM_VENDOR_MODULES) + list(HARDWARE_MODULES) + list(drivers)
    found = kmod.resolve(tree, dict.fromkeys(wanted))
    dest = kmod.install(tree, found.files, work / "modules", kernel.abi, sel.root / "bin" / "busybox")
    for path in sorted(dest.rglob("*")):
        if path.is_file():
            image.put(f"/lib/modules/{kernel.abi}/{path.relative_to(dest).as_posix()}", Inode.file(path), "modules")
    # firmware the modules name, when the stage has it (the recipe stages no firmware package: core.json lists
    # what a driver may ask for and does not find, e.g. ice's DDP package, without which ice runs in safe mode)
    for name in found.firmware:
        for base in FIRMWARE_DIRS:
            if sel.exists(f"{base}/{name}"):
                sel.add_path(f"{base}/{name}", "modules")
                break
    # soft dependencies (busybox's modprobe does not follow them) load first, and may fail: they are alternatives
    loaded = [m for m in LOADED_MODULES if kmod.norm(m) in found.loadable]
    image.put("/etc/modules.softdep", Inode.blob("".join(f"{m}\n" for m in found.pre_softdeps).encode()), "rest")
    image.put("/etc/modules", Inode.blob(("\n".join(dict.fromkeys(loaded)) + "\n").encode()), "rest")
    options = "".join(f"options {m} {args}\n" for m, args in MODULE_OPTIONS)
    image.put("/etc/modprobe.d/oemkit.conf", Inode.blob(options.encode()), "rest")
    return found


def firmware_missing(image: Initramfs, found: kmod.ModuleSet) -> list[str]:
    return [n for n in found.firmware if not any(f"{b}/{n}" in image for b in FIRMWARE_DIRS)]


def _own_files(image: Initramfs, kernel: Kernel, packages: tuple[str, ...], init: Path) -> None:
    if not init.is_file():
        raise BuildError("no init for the core", file=str(init))
    image.put("/init", Inode.file(init, 0o755), "rest", replace=True)
    # busybox init, which /init hands over to, reads it; without one busybox offers a root shell on the console
    inittab = init.parent / "inittab"
    if not inittab.is_file():
        raise BuildError("no inittab beside the init (busybox's default would leave a root shell)", file=str(inittab))
    image.put("/etc/inittab", Inode.file(inittab, 0o644), "rest", replace=True)
    for name in ("qemu.conf", "libvirtd.conf"):
        image.put(f"/etc/libvirt/{name}", Inode.file(FILES / name, 0o644), "rest", replace=True)
    image.put("/etc/libvirt/virtlogd.conf", Inode.blob(b""), "rest", replace=True)
    # the DHCP client's hook (a management network with `address: dhcp`, hypervisor_core/hostnet.py)
    image.put("/usr/share/oemkit/udhcpc.script", Inode.file(FILES / "udhcpc.script", 0o755), "rest", replace=True)
    text = {
        "/etc/passwd": PASSWD,
        "/etc/group": GROUP,
        "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "/etc/os-release": f'NAME="oemkit core"\nID=oemkit-core\nID_LIKE=debian\nVERSION_ID="{__version__}"\n',
        "/etc/oemkit/packages.txt": "\n".join([str(kernel), *packages]) + "\n",
    }
    for path, content in text.items():
        image.put(path, Inode.blob(content.encode()), "rest", replace=True)
    for path in FOLDERS:
        image.put(path, Inode.dir(0o1777 if path == "/tmp" else 0o755), "rest", replace=True)
    for link in IPTABLES_LINKS:
        image.put(link, Inode.link("xtables-legacy-multi"), "libvirt", replace=True)
    image.put("/var/run", Inode.link("/run"), "rest", replace=True)  # the libvirt binding looks in /var/run/libvirt
    image.put("/dev/console", Inode.chr(5, 1), "rest", replace=True)  # PID 1's console before devtmpfs is mounted
    image.put("/dev/null", Inode.chr(1, 3, 0o666), "rest", replace=True)
