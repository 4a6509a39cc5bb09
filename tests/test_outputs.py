"""Outputs ("Every door shut", CLASS 2): every command that writes behaves the same about what is already there.

- An existing regular file is refused (exit 2, "exists; refusing to replace it", a hint about --force) unless
  --force, which replaces it (atomically).
- A symlink (to a file, or dangling), a FIFO, a device node or a folder is never replaced, with or without --force:
  afterwards it is still exactly what it was, and so is whatever a link points to.
- No run, refused or not, leaves a temporary file (`.NAME.*.tmp`) behind, and a refused run creates nothing.

`keys init` never replaces a key (it has no --force); `facts from-dmi` only creates a new tree (an empty folder is
fine); `boot --log` is checked before booting, so its refusals need no QEMU.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import bounded
from .bounded import Run
from .conftest import REPO, samples_dir
from .firstboot_kit import KEY, PUB, R650_DUMP, compile_to

PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"
BROKEN = REPO / "tests" / "data" / "profiles" / "broken" / "bad-ip.yaml"
SERIAL = "J30ABC12"
TIMEOUT = 60
QEMU = shutil.which("qemu-system-x86_64")
OLD = b"an output from an earlier run\n"
PRECIOUS = b"what a link points to: never to be touched\n"


# ------------------------------------------------------------------------------------------------ running oemkit
def oemkit(args: list[str], *, subprocess_: bool = False) -> Run:
    """The CLI in-process under an alarm, or (`subprocess_`: first boot, which must be a process of its own) bounded."""
    if subprocess_:
        return bounded.oemkit_subprocess(args, timeout=TIMEOUT)
    return bounded.oemkit_inprocess(args, timeout=TIMEOUT)


# -------------------------------------------------------------------------------------------- what is already there
def _tree(*folders: Path) -> dict[str, tuple[str, object]]:
    """Everything under `folders`: its type and what identifies it (content, link text, device numbers)."""
    out: dict[str, tuple[str, object]] = {}
    for folder in folders:
        for p in [folder, *sorted(folder.rglob("*"))] if os.path.lexists(folder) else []:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[str(p)] = ("file", p.read_bytes())
            elif stat.S_ISDIR(st.st_mode):
                out[str(p)] = ("folder", None)
            elif stat.S_ISFIFO(st.st_mode):
                out[str(p)] = ("fifo", None)
            elif stat.S_ISCHR(st.st_mode):
                out[str(p)] = ("char-device", st.st_rdev)
            else:
                out[str(p)] = ("other", stat.S_IFMT(st.st_mode))
    return out


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files the atomic writer would have made (`.NAME.*.tmp`), anywhere under `folders`."""
    return [p for f in folders if f.is_dir() for p in f.rglob("*") if p.name.endswith(".tmp")]


TARGETS = ["regular-file", "symlink-to-file", "dangling-symlink", "fifo", "char-device", "folder"]
KIND_WORD = {  # how the refusal names what is there
    "symlink-to-file": "symbolic link",
    "dangling-symlink": "symbolic link",
    "fifo": "FIFO",
    "char-device": "character device",
    "folder": "folder",
}


