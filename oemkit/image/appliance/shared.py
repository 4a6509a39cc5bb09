"""What every unit of a core shares, built once into the output folder: the signed UKI and systemd-boot
(`OUT/.uki/`), and the base disk (`OUT/.base/`: the ESP with both banks, an empty config partition, a GPT with
GUIDs from the core id) that a qcow2 unit backs onto and a raw unit is copied from.

A cached file is used only after its check passes in this process — the UKI and systemd-boot by sbverify against
the db certificate, the base by its sha256 against the record written beside it — and is rebuilt, never used,
when the check fails (a crash may have left half a file; a disk may have flipped a bit). Each is written under a
temporary name and renamed, so workers of a build line that race to rebuild one (after `prepare_shared`) each
rename a whole file, and the bytes are the same either way: the build is reproducible."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from hypervisor_core.fsutil import sha256_file, write_atomic
from oemkit.errors import UnreadableInput
from oemkit.image.appliance import disk, layout, uki
from oemkit.image.tools import BuildError, run_tool
from oemkit.inputs import read_input
from oemkit.seal.secureboot import SecureBootKeys, certificate, fingerprint

UKI_DIR, BASE_DIR = ".uki", ".base"
_lock = threading.Lock()  # one builder of the shared files per process; other processes rename whole files
_checked: dict[Path, tuple[int, int, int]] = {}  # path -> (inode, size, mtime) that passed its check here
_digests: dict[Path, tuple[tuple[int, int, int], str]] = {}
_regions: dict[Path, tuple[tuple[int, int, int], list[bytes]]] = {}


@dataclass(frozen=True)
class Shared:
    core: dict
    core_id: str
    epoch: int
    db: str  # the db certificate's SHA-256 fingerprint: the key the boot files are signed with
    efi: Path  # the core's signed UKI
    loader: Path  # signed systemd-boot
    base: Path
    base_sha256: str
    esp: dict[str, dict]  # what the ESP holds: /PATH -> {sha256, bytes}
    state_sha256: str  # the empty state filesystem's bytes (the whole partition)

    @property
    def uki_sha256(self) -> str:
        return self.esp[layout.uki_path(layout.bank_names()["a"])]["sha256"]


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _passed(path: Path) -> bool:
    try:
        return _checked.get(path) == _stamp(path)
    except OSError:
        return False


def _digest(path: Path) -> str:
    """sha256 of a shared file, once per process while the file stays the same."""
    stamp = _stamp(path)
    cached = _digests.get(path)
    if cached is None or cached[0] != stamp:
        cached = _digests[path] = (stamp, sha256_file(path))
    return cached[1]


def read_core(coredir: Path) -> dict:
    try:
        core = json.loads(read_input(coredir / "core.json", "core metadata"))
        str(core["core_id"])
        return dict(core)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableInput(f"not a core's metadata: {exc}", file=str(coredir / "core.json")) from None


def boot_files(coredir: Path, out: Path, keys: SecureBootKeys) -> tuple[Path, Path, dict]:
    """The signed UKI of the core in `coredir` and signed systemd-boot, built once per core and db key into
    OUT/.uki/ and reused only while sbverify accepts them."""
    core = read_core(coredir)
    db = fingerprint(certificate(keys, "db"))
    folder = out / UKI_DIR / f"{core['core_id']}-{db[:16]}-v{uki.FORMAT}"
    efi, loader = folder / f"oemkit-{core['core_id']}.efi", folder / "systemd-bootx64.efi"
    with _lock:
        if not all(_passed(p) for p in (efi, loader)):
            try:
                for signed in (efi, loader):
                    run_tool(["sbverify", "--cert", str(keys.cert("db")), str(signed)], what=f"sbverify {signed.name}")
            except BuildError:
                _build_boot_files(coredir, folder, keys, core)
            for signed in (efi, loader):
                _checked[signed] = _stamp(signed)
    return efi, loader, core


def _build_boot_files(coredir: Path, folder: Path, keys: SecureBootKeys, core: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as tmp:
        built = uki.build(coredir, Path(tmp), keys)  # signed, then checked by sbverify
        loader = uki.sign(
            uki.SYSTEMD_BOOT, Path(tmp) / "systemd-bootx64.efi", keys, int(core.get("source_date_epoch", 0))
        )
        os.replace(built, folder / built.name)
        os.replace(loader, folder / loader.name)


def prepare(coredir: Path, keys: SecureBootKeys, out: Path) -> Shared:
    """The shared files of this core and db key in OUT, checked (or rebuilt) once per process."""
    efi, loader, core = boot_files(coredir, out, keys)
    cid, epoch = str(core["core_id"]), int(core.get("source_date_epoch", 0))
    db = fingerprint(certificate(keys, "db"))
    names = layout.bank_names()
    esp = {
        "/EFI/BOOT/BOOTX64.EFI": {"sha256": _digest(loader), "bytes": loader.stat().st_size},
        "/loader/loader.conf": {"sha256": hashlib.sha256(layout.LOADER_CONF).hexdigest(),
                                "bytes": len(layout.LOADER_CONF)},
        **{layout.uki_path(names[b]): {"sha256": _digest(efi), "bytes": efi.stat().st_size} for b in ("a", "b")},
    }  # fmt: skip
    base = out / BASE_DIR / layout.base_name(cid, db)
    record = base.with_name(base.name + ".json")
    with _lock:
        try:
            rec = json.loads(read_input(record, "image manifest"))
            ok = _passed(base) or rec["sha256"] == _digest(base)
            state_sha = str(rec["state_sha256"])
        except (UnreadableInput, OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            state_sha = _build_base(base, record, efi, loader, cid, db, epoch)
        _checked[base] = _stamp(base)
    return Shared(core, cid, epoch, db, efi, loader, base, _digest(base), esp, state_sha)


def _build_base(base: Path, record: Path, efi: Path, loader: Path, cid: str, db: str, epoch: int) -> str:
    """ESP (both banks the same core), an empty config partition, an empty state filesystem, the GPT with the
    core's GUIDs. Returns the state partition's sha256 (recorded beside the base, for `image verify`)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    names = layout.bank_names()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=base.parent) as tmp:
        work = Path(tmp)
        (work / "loader.conf").write_bytes(layout.LOADER_CONF)
        esp = disk.fat_image(work / "esp.img", layout.ESP_MIB, layout.ESP_LABEL, layout.esp_volume_id(cid, db), {
            "/EFI/BOOT/BOOTX64.EFI": loader,
            "/loader/loader.conf": work / "loader.conf",
            layout.uki_path(names["a"]): efi,  # active: the higher generation
            layout.uki_path(names["b"]): efi,  # known-good fallback until an upgrade writes it
        }, epoch)  # fmt: skip
        cfg = disk.fat_image(work / "config.img", layout.CONFIG_MIB, layout.CONFIG_LABEL,
                             layout.volume_id(layout.BASE, cid, "config"), {}, epoch, fat_bits=None)  # fmt: skip
        state = disk.ext4_image(
            work / "state.img", layout.STATE_MIB, layout.STATE_FS_LABEL, layout.state_uuid(cid), epoch
        )
        raw = disk.gpt_disk(work / "base.raw", layout.guid(layout.BASE, cid, "disk"),
                            partitions(layout.BASE, cid, esp, cfg, state), epoch)  # fmt: skip
        if raw.stat().st_size != layout.DISK_BYTES:
            raise BuildError(f"the base disk is {raw.stat().st_size} bytes, the layout says {layout.DISK_BYTES}")
        state_sha = hashlib.sha256(state.read_bytes().ljust(layout.STATE.length, b"\0")).hexdigest()
        write_atomic(record, json.dumps({"sha256": sha256_file(raw), "bytes": layout.DISK_BYTES,
                                         "state_sha256": state_sha}).encode())  # fmt: skip
        os.replace(raw, base)
    return state_sha


