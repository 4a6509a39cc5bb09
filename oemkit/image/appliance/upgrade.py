"""`oemkit image upgrade OUT/<serial> --core NEWCORE`: a new core into a built unit's image, offline, the way the
box will take one — into the bank that is not the default, as the next generation with boot counting
(`oemkit-<max+1>-<bank>+3-0.efi`, hypervisor_core/bank.py), the bank's old UKI removed. systemd-boot then boots it
first; if it never reaches READY (which blesses it) in three tries, the other bank boots again.

All or nothing: the image must verify before anything is touched; the work happens on a copy in a staging folder
beside the unit's (so a qcow2's relative backing path still resolves), the copy and its new manifest are verified
like any built image, and only then renamed over the unit's (the image, then the manifest). A raw image is edited
by mtools at the ESP's offset; a qcow2 unit's guest view is edited the same way and a new overlay is written with
every cluster that now differs from the base — the unit's bytes beyond the shared core grow by the new UKI, and a
later upgrade leaves no clusters of a replaced bank behind."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

from hypervisor_core import bank
from oemkit.errors import OemkitError
from oemkit.image.appliance import disk, edit, layout, manifest, shared, verify
from oemkit.image.tools import PATH
from oemkit.seal.secureboot import SecureBootKeys


class UpgradeRefused(OemkitError):
    """The upgrade was not made: the image does not verify, the core is already in the target bank, or its UKI
    is not signed by the factory's db key (exit 1; the image is untouched)."""


def _signed(efi: Path, keys: SecureBootKeys) -> bool:
    done = subprocess.run(["sbverify", "--cert", str(keys.cert("db")), str(efi)], capture_output=True, check=False,
                          env={"PATH": PATH})  # fmt: skip
    return done.returncode == 0


def plan(banks: dict[str, dict], core_id: str, where: str | None = None) -> tuple[str, bank.Entry]:
    """The bank to write and its new entry: the next generation, counted. Pure. Normally the bank that is not the
    default; but never the last blessed bank: when the default is itself on trial (an upgrade not yet proven, e.g.
    two offline upgrades before shipping), that trial bank is replaced, so the box always keeps one bank to roll
    back to (two banks on trial could leave it nothing but a reboot loop)."""
    default = manifest.default_bank(banks)
    other = next(b for b in bank.BANKS if b != default)
    entries = {b: bank.parse(e["name"]) for b, e in banks.items()}
    on_trial = entries[default] is not None and entries[default].tries_left is not None  # type: ignore[union-attr]
    other_blessed = entries[other] is not None and entries[other].tries_left is None  # type: ignore[union-attr]
    target = default if on_trial and other_blessed else other
    for b in (target, *(b for b, e in entries.items() if e is not None and e.tries_left is None)):
        if banks[b]["core_id"] == core_id:  # in the target already, or kept in a blessed bank: nothing to do
            name = banks[b]["name"]
            raise UpgradeRefused(f"core {core_id} is already in bank {b.upper()} ({name})", file=where)
    generation = max(int(e["generation"]) for e in banks.values()) + 1
    return target, bank.new_entry(generation, target, counting=True)


def _edit(image: Path, old: str, new: str, efi: Path, epoch: int) -> None:
    disk.fat_delete(image, layout.ESP.start, layout.uki_path(old), epoch)
    disk.fat_put(image, layout.ESP.start, efi, layout.uki_path(new), epoch)


def upgrade(unit_dir: Path, coredir: Path, keys: SecureBootKeys) -> dict:
    """Write the core in `coredir` into the unit's other bank; the new manifest, with an "upgrade" record."""
    m, problems = verify.verify(unit_dir, keys)
    if problems:
        raise UpgradeRefused("the image does not verify, so it is not upgraded: " + "; ".join(problems),
                             file=str(unit_dir), hint=f"oemkit image verify {unit_dir} --keys ...")  # fmt: skip
    out = Path(os.path.abspath(unit_dir)).parent  # the staging folder must sit beside the unit's, whatever its spelling
    efi, _, core = shared.boot_files(coredir, out, keys)
    cid, epoch = str(core["core_id"]), int(core.get("source_date_epoch", 0))
    if not _signed(efi, keys):
        raise UpgradeRefused(f"the UKI of core {cid} is not signed by this factory's db key (sbverify)", file=str(efi))
    target, entry = plan(m["banks"], cid, str(unit_dir))
    old = m["banks"][target]["name"]

    def change(disk_view: Path) -> None:
        _edit(disk_view, old, entry.name, efi, epoch)

    return edit.rewrite(
        unit_dir, m, change, lambda staged: _manifest(m, target, entry, cid, efi, staged), keys, "upgrade"
    )


def _manifest(m: dict, target: str, entry: bank.Entry, cid: str, efi: Path, staged: Path) -> dict:
    new = copy.deepcopy(m)
    old = new["banks"][target]
    uki = manifest.file_entry(efi)
    esp = new["contents"][layout.ESP_NAME]
    del esp[layout.uki_path(old["name"])]
    esp[layout.uki_path(entry.name)] = uki
    new["banks"][target] = manifest.bank_entry(entry.name, cid, uki["sha256"])
    new["uki"] = {"name": new["banks"]["a"]["name"], "sha256": new["banks"]["a"]["uki_sha256"]}
    record = manifest.file_entry(staged)
    new["files"] = {staged.name: record}
    new["bytes_beyond_core"] = record["bytes"]
    new["tools"] = manifest.tool_versions()
    new["upgrade"] = {
        "bank": target,
        "name": entry.name,
        "generation": entry.generation,
        "core_id": cid,
        "replaced": {"name": old["name"], "core_id": old["core_id"]},
        "bytes_beyond_core_before": m["bytes_beyond_core"],
    }
    return new
