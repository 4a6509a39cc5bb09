"""Hostile inputs ("Every door shut"): special files given where a file is read, and text that is not what it claims.

CLASS 1 — every input file is opened once through `fsutil.read_regular` / `oemkit.inputs.read_input`: a FIFO, a
device, a folder, a symlink to a FIFO or an oversized file is refused with exit 2 and a located
`FILE: ... cannot read KIND: REASON` message, never a hang and never a traceback. A symlink to a regular file is
fine. FIFOs and /dev/zero (the inputs that used to hang or eat memory) run the real `python -m oemkit` in a
subprocess with a timeout and a memory cap; the other special files run in-process under an alarm.

CLASS 9 — encodings and keys: an orders CSV that is not UTF-8 (Latin-1, UTF-16) or holds a control character is
refused at its line:col; a UTF-8 BOM is fine; a signing key others may read works, with a chmod 600 warning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypervisor_core.facts import probe
from oemkit.catalog.store import load_catalog
from oemkit.hardware.dmi import read_report
from oemkit.hardware.facts_tree import build_tree
from oemkit.inputs import LIMITS

from . import bounded
from .bounded import Run
from .conftest import REPO, samples_dir
from .firstboot_kit import KEY, PUB, R650_DUMP, compile_to

PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"
SERIAL = "J30ABC12"
TIMEOUT = 30  # seconds: a refusal takes well under one; reaching this means the command hung
OVERSIZE = 2 * max(LIMITS.values())  # beyond every bound (a sparse file: no disk is used)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


# ------------------------------------------------------------------------------------------------ running oemkit
def oemkit_subprocess(args: list[str], cwd: Path | None = None) -> Run:
    return bounded.oemkit_subprocess(args, timeout=TIMEOUT, cwd=cwd)


def oemkit_inprocess(args: list[str]) -> Run:
    return bounded.oemkit_inprocess(args, timeout=TIMEOUT)


def assert_clean_refusal(run: Run, path: Path, *wanted: str, kind: str | None = None) -> None:
    """Exit 2, no traceback, the file named; `wanted` texts in the message; `kind`: it says `cannot read ...KIND`
    (any words before it: "signing key", "public key")."""
    assert run.code == 2, f"exit {run.code}, expected 2:\n{run.out}"
    assert "Traceback" not in run.out, run.out
    assert str(path) in run.out, f"{path} is not named:\n{run.out}"
    for text in wanted:
        assert text in run.out, f"{text!r} not in:\n{run.out}"
    if kind is not None:
        assert re.search(rf"cannot read [\w -]*{kind}: ", run.out), f"no 'cannot read ...{kind}: ' in:\n{run.out}"


# ------------------------------------------------------------------------------------------- the world of inputs
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good inputs every command needs beside the hostile one: a private key, a sealed unit, a facts JSON, a dump,
    a folder that looks like a core (so `boot` would go on to QEMU only after reading its inputs)."""
    base = tmp_path_factory.mktemp("world")
    key = base / "signing.key"
    shutil.copyfile(KEY, key)
    key.chmod(0o600)
    unit = base / "unit.json"
    compile_to(PROFILE, SITE, SERIAL, unit)
    dump = base / "dump.txt"  # a neutral name: the content is what counts
    shutil.copyfile(samples_dir() / R650_DUMP, dump)
    catalog = load_catalog(REPO / "hardware_catalog")
    report = read_report(dump)
    tree = base / "tree"
    build_tree(tree, report, catalog.get(catalog.identify(report.identity).model_id), SERIAL)
    facts = base / "facts.json"
    facts.write_text(json.dumps(probe(tree).to_dict()))
    core = base / "core"
    core.mkdir()
    for name in ("vmlinuz", "initrd.img"):
        (core / name).write_bytes(b"")
    return {"key": key, "unit": unit, "dump": dump, "facts": facts, "core": core, "pub": PUB}


