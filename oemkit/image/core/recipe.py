"""What the core is made of, as data: the Debian packages, the binaries each part starts from, the data files, the
kernel modules and the Python seeds. Each entry says why it is there; everything else is derived (ELF closure,
module closure, measured Python imports), so nothing here is a hand-kept copy of a dependency list.
Figures quoted below were measured on the issue-5 prototype (bookworm, 2025)."""

from __future__ import annotations

from dataclasses import dataclass

SUITE = "bookworm"
# The only place packages come from. The userland stage is cached by suite + these lines + the package list.
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main\n"
    "deb http://deb.debian.org/debian bookworm-updates main\n"
    "deb http://deb.debian.org/debian-security bookworm-security main\n"
)
PY = "python3.11"
LIBDIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib", "/lib64")
ARCH_LIB = "/usr/lib/x86_64-linux-gnu"

# Kernel flavours: the generic kernel is xz-compressed (8.2 MB against the cloud kernel's 14.2 MB of LZ4) and has
# the server NIC/storage drivers (bnxt_en, megaraid_sas, ...) that the cloud kernel leaves out.
FLAVOURS = ("amd64", "cloud-amd64")
DEFAULT_FLAVOUR = "amd64"

# Userland packages; apt resolves their dependencies (mmdebstrap --variant=extract, no recommends). Only files
# reached from the roots below end up in the core, so a dependency that nothing links costs nothing.
PACKAGES = (
    "busybox-static",  # PID 1's shell and every small tool (mount, modprobe, depmod, ...): one static binary
    "dmidecode",  # libvirtd runs it for host sysinfo; without it every start logs an exit-127 error
    "iproute2",  # the agent's hostnet runs `ip -j link show`: busybox ip has no JSON
    "python3.11-minimal",  # the agent's interpreter
    "libpython3.11-stdlib",  # the stdlib modules the agent imports (measured, see pystdlib.py)
    "python3-libvirt",  # the agent's only non-stdlib import
    "libvirt-daemon",  # libvirtd, virtlogd
    "libvirt-daemon-driver-qemu",  # the QEMU/KVM connection driver
    "qemu-system-x86",  # the VMM
    "qemu-utils",  # qemu-img: libvirt's dir pool runs it to create the qcow2 volumes the agent defines
    "dnsmasq-base",  # libvirt starts dnsmasq for every NAT or isolated network with an address (DHCP, DNS)
    "iptables",  # libvirt's network driver writes its firewall rules with it (measured: no start without)
)


@dataclass(frozen=True)
class Rebuild:
    """A staged package rebuilt from its own Debian source with one declared change (rebuild.py)."""

    source: str  # the source package
    binaries: tuple[str, ...]  # the binary packages taken from the build, in place of the staged ones
    why: str  # also the changelog line of the rebuilt package
    drops: tuple[str, ...]  # sonames the rebuilt binaries must no longer link: proof the change took
    edits: tuple[tuple[str, str, str, int], ...] = ()  # (file, old, new, times it must match) in the source tree
    build_options: tuple[str, ...] = ()  # DEB_BUILD_OPTIONS features the package's debian/rules offers
    profiles: str = ""  # build profiles


REBUILDS = (
    # libvirt -> libxml2 -> ICU: 8.6 MB of the 43.7 MB core (libicudata alone 31 MB raw), for the few legacy
    # encodings iconv does not convert. Debian made this same change for trixie; the agent's XML is UTF-8.
    Rebuild(
        "libxml2",
        ("libxml2",),
        "built --without-icu (libvirt's XML is UTF-8; iconv covers the rest): ICU out of the embedded core",
        drops=("libicu",),
        edits=(
            ("debian/rules", "--with-icu", "--without-icu", 1),
            ("debian/control", " libicu-dev,\n", "", 2),  # Build-Depends and libxml2-dev's Depends
        ),
        profiles="nopython",
    ),
    # libvirt runs dnsmasq from a config file and a lease script; D-Bus control, conntrack marks and nftables sets
    # are never used, and they pull libdbus, libsystemd, libgcrypt, lz4 and the nftables libraries into the core.
    Rebuild(
        "dnsmasq",
        ("dnsmasq-base",),
        "built without D-Bus, conntrack and nftset, which libvirt never uses",
        drops=("libdbus-1", "libnetfilter_conntrack", "libnftables"),
        build_options=("nodbus", "noconntrack", "nonftset"),
    ),
)