def partitions(
    who: str, cid: str, esp: Path | None, cfg: Path | None, state: Path | None = None
) -> list[disk.Partition]:
    """The GPT's partitions of a unit (`who` = its serial) or of the base (`who` = layout.BASE), in disk order;
    the state partition last, so the box can grow it to the device's end."""
    return [
        disk.Partition(layout.ESP_NAME, disk.ESP_TYPE, layout.guid(who, cid, "esp"), esp, layout.ESP_MIB),
        disk.Partition(layout.CONFIG_NAME, disk.LINUX_DATA_TYPE, layout.guid(who, cid, "config"), cfg,
                       layout.CONFIG_MIB),
        disk.Partition(layout.STATE_NAME, disk.LINUX_DATA_TYPE, layout.guid(who, cid, "state"), state,
                       layout.STATE_MIB),
    ]  # fmt: skip


def base_regions(shared: Shared) -> list[bytes]:
    """The base's bytes in layout.UNIT_EXTENTS (what a unit is compared with), read once per process."""
    stamp = _stamp(shared.base)
    cached = _regions.get(shared.base)
    if cached is None or cached[0] != stamp:
        with shared.base.open("rb") as fh:
            chunks = [os.pread(fh.fileno(), e.length, e.start) for e in layout.UNIT_EXTENTS]
        cached = _regions[shared.base] = (stamp, chunks)
    return cached[1]