SPECIALS = ["fifo", "dev-zero", "char-device", "folder", "symlink-to-fifo", "oversized"]
IN_SUBPROCESS = {"fifo", "dev-zero"}  # what blocked or read without end before: the real process, really bounded
REASON = {
    "fifo": "a FIFO",
    "symlink-to-fifo": "a FIFO",
    "dev-zero": "a character device",
    "char-device": "a character device",
    "folder": "a folder",
    "oversized": "the limit is",
}


def make_special(kind: str, folder: Path, name: str) -> Path:
    """A hostile file named `name` in `folder` (/dev/zero itself for dev-zero)."""
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        return Path("/dev/zero")
    elif kind == "char-device":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # a private /dev/zero
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink-to-fifo":
        os.mkfifo(folder / "the-fifo")
        path.symlink_to(folder / "the-fifo")
    elif kind == "oversized":
        with open(path, "wb") as f:
            f.truncate(OVERSIZE)
    else:
        raise AssertionError(kind)
    return path


@dataclass(frozen=True)
class Door:
    """One place a command reads a file: its argv ({bad} is the hostile file), the hostile file's name (a .json
    is a facts file to --facts, anything else a dump), and what the refusal says."""

    argv: tuple[str, ...]
    name: str = "bad.yaml"
    kind: str = ""  # "cannot read ... KIND: " (empty: the YAML layers, whatever word they use)
    folder_ok: str | None = None  # a folder is a legitimate input here; its refusal says this instead


P, S = str(PROFILE), str(SITE)
DOORS = {
    "profile-validate": Door(("profile", "validate", "{bad}")),
    "profile-validate-site": Door(("profile", "validate", P, "--site", "{bad}")),
    "profile-validate-unit": Door(("profile", "validate", P, "--site", S, "--unit", "{bad}")),
    "profile-show": Door(("profile", "show", "{bad}")),
    "profile-show-site": Door(("profile", "show", P, "--site", "{bad}")),
    "profile-diff-old": Door(("profile", "diff", "{bad}", P)),
    "profile-diff-new": Door(("profile", "diff", P, "{bad}")),
    "compile-profile": Door(("compile", "{bad}", "--site", S, "--serial", SERIAL, "--key", "{key}", "-o", "{out}")),
    "compile-site": Door(("compile", P, "--site", "{bad}", "--serial", SERIAL, "--key", "{key}", "-o", "{out}")),
    "compile-unit": Door(
        ("compile", P, "--site", S, "--serial", SERIAL, "--unit", "{bad}", "--key", "{key}", "-o", "{out}")
    ),
    "compile-key": Door(
        ("compile", P, "--site", S, "--serial", SERIAL, "--key", "{bad}", "-o", "{out}"), "signing.key", "key"
    ),
    "compile-orders": Door(
        ("compile", "--orders", "{bad}", "--key", "{key}", "-o", "{outdir}"), "orders.csv", "orders"
    ),
    "catalog-identify": Door(
        ("catalog", "identify", "{bad}"), "dump.txt", "dump", folder_ok="not a /sys/class/dmi/id folder"
    ),
    "facts-from-dmi": Door(
        ("facts", "from-dmi", "{bad}", "--serial", SERIAL, "-o", "{outdir}"),
        "dump.txt",
        "dump",
        folder_ok="not a /sys/class/dmi/id folder",
    ),
    "boot-unit": Door(("boot", "{bad}", "--core", "{core}", "--accel", "tcg"), "unit.json", "unit config"),
    "preview-unit": Door(
        ("firstboot", "preview", "{bad}", "--pubkey", "{pub}", "--facts", "{facts}"), "unit.json", "unit config"
    ),
    "preview-pubkey": Door(
        ("firstboot", "preview", "{unit}", "--pubkey", "{bad}", "--facts", "{facts}"), "signing.pub", "key"
    ),
    "preview-facts-json": Door(
        ("firstboot", "preview", "{unit}", "--pubkey", "{pub}", "--facts", "{bad}"), "facts.json", "facts"
    ),
    "preview-facts-dump": Door(
        ("firstboot", "preview", "{unit}", "--pubkey", "{pub}", "--facts", "{bad}"), "dump.txt", "dump"
    ),
    "run-unit": Door(
        ("firstboot", "run", "{bad}", "--pubkey", "{pub}", "--root", "{root}"), "unit.json", "unit config"
    ),
    "run-pubkey": Door(("firstboot", "run", "{unit}", "--pubkey", "{bad}", "--root", "{root}"), "signing.pub", "key"),
    "run-facts-json": Door(
        ("firstboot", "run", "{unit}", "--pubkey", "{pub}", "--facts", "{bad}", "--root", "{root}"),
        "facts.json",
        "facts",
    ),
}