# Parts of the initrd, in the order they are concatenated (a later archive may override an earlier one's path).
# Each file is counted in the first part that needs it: libraries shared by libvirt and QEMU count as libvirt.
PARTS = ("rest", "modules", "libvirt", "qemu", "python", "agent", "seed")  # seed: capseed.py, after the others
FOOTPRINT_PARTS = ("kernel", *PARTS)

_DRV = f"{ARCH_LIB}/libvirt"
# part -> ELF binaries whose DT_NEEDED closure goes into it
ELF_ROOTS: dict[str, tuple[str, ...]] = {
    "rest": (
        "/bin/busybox",
        "/usr/sbin/dmidecode",
        "/bin/ip",  # iproute2; /sbin/ip (its link) is added too so busybox's ip applet never shadows it
        "/sbin/ip",
    ),
    "libvirt": (
        "/usr/sbin/libvirtd",
        "/usr/sbin/virtlogd",  # libvirtd hands QEMU's console/log to it
        f"{_DRV}/connection-driver/libvirt_driver_qemu.so",
        f"{_DRV}/connection-driver/libvirt_driver_network.so",  # the agent defines networks
        f"{_DRV}/connection-driver/libvirt_driver_storage.so",  # ... and a dir pool with volumes
        f"{_DRV}/storage-backend/libvirt_storage_backend_fs.so",  # the dir pool
        f"{_DRV}/storage-file/libvirt_storage_file_fs.so",  # volume files on it
        "/usr/sbin/dnsmasq",
        "/usr/lib/libvirt/libvirt_leaseshelper",  # dnsmasq's --dhcp-script: without it dnsmasq exits at start
        # iptables-legacy: the kernel's x_tables modules below, fewer than the nf_tables stack iptables-nft needs
        "/usr/sbin/xtables-legacy-multi",
    ),
    "qemu": (
        "/usr/bin/qemu-system-x86_64",
        f"{ARCH_LIB}/qemu/accel-tcg-x86_64.so",  # without it libvirt's caps probe fails: no usable emulator
        "/usr/bin/qemu-img",
    ),
    "python": (f"/usr/bin/{PY}",),  # stdlib and extension modules come from the import probe
}
# part -> data files or folders (taken whole)
DATA: dict[str, tuple[str, ...]] = {
    "rest": ("/etc/iproute2",),  # ip's table names (optional: taken when the package has them there)
    "libvirt": (
        "/usr/share/libvirt/cpu_map",  # the QEMU driver's CPU model database
        "/usr/share/libvirt/schemas",  # VIR_DOMAIN_DEFINE_VALIDATE needs the RNG schemas
    ),
    # iptables' match and target extensions, dlopen()ed by name: no ELF closure reaches them. Only those whose
    # name libvirt's binaries (XTABLES_USERS) carry as a string, plus XTABLES_IMPLICIT (assemble._xtables)
    "libvirt-plugins": (f"{ARCH_LIB}/xtables",),
    "qemu": (
        # firmware a q35 guest without graphics boots with (measured: a nested domain reached RUNNING)
        "/usr/share/seabios/bios-256k.bin",
        "/usr/share/seabios/vgabios-stdvga.bin",
        "/usr/share/qemu/linuxboot_dma.bin",
        "/usr/share/qemu/kvmvapic.bin",
        "/usr/share/qemu/multiboot_dma.bin",
    ),
}
# The binaries that write libvirt's firewall rules: an extension is shipped when its name is a string in one of
# them (`--match conntrack`, `--jump MASQUERADE`); a few false friends (`ah`, `time`) cost a few kB, and no rule
# libvirt writes can name an extension that is missing (122 extensions, 169 kB compressed, before).
XTABLES_USERS = (f"{ARCH_LIB}/libvirt.so.0", f"{_DRV}/connection-driver/libvirt_driver_network.so")
# loaded by iptables itself: targets ACCEPT/DROP/RETURN and chain jumps, and the matches of `--protocol`
XTABLES_IMPLICIT = ("standard", "tcp", "udp", "icmp", "icmp6")
OPTIONAL_DATA = frozenset({"/etc/iproute2"})