def make_target(kind: str, path: Path, elsewhere: Path) -> None:
    """Put a `kind` where the output goes; links point into `elsewhere`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    elsewhere.mkdir(exist_ok=True)
    if kind == "regular-file":
        path.write_bytes(OLD)
    elif kind == "symlink-to-file":
        (elsewhere / "precious").write_bytes(PRECIOUS)
        path.symlink_to(elsewhere / "precious")
    elif kind == "dangling-symlink":  # e.g. planted to make us create /etc/cron.d/x
        path.symlink_to(elsewhere / "must-not-be-created")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "char-device":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # a private /dev/zero
    elif kind == "folder":
        path.mkdir()
        (path / "inside").write_bytes(OLD)
    else:
        raise AssertionError(kind)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("kit")
    key = base / "signing.key"
    shutil.copyfile(KEY, key)
    key.chmod(0o600)
    unit = base / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, unit)
    core = base / "core"  # looks like a core; QEMU refuses its empty kernel at once
    core.mkdir()
    for name in ("vmlinuz", "initrd.img"):
        (core / name).write_bytes(b"")
    orders = base / "orders.csv"
    orders.write_text(f"serial,profile,site\n{SERIAL},{PROFILE},{SITE}\n")
    return {"key": key, "unit": unit, "core": core, "orders": orders}


@dataclass(frozen=True)
class Writer:
    """A command that writes one file: its argv ({target}: the output; {folder}: the folder it is in)."""

    argv: tuple[str, ...]
    folder: str  # under tmp_path/out
    name: str
    has_force: bool = True
    wrote: int = 0  # the exit code of a run that wrote its output
    in_subprocess: bool = False  # it starts QEMU
    check: Callable[[bytes], bool] = lambda data: bool(data)  # what the written output looks like


def _is_unit(data: bytes) -> bool:
    return json.loads(data)["serial"] == SERIAL


WRITERS = {
    "compile": Writer(
        ("compile", str(PROFILE), "--site", str(SITE), "--serial", SERIAL, "--key", "{key}", "-o", "{target}"),
        ".",
        "unit.json",
        check=_is_unit,
    ),
    "compile-orders": Writer(
        ("compile", "--orders", "{orders}", "--key", "{key}", "-o", "{folder}"),
        "units",
        f"{SERIAL}.json",
        check=_is_unit,
    ),
    "profile-init": Writer(
        ("profile", "init", "--model", "dell-poweredge-r650", "-o", "{target}"),
        ".",
        "mine.yaml",
        check=lambda data: b"dell-poweredge-r650" in data,
    ),
    "keys-init-private": Writer(("keys", "init", "--dir", "{folder}"), "keys", "signing.key", has_force=False),
    "keys-init-public": Writer(("keys", "init", "--dir", "{folder}"), "keys", "signing.pub", has_force=False),
    "boot-log": Writer(
        ("boot", "{unit}", "--core", "{core}", "--accel", "tcg", "--log", "{target}"),
        ".",
        "console.log",
        wrote=1,  # the fake core FAILED; the console log is written all the same
        in_subprocess=True,
        check=lambda data: b"qemu" in data,
    ),
}


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("writer", list(WRITERS), ids=list(WRITERS))
def test_an_existing_output(writer: str, target: str, force: bool, kit: dict[str, Path], tmp_path: Path) -> None:
    w = WRITERS[writer]
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    folder = out / w.folder
    path = folder / w.name
    make_target(target, path, elsewhere)
    replaces = target == "regular-file" and force and w.has_force
    if replaces and writer == "boot-log" and QEMU is None:
        pytest.skip("replacing the log means booting (QEMU is not installed)")
    before = _tree(out, elsewhere)
    subst = {"{target}": str(path), "{folder}": str(folder), **{f"{{{k}}}": str(v) for k, v in kit.items()}}
    argv = [subst.get(a, a) for a in w.argv] + (["--force"] if force else [])
    run = oemkit(argv, subprocess_=w.in_subprocess)
    assert "Traceback" not in run.out, run.out
    assert leftovers(out, elsewhere) == [], "a temporary file was left behind"
    if replaces:
        assert run.code == w.wrote, run.out
        assert stat.S_ISREG(os.lstat(path).st_mode)
        data = path.read_bytes()
        assert data != OLD and w.check(data), data[:200]
        assert set(_tree(out, elsewhere)) == set(before), "replacing an output created or removed other files"
        return
    assert run.code == 2, run.out
    assert _tree(out, elsewhere) == before, "a refused run changed what was there"
    if target == "char-device":
        assert stat.S_ISCHR(os.lstat(path).st_mode), "the device node was replaced"
    if force and not w.has_force:
        assert "--force" in run.out  # a usage error: there is no such option
        return
    assert str(path) in run.out, run.out
    if target == "regular-file":
        assert "exists; refusing to replace" in run.out
        if w.has_force:
            assert "--force" in run.out, "the refusal should say how to replace it"
    elif w.has_force:
        assert KIND_WORD[target] in run.out, run.out


@pytest.mark.parametrize(
    "writer",
    [
        "compile",
        "compile-orders",
        "profile-init",
        "boot-log",
    ],
)
@pytest.mark.parametrize("target", ["symlink-to-file", "fifo", "folder"])
def test_refusing_what_force_never_replaces_does_not_suggest_force(
    writer: str, target: str, kit: dict[str, Path], tmp_path: Path
) -> None:
    w = WRITERS[writer]
    folder = tmp_path / "out" / w.folder
    path = folder / w.name
    make_target(target, path, tmp_path / "elsewhere")
    subst = {"{target}": str(path), "{folder}": str(folder), **{f"{{{k}}}": str(v) for k, v in kit.items()}}
    run = oemkit([subst.get(a, a) for a in w.argv] + ["--force"], subprocess_=w.in_subprocess)
    assert run.code == 2, run.out
    assert "give --force" not in run.out, run.out


# ----------------------------------------------------------------------------- an order is refused whole, or sealed
ROWS = [
    (SERIAL, PROFILE, SITE),
    ("J30ABC13", PROFILE, REPO / "profiles" / "sites" / "retail-muc02.yaml"),
    ("J30ABC14", PROFILE, SITE),
]


@pytest.mark.parametrize("taken", ["regular-file", "symlink-to-file", "fifo", "char-device", "folder"])
@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
def test_an_order_that_would_replace_any_unit_is_refused_whole(
    taken: str, force: bool, kit: dict[str, Path], tmp_path: Path
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text("serial,profile,site\n" + "".join(f"{s},{p},{t}\n" for s, p, t in ROWS))
    units, elsewhere = tmp_path / "units", tmp_path / "elsewhere"
    make_target(taken, units / "J30ABC13.json", elsewhere)  # the second row's unit
    before = _tree(units, elsewhere)
    argv = ["compile", "--orders", str(orders), "--key", str(kit["key"]), "-o", str(units)]
    run = oemkit(argv + (["--force"] if force else []))
    assert "Traceback" not in run.out
    assert leftovers(units, elsewhere) == []
    if taken == "regular-file" and force:
        assert run.code == 0, run.out
        assert sorted(p.name for p in units.iterdir()) == [f"{s}.json" for s, _, _ in ROWS]
        assert _is_unit((units / f"{SERIAL}.json").read_bytes())
        assert json.loads((units / "J30ABC13.json").read_bytes())["serial"] == "J30ABC13"
        return
    assert run.code == 2, run.out
    assert str(units / "J30ABC13.json") in run.out
    assert "nothing was sealed" in run.out
    assert _tree(units, elsewhere) == before, "a refused order wrote something"


# ------------------------------------------------------------------------ a refused compile leaves nothing at all
@pytest.mark.parametrize("existing", [False, True], ids=["no-earlier-output", "earlier-output-with-force"])
def test_a_compile_refused_for_an_invalid_profile_leaves_nothing(
    existing: bool, kit: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "unit.json"
    if existing:
        target.write_bytes(OLD)
    argv = [
        "compile",
        str(BROKEN),
        "--site",
        str(SITE),
        "--serial",
        SERIAL,
        "--key",
        str(kit["key"]),
        "-o",
        str(target),
    ]
    run = oemkit(argv + (["--force"] if existing else []))
    assert run.code == 1, run.out
    assert "Traceback" not in run.out
    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == (["unit.json"] if existing else [])
    if existing:
        assert target.read_bytes() == OLD, "an invalid profile replaced the earlier unit config"


def test_an_order_row_refused_for_an_invalid_profile_writes_only_the_good_rows(
    kit: dict[str, Path], tmp_path: Path
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(f"serial,profile,site\n{SERIAL},{PROFILE},{SITE}\nJ30ABC13,{BROKEN},{SITE}\n")
    units = tmp_path / "units"
    run = oemkit(["compile", "--orders", str(orders), "--key", str(kit["key"]), "-o", str(units)])
    assert run.code == 1, run.out
    assert leftovers(units) == []
    assert sorted(p.name for p in units.iterdir()) == [f"{SERIAL}.json"]


# ------------------------------------------------------------------------- facts from-dmi only creates a new tree
FROM_DMI_TARGETS = ["regular-file", "symlink-to-file", "dangling-symlink", "fifo", "char-device", "non-empty-folder"]


def _from_dmi(path: Path, elsewhere: Path, target: str) -> tuple[Run, dict[str, tuple[str, object]]]:
    make_target("folder" if target == "non-empty-folder" else target, path, elsewhere)
    before = _tree(path.parent, elsewhere)
    dump = samples_dir() / R650_DUMP
    return oemkit(["facts", "from-dmi", str(dump), "--serial", SERIAL, "-o", str(path)]), before


@pytest.mark.parametrize("target", FROM_DMI_TARGETS)
def test_facts_from_dmi_never_replaces_what_is_there(target: str, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    run, before = _from_dmi(out / "box", elsewhere, target)
    assert run.code != 0, run.out
    assert "Traceback" not in run.out
    assert str(out / "box") in run.out
    assert _tree(out, elsewhere) == before, "a refused from-dmi changed what was there"
    assert leftovers(out, elsewhere) == []


@pytest.mark.parametrize("target", FROM_DMI_TARGETS)
def test_facts_from_dmi_refuses_an_existing_output_with_exit_2(target: str, tmp_path: Path) -> None:
    run, _ = _from_dmi(tmp_path / "out" / "box", tmp_path / "elsewhere", target)
    assert run.code == 2, run.out


@pytest.mark.parametrize("target", ["new-path", "empty-folder"])
def test_facts_from_dmi_creates_a_new_tree(target: str, tmp_path: Path) -> None:
    box = tmp_path / "out" / "box"
    box.parent.mkdir()
    if target == "empty-folder":
        box.mkdir()
    run = oemkit(["facts", "from-dmi", str(samples_dir() / R650_DUMP), "--serial", SERIAL, "-o", str(box)])
    assert run.code == 0, run.out
    assert (box / "sys" / "class" / "dmi" / "id" / "product_name").read_text().strip() == "PowerEdge R650"
    assert leftovers(box) == []


# --------------------------------------------------------------- first boot's host files stay under its --root
@pytest.mark.parametrize("linked", ["etc", "var"])  # the host files; the agent's own state folder
def test_firstboot_run_writes_nothing_outside_its_root(linked: str, kit: dict[str, Path], tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "target", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / linked).symlink_to(elsewhere)  # planted, or copied from an image with absolute links
    dump = samples_dir() / R650_DUMP
    argv = ["firstboot", "run", str(kit["unit"]), "--pubkey", str(PUB), "--facts", str(dump), "--root", str(root)]
    run = oemkit(argv, subprocess_=True)
    assert "Traceback" not in run.out
    assert list(elsewhere.iterdir()) == [], f"written outside --root: {sorted(p.name for p in elsewhere.iterdir())}"