def _argv(door: Door, bad: Path, world: dict[str, Path], tmp: Path) -> list[str]:
    subst = {
        "{bad}": str(bad),
        "{out}": str(tmp / "out" / "unit.json"),
        "{outdir}": str(tmp / "out" / "units"),
        "{root}": str(tmp / "out" / "root"),
        **{f"{{{k}}}": str(v) for k, v in world.items()},
    }
    return [subst.get(a, a) for a in door.argv]


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("door", list(DOORS), ids=list(DOORS))
def test_special_file_input_is_refused(door: str, special: str, world: dict[str, Path], tmp_path: Path) -> None:
    d = DOORS[door]
    if special == "folder" and door in ("preview-facts-dump", "preview-facts-json", "run-facts-json"):
        pytest.skip("a folder is a facts tree to --facts (probed as a box's root), by design")
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (tmp_path / "out").mkdir()
    bad = make_special(special, hostile, d.name)
    argv = _argv(d, bad, world, tmp_path)
    run = oemkit_subprocess(argv) if special in IN_SUBPROCESS else oemkit_inprocess(argv)
    if special == "folder" and d.folder_ok:
        assert_clean_refusal(run, bad, d.folder_ok)
    else:
        # /dev/zero has no .json suffix: --facts reads it as a dump
        kind = "dump" if special == "dev-zero" and d.kind == "facts" else d.kind
        assert_clean_refusal(run, bad, REASON[special], kind=kind)
    assert list((tmp_path / "out").iterdir()) == [], "a refused input still left an output"


@needs_root
def test_a_private_device_node_is_still_a_device_after_being_refused(tmp_path: Path) -> None:
    dev = make_special("char-device", tmp_path, "profile.yaml")
    assert oemkit_inprocess(["profile", "validate", str(dev)]).code == 2
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


# --------------------------------------------------------------------- a symlink to a regular file is just a file
def _link(tmp: Path, target: Path, name: str) -> str:
    link = tmp / name
    link.symlink_to(target)
    return str(link)