# Modules the init loads by name from /etc/modules (nothing in sysfs announces them), in one background
# `modprobe -a`. Soft dependencies (crc32c for ext4 and the conntrack stack) are followed by kmod.resolve.
LOADED_MODULES: tuple[str, ...] = (
    "bridge",  # guest bridges
    "bonding",  # uplink bonds
    "8021q",  # VLANs
    "tun",  # QEMU's tap NICs
    "vhost_net",
    "macvtap",
    "veth",
    "isofs",  # the unit-config CD
    "cdrom",
    "sr_mod",
    "sd_mod",
    "ext4",  # the state location
    "vfat", "nls_cp437", "nls_ascii",  # the appliance image's config partition and ESP (A/B banks live there)
    "kvm",
    # libvirt's network firewall (iptables-legacy): a table missing at network start fails the agent's step
    "ip_tables", "iptable_filter", "iptable_nat", "iptable_mangle",
    "ip6_tables", "ip6table_filter", "ip6table_nat", "ip6table_mangle",
    "xt_MASQUERADE", "xt_conntrack", "xt_CHECKSUM", "xt_comment", "xt_tcpudp", "xt_state",
    "ipt_REJECT", "ip6t_REJECT",
)  # fmt: skip
# /etc/modprobe.d/oemkit.conf: busybox's modprobe applies these whenever the module loads (by name, as a
# dependency or at coldplug).
MODULE_OPTIONS: tuple[tuple[str, str], ...] = (
    ("bonding", "max_bonds=0"),  # no stray bond0 before the agent makes its own
    ("scsi_mod", "scan=sync"),  # a controller's disks exist when its modprobe returns: no wait for the state disk
    ("usb_storage", "delay_use=0"),  # a USB boot device (SD/IDSDM kits) is scanned at once, not after 1 s
)
# The names libvirt runs, all one multi-call binary (it dispatches on its own name).
IPTABLES_LINKS = tuple(f"/usr/sbin/{t}{s}" for t in ("iptables", "ip6tables") for s in ("", "-save", "-restore"))
# Shipped, but loaded by the init according to the CPU flags (svm/vmx): loading both logs an error.
KVM_VENDOR_MODULES = ("kvm_amd", "kvm_intel")
# Hardware drivers: shipped, loaded by modalias at coldplug. The catalog's NIC drivers are added by build.py.
HARDWARE_MODULES = (
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_rng",
    "virtio_console",
    "ahci",
    "libata",
    "nvme",
    "megaraid_sas",  # Dell PERC / Lenovo RAID
    "mpt3sas",  # LSI/Broadcom HBAs
    "smartpqi",  # HPE Smart Array
    "xhci_pci",
    "usb_storage",
    "uas",
    "tpm_crb",
    "tpm_tis",
    "efivarfs",  # Secure Boot state: the init loads it only when the firmware is UEFI (it refuses to load otherwise)
)

# Python modules imported in the probe besides everything hypervisor_core imports (found by reading its source):
# what `python3 -m` itself needs, and the codecs the agent names (looked up by name at run time, so no import scan
# sees them: tests/test_core_units.py checks every codec named in hypervisor_core is here) — UTF-16LE is how
# systemd-boot's EFI variables hold the booted bank.
# encodings.idna: socket.getaddrinfo and ssl encode a str host name with it (even "127.0.0.1"); codecs are looked up
# by name at run time, so the import scan cannot see it (a workload's https:// disk image failed without it)
PY_SEEDS = ("runpy", "encodings.utf_8", "encodings.ascii", "encodings.latin_1", "encodings.utf_16_le",
            "encodings.aliases", "encodings.idna")  # fmt: skip
# Imports inside stdlib functions are followed too (argparse imports textwrap only when it prints help or an
# error), except into these: debuggers, test runners, help and GUI tools that some modules reach only from a
# debugging helper, and the interactive prompt's readline (site loads it only for an interactive session).
PY_NEVER = ("doctest", "pdb", "unittest", "pydoc", "pydoc_data", "tkinter", "idlelib", "turtle", "turtledemo",
            "lib2to3", "ensurepip", "venv", "distutils", "test", "this", "antigravity", "__hello__", "__phello__",
            "readline", "rlcompleter",
            # pure-Python twins of C modules the staged Python has: decimal imports _pydecimal only when
            # _decimal is missing (244 kB of .pyc)
            "_pydecimal")  # fmt: skip
