"""`oemkit core build`: the stages in order, each cached by its inputs, and the core folder.

  userland  mmdebstrap of recipe.PACKAGES                       cache/stage/<suite+mirrors+packages>
  rebuild   recipe.REBUILDS from their Debian source            cache/rebuilt/<suite+mirrors+recipe+versions>
  kernel    apt-get download + dpkg-deb -x + depmod             cache/kernel/<package>_<version>
  select    ELF closure, measured Python set, module closure    (work folder, seconds)
  cpio      one reproducible newc archive per part              (memory)
  compress  each part on its own, deterministic (-T1)           cache/parts/<sha256(raw cpio + arguments)>
  capseed   one boot of the core to harvest libvirt's QEMU caps  cache/capseed/<kernel+parts+machine>
  output    COREDIR.tmp-PID, then renamed to COREDIR

The kernel unpacks a concatenation of compressed archives, so initrd.img is simply the parts one after another
and only a changed part is compressed again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypervisor_core
from hypervisor_core.config import ConfigError, read_public_key
from hypervisor_core.fsutil import write_atomic
from oemkit.catalog.store import load_catalog
from oemkit.errors import OemkitError, UnreadableInput
from oemkit.image import buildcache
from oemkit.image.core import capseed, compression, cpio, footprint, kmod, rebuild
from oemkit.image.core.assemble import FILES, Inputs, assemble, firmware_missing
from oemkit.image.core.compression import COMPRESSORS, compressor
from oemkit.image.core.debian import Kernel, fetch_kernel, stage_userland, staged_kernel
from oemkit.image.core.recipe import DEFAULT_FLAVOUR, MIRRORS, PACKAGES, PARTS, SUITE
from oemkit.image.core.selection import Inode
from oemkit.image.tools import CHROOT, PATH, BuildError
from oemkit.inputs import read_input

DEFAULT_SOURCE_DATE_EPOCH = 1_700_000_000


class HostError(OemkitError):
    """The build host cannot build a core (not root, a tool missing)."""


def check_host(methods: set[str], harvest: bool) -> None:
    if os.geteuid() != 0:
        raise HostError("building a core needs root (mmdebstrap --mode=root, chroot): run it with sudo")
    tools = ["mmdebstrap", "apt-get", "apt-cache", "dpkg-deb", *(["qemu-system-x86_64"] if harvest else [])]
    tools += sorted(COMPRESSORS[m][0] for m in methods)
    missing = [t for t in tools if shutil.which(t, path=PATH) is None]
    if not os.access(CHROOT, os.X_OK):
        missing.append("chroot")
    if missing:
        raise HostError(f"missing build tools: {', '.join(missing)} (bash scripts/setup.sh installs them)")


@dataclass
class Options:
    output: Path
    pubkey: Path | None = None
    refresh: bool = False  # resolve the packages against the mirrors again instead of the cached stage
    cache_dir: Path | None = None
    compression: str = compression.DEFAULT  # a compression.plan spec: `xz`, or `xz,modules=zstd`
    flavour: str = DEFAULT_FLAVOUR
    budget_bytes: int = footprint.DEFAULT_BUDGET_BYTES
    agent: Path | None = None  # the hypervisor_core package folder (default: the installed one)
    init: Path | None = None  # the core's /init (default: oemkit/core/files/init)
    catalog_dir: Path | None = None
    source_date_epoch: int = field(default_factory=lambda: _source_date_epoch())
    caps_seed: bool = True  # harvest libvirt's QEMU capabilities by booting the new core once (capseed.py)


@dataclass
class Result:
    core_id: str
    footprint: dict
    times: dict[str, float]
    coredir: Path | None  # None when over budget: nothing was written there
    footprint_file: Path
    over_budget: str | None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Timer:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.times: dict[str, float] = {}
        self.log = log
        self._t0 = time.monotonic()

    def stage(self, name: str, started: float, note: str = "") -> None:
        self.times[name] = round(time.monotonic() - started, 2)
        self.log(f"{name:<9} {self.times[name]:6.2f} s  {note}")

    def total(self) -> None:
        self.times["total"] = round(time.monotonic() - self._t0, 2)


def _source_date_epoch() -> int:
    text = os.environ.get("SOURCE_DATE_EPOCH", str(DEFAULT_SOURCE_DATE_EPOCH))
    if not text.isdigit():
        raise OemkitError(f"SOURCE_DATE_EPOCH={text!r} is not a count of seconds")
    return int(text)


def read_pubkey(path: Path) -> bytes:
    """The factory public key file, checked to be what `oemkit keys init` writes (an Ed25519 PEM key)."""
    data = read_input(path, "public key")
    try:
        read_public_key(data.decode("ascii"))
    except (UnicodeDecodeError, ConfigError) as exc:
        raise UnreadableInput(f"not the factory's public key: {exc}", file=str(path)) from None
    return data


def build(opts: Options, log: Callable[[str], None] = lambda _m: None) -> Result:
    # read once, checked, and these very bytes go into the image (never the file again, minutes later)
    factory_key = read_pubkey(opts.pubkey) if opts.pubkey is not None else None
    _check_coredir(opts.output)  # before minutes of work, not after
    methods = compression.plan(opts.compression)  # a bad spec is refused before minutes of work
    check_host(set(methods.values()), opts.caps_seed)
    if opts.pubkey is None:  # legal (a core to inspect or to size), but say what it means before minutes of work
        log("warning: no --pubkey: this core has no factory key and refuses every unit config")
    root = opts.cache_dir or buildcache.default_dir()
    root.mkdir(parents=True, exist_ok=True)
    buildcache.sweep(root)
    drivers = tuple(sorted({port.driver for model in load_catalog(opts.catalog_dir) for port in model.nics}))
    timer = Timer(log)

    t = time.monotonic()
    # The kernel is staged with the userland: one resolution against the recipe's mirrors, never this host's apt.
    userland = stage_userland(root, SUITE, MIRRORS, (*PACKAGES, f"linux-image-{opts.flavour}"), opts.refresh)
    timer.stage("userland", t, f"{len(userland.packages)} packages staged")
    busybox = userland.root / "bin" / "busybox"

    t = time.monotonic()
    overlay = rebuild.rebuild(root, SUITE, MIRRORS, userland, log)
    packages = overlay.apply(userland.packages)
    timer.stage("rebuild", t, ", ".join(f"{n}={v}" for n, v in overlay.packages.items()))

    t = time.monotonic()
    kernel = fetch_kernel(root, *staged_kernel(userland, opts.flavour), busybox)
    timer.stage("kernel", t, str(kernel))

    t = time.monotonic()
    work = buildcache.tmp_name(root / "work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        agent = opts.agent or Path(hypervisor_core.__file__).parent
        inputs = Inputs(agent, opts.init or FILES / "init", factory_key, drivers, packages)
        image, modules = assemble(userland, kernel, inputs, work, overlay.root)
        missing_firmware = firmware_missing(image, modules)
        timer.stage("select", t, f"{len(image.nodes)} paths, {len(modules.files)} modules")

        t = time.monotonic()
        raws = {p: cpio.write_newc(image.part(p), opts.source_date_epoch) for p in PARTS if image.part(p)}
        listing = {p: {path: node.size() for path, node in sorted(image.part(p).items())} for p in raws}
        timer.stage("cpio", t, ", ".join(f"{p} {len(r):,}" for p, r in raws.items()))

        t = time.monotonic()
        # xz -9e with a 64 MiB dictionary takes ~700 MB a process: at most 4 at once, whatever the core count
        with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 2, 4)) as pool:
            jobs = {p: pool.submit(compression.compress, root, raws[p], compressor(methods[p], p)) for p in raws}
            compressed = {p: j.result() for p, j in jobs.items()}
        timer.stage("compress", t, opts.compression)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    seed_record: dict[str, Any] | None = None
    # the harvest boots the core: not worth it for a core already over its budget without the seed
    within = len(kernel.vmlinuz.read_bytes()) + sum(len(c[0]) for c in compressed.values()) <= opts.budget_bytes
    if opts.caps_seed and within:
        t = time.monotonic()
        booted = b"".join(compressed[p][0] for p in raws)  # the core as it will boot, less the seed
        xml, seed_record = capseed.seed(root, kernel.vmlinuz, raws, booted, log)
        raws["seed"] = cpio.write_newc({capseed.SEED_PATH: Inode.blob(xml)}, opts.source_date_epoch)
        listing["seed"] = {capseed.SEED_PATH: len(xml)}
        compressed["seed"] = compression.compress(root, raws["seed"], compressor(methods["seed"], "seed"))
        timer.stage("capseed", t, f"{len(xml):,} bytes of QEMU capabilities")

    t = time.monotonic()
    cid, doc, outputs = _outputs(
        kernel, inputs, overlay, modules, missing_firmware, seed_record, opts, raws, compressed, listing
    )
    message = footprint.over_budget(doc)
    if message:
        # nothing that could be mistaken for a good core: the footprint goes to the cache, COREDIR is untouched
        where = root / "footprints" / f"{cid}.json"
        write_atomic(where, outputs["footprint.json"], mkdir=True)
        timer.stage("output", t, f"over budget: footprint in {where}")
        timer.total()
        return Result(cid, doc, timer.times, None, where, message)
    _write_coredir(opts.output, outputs)
    timer.stage("output", t, f"core {cid} in {opts.output}")
    timer.total()
    return Result(cid, doc, timer.times, opts.output, opts.output / "footprint.json", None)


def _outputs(
    kernel: Kernel,
    inputs: Inputs,
    overlay: rebuild.Overlay,
    modules: kmod.ModuleSet,
    missing_firmware: list[str],
    seed_record: dict[str, Any] | None,
    opts: Options,
    raws: dict[str, bytes],
    compressed: dict[str, tuple[bytes, int]],
    listing: dict[str, dict[str, int]],
) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """The core id, the footprint document and the files of a core folder, from its parts."""
    vmlinuz = kernel.vmlinuz.read_bytes()
    initrd = b"".join(compressed[p][0] for p in raws)
    cid = footprint.core_id(vmlinuz, initrd)
    kernel_raw, kernel_note = _kernel_uncompressed(kernel, vmlinuz)
    parts = [{"name": "kernel", "compressed_bytes": len(vmlinuz), "uncompressed_bytes": kernel_raw}]
    manifest_parts, offset = [], 0
    for p in raws:
        data, stream = compressed[p]
        parts.append({"name": p, "compressed_bytes": len(data), "uncompressed_bytes": len(raws[p])})
        manifest_parts.append(
            {
                "name": p,
                "method": compression.plan(opts.compression)[p],
                "offset": offset,  # in initrd.img
                "compressed_bytes": len(data),  # with the zero padding to 4 bytes
                "stream_bytes": stream,  # the compressed stream alone
                "uncompressed_bytes": len(raws[p]),
                "sha256": _sha(data),
                "raw_sha256": _sha(raws[p]),
                "files": listing[p],  # path -> bytes
            }
        )
        offset += len(data)
    doc = footprint.document(cid, parts, opts.budget_bytes, opts.compression, kernel_note)
    meta = {
        "core_id": cid,
        "kernel": str(kernel),
        "abi": kernel.abi,
        "flavour": opts.flavour,
        "compression": opts.compression,
        "source_date_epoch": opts.source_date_epoch,
        "packages": list(inputs.packages),
        "rebuilt": list(overlay.records),  # from source, with the change and the .debs' sha256
        "qemu_capabilities_seed": seed_record,  # None: built with --no-caps-seed
        "modules": sorted(kmod.module_name(f) for f in modules.files),  # shipped (.ko), dependencies included
        "builtin_modules": sorted(modules.builtin),  # asked for, built into this kernel
        "module_softdeps_loaded_first": list(modules.pre_softdeps),
        "module_softdeps_unresolved": list(modules.unresolved_softdeps),  # built in, or in no module
        "firmware_missing": missing_firmware,  # named by a shipped module, not in the stage
        "footprint": doc,
    }
    outputs = {
        "vmlinuz": vmlinuz,
        "initrd.img": initrd,
        "core.json": _json(meta),
        "footprint.json": _json(doc),
        "manifest.json": _json({"core_id": cid, "parts": manifest_parts}),
    }
    return cid, doc, outputs


def _kernel_uncompressed(kernel: Kernel, vmlinuz: bytes) -> tuple[int, str]:
    """footprint.kernel_uncompressed, remembered beside the unpacked kernel (decompressing it costs ~0.5 s)."""
    path = kernel.root / ".vmlinux-size.json"
    if path.is_file():
        known = json.loads(path.read_text())
        return known["bytes"], known["how"]
    size, how = footprint.kernel_uncompressed(vmlinuz)
    write_atomic(path, json.dumps({"bytes": size, "how": how}))
    return size, how


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()


def _check_coredir(out: Path) -> None:
    """COREDIR may be new, an empty folder or an earlier core: nothing else is replaced, and never a link."""
    if out.is_symlink():
        raise BuildError("a symbolic link: give the core folder itself", file=str(out))
    if out.exists() and not out.is_dir():
        raise BuildError("exists and is not a folder", file=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / "core.json").is_file():
        raise BuildError("exists and is not a core folder; refusing to replace it", file=str(out))


def _write_coredir(out: Path, files: dict[str, bytes]) -> None:
    """Build the folder as OUT.tmp-PID, then put it in OUT's place: a failed build leaves no mixed folder, and
    only an empty folder or an earlier core is ever replaced."""
    _check_coredir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        if out.is_dir():
            os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