@pytest.mark.parametrize("case", ["profile", "site", "unit-overlay", "key", "orders", "dump", "preview-inputs", "diff"])
def test_a_symlink_to_a_regular_file_is_read(case: str, world: dict[str, Path], tmp_path: Path) -> None:
    out = str(tmp_path / "unit.json")
    if case == "profile":
        argv = ["profile", "validate", _link(tmp_path, PROFILE, "p.yaml"), "--site", S]
    elif case == "site":
        argv = ["profile", "validate", P, "--site", _link(tmp_path, SITE, "s.yaml")]
    elif case == "unit-overlay":
        unit = tmp_path / "real-unit.yaml"
        unit.write_text(f"apiVersion: oemkit/v1\nkind: UnitOverlay\nserial: {SERIAL}\n")
        argv = ["compile", P, "--site", S, "--unit", _link(tmp_path, unit, "u.yaml"), "--serial", SERIAL]
        argv += ["--key", str(world["key"]), "-o", out]
    elif case == "key":
        argv = ["compile", P, "--site", S, "--serial", SERIAL, "--key", _link(tmp_path, world["key"], "k"), "-o", out]
    elif case == "orders":
        csv = tmp_path / "real.csv"
        csv.write_text(f"serial,profile,site\n{SERIAL},{PROFILE},{SITE}\n")
        argv = ["compile", "--orders", _link(tmp_path, csv, "o.csv"), "--key", str(world["key"])]
        argv += ["-o", str(tmp_path / "units")]
    elif case == "dump":
        argv = ["catalog", "identify", _link(tmp_path, world["dump"], "d.txt")]
    elif case == "preview-inputs":
        argv = ["firstboot", "preview", _link(tmp_path, world["unit"], "u.json")]
        argv += ["--pubkey", _link(tmp_path, PUB, "k.pub"), "--facts", _link(tmp_path, world["facts"], "f.json")]
    else:
        argv = ["profile", "diff", _link(tmp_path, PROFILE, "a.yaml"), _link(tmp_path, PROFILE, "b.yaml")]
    run = oemkit_inprocess(argv)
    assert run.code == 0, run.out
    assert "Traceback" not in run.out


# ------------------------------------------------- a site validated alone looks at every ../*.yaml for its profile
@pytest.fixture
def profiles_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    return tmp_path / "profiles"


@pytest.mark.parametrize("where", ["beside-the-profiles", "beside-the-sites"])
def test_a_fifo_among_the_candidate_profiles_does_not_hang(where: str, profiles_copy: Path) -> None:
    fifo = profiles_copy / "something.yaml" if where == "beside-the-profiles" else profiles_copy / "sites" / "x.yaml"
    os.mkfifo(fifo)
    run = oemkit_subprocess(["profile", "validate", str(profiles_copy / "sites" / "retail-ber01.yaml")])
    assert "Traceback" not in run.out
    # An unrelated special file may be skipped (the site still validates against its real profile) or reported;
    # if reported, it must be named.
    assert run.code in (0, 2), run.out
    if run.code == 0:
        assert "valid" in run.out
    else:
        assert str(fifo) in run.out
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_fifo_in_the_profiles_place_is_named(profiles_copy: Path) -> None:
    fifo = profiles_copy / "retail-branch.yaml"
    fifo.unlink()
    os.mkfifo(fifo)
    """The site's profile cannot be found because a FIFO stands where it was: the FIFO is named, not skipped."""
    run = oemkit_subprocess(["profile", "validate", str(profiles_copy / "sites" / "retail-ber01.yaml")])
    assert_clean_refusal(run, fifo, "a FIFO")


# ------------------------------------------------------------------------------- CLASS 9: the orders' encoding
ROWS = [f"{SERIAL},{PROFILE},{SITE}", f"J30ABC13,{PROFILE},{REPO / 'profiles/sites/retail-muc02.yaml'}"]


def _orders_bytes(case: str) -> tuple[bytes, int, int]:
    """An orders CSV that is not plain UTF-8 text, and the line:col of its first bad character."""
    header = "serial,profile,site"
    good = "\n".join([header, ROWS[0]]) + "\n"
    if case == "latin1-serial":  # row 3: J30ABé1 (é is 0xe9 in Latin-1)
        return (good + f"J30AB\xe91,{PROFILE},{SITE}\n").encode("latin-1"), 3, 6
    if case == "latin1-profile-path":  # a Latin-1 "é" in a file name
        prefix = f"{SERIAL},{REPO}/profiles/r"
        line = f"{prefix}\xe9tail-branch.yaml,{SITE}\n"
        return (header + "\n" + line).encode("latin-1"), 2, len(prefix) + 1
    if case == "utf16-with-bom":
        return good.encode("utf-16"), 1, 1
    if case == "nul-in-a-serial":
        return (good + f"J30A\x00BC13,{PROFILE},{SITE}\n").encode(), 3, 5
    if case == "esc-in-a-path":  # a terminal escape sequence: ESC [ 3 1 m
        prefix = f"{SERIAL},{PROFILE},"
        return (header + "\n" + prefix + f"\x1b[31m{SITE}\n").encode(), 2, len(prefix) + 1
    if case == "del-in-a-serial":
        return (header + "\n" + f"J30\x7fABC12,{PROFILE},{SITE}\n").encode(), 2, 4
    if case == "utf16-without-bom":  # "s\0e\0..." is UTF-8 with NULs: refused at the first NUL
        return good.encode("utf-16-le"), 1, 2
    raise AssertionError(case)


ORDER_CASES = [
    "latin1-serial",
    "latin1-profile-path",
    "utf16-with-bom",
    "nul-in-a-serial",
    "esc-in-a-path",
    "del-in-a-serial",
    "utf16-without-bom",
]


@pytest.mark.parametrize("case", ORDER_CASES)
def test_orders_that_are_not_plain_utf8_are_refused_at_line_and_column(
    case: str, world: dict[str, Path], tmp_path: Path
) -> None:
    data, line, col = _orders_bytes(case)
    orders = tmp_path / "orders.csv"
    orders.write_bytes(data)
    out = tmp_path / "units"
    run = oemkit_inprocess(["compile", "--orders", str(orders), "--key", str(world["key"]), "-o", str(out)])
    assert_clean_refusal(run, orders, f"{orders}:{line}:{col}:")
    if case == "utf16-with-bom":
        assert "UTF-16" in run.out
    assert not out.exists(), "a refused order created its output folder"


def test_an_orders_csv_with_a_utf8_bom_is_sealed(world: dict[str, Path], tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_bytes(b"\xef\xbb\xbf" + ("serial,profile,site\n" + "\n".join(ROWS) + "\n").encode())
    out = tmp_path / "units"
    run = oemkit_inprocess(["compile", "--orders", str(orders), "--key", str(world["key"]), "-o", str(out)])
    assert run.code == 0, run.out
    assert sorted(p.name for p in out.iterdir()) == [f"{SERIAL}.json", "J30ABC13.json"]


@pytest.mark.parametrize("what", ["orders-after-a-utf8-e-acute", "orders-after-a-bom", "profile-after-a-utf8-e-acute"])
def test_the_column_of_a_latin1_byte_counts_characters(what: str, world: dict[str, Path], tmp_path: Path) -> None:
    if what.startswith("profile"):
        path = tmp_path / "p.yaml"
        path.write_bytes("metadata:\n  name: ré".encode() + b"\xe9\n")  # line 2: '  name: ré' is 10 characters
        run = oemkit_inprocess(["profile", "validate", str(path)])
        line, col = 2, 11
    else:
        path = tmp_path / "orders.csv"
        if what.endswith("bom"):  # the BOM is no column: 'serial,profile,site' is 19 characters
            path.write_bytes(b"\xef\xbb\xbfserial,profile,site\xe9\n")
            line, col = 1, 20
        else:
            path.write_bytes(f"serial,profile,site\n{SERIAL},ré,".encode() + b"\xe9\n")
            line, col = 2, len(f"{SERIAL},ré,") + 1
        run = oemkit_inprocess(
            ["compile", "--orders", str(path), "--key", str(world["key"]), "-o", str(tmp_path / "o")]
        )
    assert_clean_refusal(run, path, f"{path}:{line}:{col}:")


def test_control_characters_in_orders_are_counted_in_characters(world: dict[str, Path], tmp_path: Path) -> None:
    """The reference behaviour for the test above: the same position, an ESC instead of a Latin-1 byte."""
    path = tmp_path / "orders.csv"
    path.write_bytes(f"serial,profile,site\n{SERIAL},ré,\x1b\n".encode())
    run = oemkit_inprocess(["compile", "--orders", str(path), "--key", str(world["key"]), "-o", str(tmp_path / "o")])
    assert_clean_refusal(run, path, f"{path}:2:{len(f'{SERIAL},ré,') + 1}:")


# ----------------------------------------------------------------------------------- CLASS 9: the key's mode
@pytest.mark.parametrize(
    ("mode", "warns"),
    [(0o600, False), (0o400, False), (0o640, True), (0o644, True)],
    ids=["0600", "0400", "0640", "0644"],
)
@pytest.mark.parametrize("how", ["one-unit", "orders"])
def test_a_signing_key_others_may_read_works_with_a_warning(mode: int, warns: bool, how: str, tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    shutil.copyfile(KEY, key)
    key.chmod(mode)
    if how == "one-unit":
        argv = ["compile", P, "--site", S, "--serial", SERIAL, "--key", str(key), "-o", str(tmp_path / "u.json")]
    else:
        orders = tmp_path / "orders.csv"
        orders.write_text(f"serial,profile,site\n{ROWS[0]}\n")
        argv = ["compile", "--orders", str(orders), "--key", str(key), "-o", str(tmp_path / "units")]
    run = oemkit_inprocess(argv)
    assert run.code == 0, run.out
    assert ("chmod 600" in run.err) is warns, run.err
    if warns:
        assert str(key) in run.err
        assert f"{mode:04o}" in run.err
    assert "chmod 600" not in run.out.replace(run.err, ""), "the warning belongs on stderr"


# ------------------------------------------------------------------- dumps with a stray value in a number field
STRAY = {
    "thread-count-not-a-number": ("Thread Count: ", "Thread Count: lots"),
    "number-of-devices-not-a-number": ("Number Of Devices: ", "Number Of Devices: 16x"),
    "dimm-size-beyond-a-float": ("Size: 16 GB", "Size: " + "9" * 400 + " GB"),
}


def _stray_dump(case: str, tmp: Path) -> Path:
    field, replacement = STRAY[case]
    lines = (samples_dir() / R650_DUMP).read_text().splitlines()
    hit = next(i for i, line in enumerate(lines) if line.strip().startswith(field))
    lines[hit] = "\t" + replacement
    dump = tmp / "box.txt"
    dump.write_text("\n".join(lines) + "\n")
    return dump


@pytest.mark.parametrize("case", list(STRAY))
@pytest.mark.parametrize("command", ["catalog-identify", "facts-from-dmi", "preview-facts"])
def test_a_stray_value_in_a_dump_number_field_is_no_traceback(
    command: str, case: str, world: dict[str, Path], tmp_path: Path
) -> None:
    dump = _stray_dump(case, tmp_path)
    if command == "catalog-identify":
        argv = ["catalog", "identify", str(dump)]
    elif command == "facts-from-dmi":
        argv = ["facts", "from-dmi", str(dump), "--serial", SERIAL, "-o", str(tmp_path / "tree")]
    else:
        argv = ["firstboot", "preview", str(world["unit"]), "--pubkey", str(PUB), "--facts", str(dump)]
    run = oemkit_inprocess(argv)  # an exception fails the test there, with its traceback
    assert "Traceback" not in run.out, run.out
    assert run.code in (0, 2), run.out  # identified (the value is not needed) or refused, located
    if run.code == 2:
        assert str(dump) in run.out


# -------------------------------------------------------------- a catalog folder (--catalog) with a hostile model
@pytest.mark.parametrize("special", [*(s for s in SPECIALS if s != "dev-zero"), "symlink-to-dev-zero"])
@pytest.mark.parametrize("command", ["catalog-list", "catalog-identify", "profile-validate"])
def test_a_hostile_file_among_the_catalog_models_is_refused(
    command: str, special: str, world: dict[str, Path], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO / "hardware_catalog", catalog)
    if special == "symlink-to-dev-zero":
        bad = catalog / "dell" / "zz-model.yaml"
        bad.symlink_to("/dev/zero")
    else:
        bad = make_special(special, catalog / "dell", "zz-model.yaml")
    argv = ["--catalog", str(catalog)]
    argv += {
        "catalog-list": ["catalog", "list"],
        "catalog-identify": ["catalog", "identify", str(world["dump"])],
        "profile-validate": ["profile", "validate", P, "--site", S],
    }[command]
    run = oemkit_subprocess(argv) if special in ("fifo", "symlink-to-dev-zero") else oemkit_inprocess(argv)
    reason = REASON.get(special, "a character device")
    assert_clean_refusal(run, bad, reason)


# ------------------------------------------------------------------------------ CLASS 9: the orders' CSV structure
MUC = REPO / "profiles" / "sites" / "retail-muc02.yaml"
CSV_CASES = [
    # (id, CSV text, expected exit, expected location or None)
    pytest.param(
        "huge-header-field",
        "serial,profile,site" + "x" * 200_000 + f"\n{SERIAL},{PROFILE},{SITE}\n",
        2,
        ":1:",
        id="huge-header-field",
    ),
    pytest.param(
        "huge-field-on-line-4",
        f"serial,profile,site\n{SERIAL},{PROFILE},{SITE}\nJ30ABC13,{PROFILE},{MUC}\nJ30ABC14,{'x' * 200_000},{SITE}\n",
        2,
        ":4:1:",
        id="huge-field-on-line-4",
    ),
    pytest.param(
        "unbalanced-quote",  # the quote opened on line 3 closes on line 5: the order of line 4 vanishes
        f'serial,profile,site\n{SERIAL},{PROFILE},{SITE}\nJ30ABC13,"{PROFILE},{SITE}\n'
        f'J30ABC14,{PROFILE},{SITE}\nJ30ABC15,{PROFILE}",{SITE}\nJ30ABC16,{PROFILE},{SITE}\n',
        2,
        ":3:",
        id="unbalanced-quote",
    ),
    pytest.param(
        "more-cells-than-the-header",  # a model given without a model column
        f"serial,profile,site\n{SERIAL},{PROFILE},{SITE},hpe-proliant-dl360-gen10\n",
        2,
        ":2:",
        id="more-cells-than-the-header",
    ),
    pytest.param("crlf", f"serial,profile,site\r\n{SERIAL},{PROFILE},{SITE}\r\nJ30ABC13,{PROFILE},{MUC}\r\n", 0, None),
    pytest.param("cr-only", f"serial,profile,site\r{SERIAL},{PROFILE},{SITE}\rJ30ABC13,{PROFILE},{MUC}\r", 0, None),
    pytest.param(
        "blank-lines", f"serial,profile,site\n\n{SERIAL},{PROFILE},{SITE}\n\nJ30ABC13,{PROFILE},{MUC}\n\n", 0, None
    ),
]


@pytest.mark.parametrize(("case", "text", "code", "where"), CSV_CASES)
def test_orders_csv_structure(
    case: str, text: str, code: int, where: str | None, world: dict[str, Path], tmp_path: Path
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_bytes(text.encode())
    out = tmp_path / "units"
    run = oemkit_inprocess(["compile", "--orders", str(orders), "--key", str(world["key"]), "-o", str(out)])
    if code == 0:
        assert run.code == 0, run.out
        assert sorted(p.name for p in out.iterdir()) == [f"{SERIAL}.json", "J30ABC13.json"]
        return
    assert_clean_refusal(run, orders, f"{orders}{where}")
    assert not out.exists(), "a refused order sealed units"


def test_the_factory_bounds_what_the_appliance_reads_as_the_appliance_does() -> None:
    from hypervisor_core import config
    from hypervisor_core.facts import MAX_FACTS_BYTES

    assert (LIMITS["unit config"], LIMITS["facts"]) == (config.MAX_BYTES, MAX_FACTS_BYTES)
