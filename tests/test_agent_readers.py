"""Every input of first boot is read once, bounded, and only if it is a regular file; what cannot be read or parsed
is refused with its reason. Never a hang (a FIFO), never a read without end (/dev/zero), never a traceback or an
"internal error": through the factory's `oemkit firstboot preview` (exit 2, located) and the agent itself
(`python -m hypervisor_core`: a REFUSED line, then the OEMKIT-STATUS line, and no file but the status and report it
writes for every refused config — none at all when an input could not even be read)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hypervisor_core import config, firstboot
from hypervisor_core.facts import FactsError, parse_facts, probe
from oemkit.cli.app import app
from oemkit.errors import UnreadableInput
from oemkit.hardware.dmi import read_report

from .conftest import REPO
from .firstboot_kit import PUB, R650_DUMP, compile_to, facts_tree, status_line

PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"
SERIAL = "J30ABC12"
HANG_S = 20  # far above any of these runs (well under a second each); a FIFO would otherwise block forever
HEADROOM = 1 << 30  # address space a test may add: these inputs are a few MB; /dev/zero read to its end is not
STATUS_FILES = ["var/lib/oemkit/report.json", "var/lib/oemkit/status.json"]


@pytest.fixture(autouse=True)
def _never_hang() -> Iterator[None]:
    """A read that blocks is interrupted: the test fails with a reason instead of hanging the suite. A read without
    end (/dev/zero) is not interruptible, so the address space is capped too: it fails with MemoryError in this
    process rather than taking the whole machine's memory before the kernel kills something."""

    def expired(*_: Any) -> None:
        raise TimeoutError(f"no answer within {HANG_S} s: an input read hangs")

    with open("/proc/self/statm") as statm:
        in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = in_use + HEADROOM if soft == resource.RLIM_INFINITY else min(in_use + HEADROOM, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A sealed unit, the R650 box it is for (a facts tree), and that box's facts as JSON data."""
    base = tmp_path_factory.mktemp("kit")
    compile_to(PROFILE, SITE, SERIAL, base / "unit.json")
    box = facts_tree(R650_DUMP, SERIAL, base / "box")
    return base / "unit.json", box, json.loads(json.dumps(probe(box).to_dict()))


# ------------------------------------------------------------------------------------------- things to read
def _fifo(tmp: Path, name: str = "input") -> Path:
    path = tmp / name
    os.mkfifo(path)
    return path


def _fifo_link(tmp: Path, name: str = "input") -> Path:
    link = tmp / name
    link.symlink_to(_fifo(tmp, f"{name}.target"))
    return link


def _device(tmp: Path, name: str = "input") -> Path:
    """A private /dev/zero (char 1:5): endless bytes under a harmless name."""
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    path = tmp / name
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    return path


def _folder(tmp: Path, name: str = "input") -> Path:
    path = tmp / name
    path.mkdir()
    return path


def _written(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "internal error" not in text, text


def _preview(unit: Path, facts: Path, pubkey: Path = PUB) -> Any:
    result = CliRunner().invoke(
        app, ["firstboot", "preview", str(unit), "--pubkey", str(pubkey), "--facts", str(facts)]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    _no_traceback(result.output)
    return result


def _agent(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    """The agent's own entry point (`python -m hypervisor_core`), in this process so the alarm guards it."""
    root.mkdir(exist_ok=True)
    rc = firstboot.main(["--root", str(root), "--connect", "test:///default", *args])
    out = capsys.readouterr()
    _no_traceback(out.out + out.err)
    return rc, out.out, status_line(out.out)


def _refused(console: str, status: dict[str, Any], reason: str) -> None:
    """The REFUSED line says why, and the status line (the last) is FAILED with the same reason."""
    assert status["status"] == "FAILED" and reason in status["reason"], status
    refused = [line for line in console.splitlines() if line.startswith("REFUSED: ")]
    assert refused and reason in refused[-1], console


# ---------------------------------------------------------------------------------------- the unit config
Maker = Callable[[Path, Path], Path]  # (tmp_path, the sealed unit) → the path to give as the unit config
READ, PARSE = "read", "parse"  # refused when reading (nothing is written) or once read (status and report)
UNIT_CASES: dict[str, tuple[Maker, str, str]] = {
    "FIFO": (lambda tmp, _u: _fifo(tmp), READ, "a FIFO, not a regular file: refused"),
    "symlink to a FIFO": (lambda tmp, _u: _fifo_link(tmp), READ, "a FIFO, not a regular file: refused"),
    "/dev/zero": (lambda _t, _u: Path("/dev/zero"), READ, "a character device, not a regular file: refused"),
    "private device node": (lambda tmp, _u: _device(tmp), READ, "a character device, not a regular file: refused"),
    "folder": (lambda tmp, _u: _folder(tmp), READ, "a folder, not a regular file: refused"),
    "2 MB config": (
        lambda tmp, u: _written(tmp, "big.json", u.read_bytes() + b" " * (2 << 20)),
        READ,
        "bytes; the limit is 1048576",
    ),
    "lone surrogate": (
        lambda tmp, u: _written(tmp, "u.json", u.read_bytes().replace(SERIAL.encode(), b"J30\\ud800", 1)),
        PARSE,
        "unit config is not valid JSON (a lone surrogate in the string at serial: not Unicode text)",
    ),
    "lone surrogate in a list": (
        lambda tmp, u: _written(tmp, "u.json", b'{"schema": "oemkit.unit/v1", "x": [1, {"y": ["\\udfff"]}]}'),
        PARSE,
        "unit config is not valid JSON (a lone surrogate in the string at x[1].y[0]: not Unicode text)",
    ),
    "100,000-deep array": (
        lambda tmp, _u: _written(tmp, "deep.json", b"[" * 100_000 + b"]" * 100_000),
        PARSE,
        "unit config is not valid JSON (nested more than 64 levels deep)",
    ),
    "100,000-deep inside the config": (
        lambda tmp, u: _written(tmp, "u.json", u.read_bytes().replace(b"{", b'{"x": ' + b"[" * 100_000, 1)),
        PARSE,
        "unit config is not valid JSON (nested more than 64 levels deep)",
    ),
    "not UTF-8": (
        lambda tmp, _u: _written(tmp, "u16.json", '{"schema": "oemkit.unit/v1"}'.encode("utf-16")),
        PARSE,
        "unit config is not valid JSON (not UTF-8: byte 0xff at offset 0)",
    ),
}


@pytest.mark.parametrize("case", list(UNIT_CASES))
def test_preview_refuses_an_unreadable_unit_config(case: str, kit: tuple[Path, Path, Any], tmp_path: Path) -> None:
    unit, box, _ = kit
    make, _level, why = UNIT_CASES[case]
    path = make(tmp_path, unit)
    result = _preview(path, box)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"oemkit: error: {path}: ") and why in result.stderr, result.stderr


@pytest.mark.parametrize("case", list(UNIT_CASES))
def test_the_agent_refuses_an_unreadable_unit_config(
    case: str, kit: tuple[Path, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit, box, _ = kit
    make, level, why = UNIT_CASES[case]
    path = make(tmp_path, unit)
    root = tmp_path / "root"
    rc, console, status = _agent(capsys, root, "--config", str(path), "--pubkey", str(PUB), "--facts", str(box))
    assert rc == 1
    _refused(console, status, why)
    if level == READ:
        assert status["reason"].startswith(f"cannot read the unit config {path}: "), status
        assert list(root.iterdir()) == []  # nothing was read that could be trusted: nothing written
    else:
        assert _files(root) == STATUS_FILES  # as for any refused config: only the status and the report
        assert json.loads((root / STATUS_FILES[1]).read_text())["reason"] == status["reason"]


def test_a_deep_config_fails_cleanly_when_given_as_bytes(tmp_path: Path) -> None:
    """The size and depth bounds hold for the agent's library entry too (first_boot with bytes), before parsing."""
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a": "\\ud800"}', b" " * (2 << 20)):
        with pytest.raises(config.UnreadableConfig):
            config.load(raw, None)


# ------------------------------------------------------------------------------------------- the public key
KEY_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "FIFO": (_fifo, "a FIFO, not a regular file: refused"),
    "/dev/zero": (lambda _t: Path("/dev/zero"), "a character device, not a regular file: refused"),
    "private device node": (_device, "a character device, not a regular file: refused"),
    "folder": (_folder, "a folder, not a regular file: refused"),
    "100 KB": (lambda tmp: _written(tmp, "big.pub", b"A" * 100_000), "100000 bytes; the limit is 65536"),
    "not PEM": (lambda tmp: _written(tmp, "k.pub", b"\xff\xfe not a key\n"), "public key is not PEM"),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_an_unreadable_public_key_is_refused(
    case: str, kit: tuple[Path, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit, box, _ = kit
    make, why = KEY_CASES[case]
    key = make(tmp_path)
    preview = _preview(unit, box, key)
    assert preview.exit_code == 2 and f"{key}: " in preview.stderr and why in preview.stderr, preview.stderr
    root = tmp_path / "root"
    rc, console, status = _agent(capsys, root, "--config", str(unit), "--pubkey", str(key), "--facts", str(box))
    assert rc == 1 and str(key) in status["reason"]
    _refused(console, status, why)
    assert list(root.iterdir()) == []


# ----------------------------------------------------------------------------------------------- the facts
def _facts_json(tmp: Path, facts: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads(json.dumps(facts))
    change(data)
    return _written(tmp, "facts.json", json.dumps(data).encode())


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with value ... delete) the key at a dotted path such as nics.2.pci_address."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value

    return change


FactsMaker = Callable[[Path, dict[str, Any]], Path]
FACTS_CASES: dict[str, tuple[FactsMaker, str]] = {
    "FIFO named .json": (lambda tmp, _f: _fifo(tmp, "f.json"), "a FIFO, not a regular file: refused"),
    "FIFO (read as a dump)": (lambda tmp, _f: _fifo(tmp, "dump"), "a FIFO, not a regular file: refused"),
    "symlink to a FIFO": (lambda tmp, _f: _fifo_link(tmp, "f.json"), "a FIFO, not a regular file: refused"),
    "/dev/zero": (lambda _t, _f: Path("/dev/zero"), "a character device, not a regular file: refused"),
    "private device node .json": (
        lambda tmp, _f: _device(tmp, "f.json"),
        "a character device, not a regular file: refused",
    ),
    "5 MB facts": (lambda tmp, _f: _written(tmp, "f.json", b" " * (5 << 20)), "bytes; the limit is 4194304"),
    "a string for an address": (
        lambda tmp, f: _facts_json(tmp, f, _set("nics.2.pci_address", 5)),
        "facts: nics[2].pci_address: expected a string, got 5",
    ),
    "a string for a count": (
        lambda tmp, f: _facts_json(tmp, f, _set("cpus", "64")),
        'facts: cpus: expected an integer, got "64"',
    ),
    "a boolean for a size": (
        lambda tmp, f: _facts_json(tmp, f, _set("disks.0.size_bytes", True)),
        "facts: disks[0].size_bytes: expected an integer, got true",
    ),
    "a list for the identity": (
        lambda tmp, f: _facts_json(tmp, f, _set("dmi", [])),
        "facts: dmi: expected an object, got a list",
    ),
    "a missing key": (lambda tmp, f: _facts_json(tmp, f, _set("kvm", ...)), "facts: kvm: missing"),
    "an unknown key": (
        lambda tmp, f: _facts_json(tmp, f, _set("nics.0.firmware", "1.0")),
        "facts: nics[0]: unknown key 'firmware'",
    ),
    "not a PCI address": (
        lambda tmp, f: _facts_json(tmp, f, _set("nics.0.pci_address", "04:00.0")),
        'facts: nics[0].pci_address: "04:00.0" is not a PCI address',
    ),
    "a PCI address with a trailing line break": (
        lambda tmp, f: _facts_json(tmp, f, _set("nics.0.pci_address", "0000:31:00.0\n")),
        "facts: nics[0].pci_address: ",
    ),
    "an escape sequence in a disk model": (
        lambda tmp, f: _facts_json(tmp, f, _set("disks.0.model", "SSD\u001b[2J")),
        "holds a control character",
    ),
    "a path for a disk name": (
        lambda tmp, f: _facts_json(tmp, f, _set("disks.0.name", "../../etc")),
        'facts: disks[0].name: "../../etc" is not a device name',
    ),
    "a list, not an object": (lambda tmp, _f: _written(tmp, "f.json", b"[]"), "facts: expected an object, got a list"),
    "100,000-deep array": (
        lambda tmp, _f: _written(tmp, "f.json", b"[" * 100_000 + b"]" * 100_000),
        "facts: not valid JSON (nested more than 8 levels deep)",
    ),
    "lone surrogate": (
        lambda tmp, f: _facts_json(tmp, f, _set("nics.0.name", "\ud800")),
        "facts: not valid JSON (a lone surrogate in the string at nics[0].name: not Unicode text)",
    ),
}


@pytest.mark.parametrize("case", list(FACTS_CASES))
def test_unreadable_facts_are_refused(
    case: str, kit: tuple[Path, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit, _box, facts = kit
    make, why = FACTS_CASES[case]
    path = make(tmp_path, facts)
    preview = _preview(unit, path)
    assert preview.exit_code == 2, preview.output
    assert preview.stderr.startswith(f"oemkit: error: {path}: ") and why in preview.stderr, preview.stderr
    root = tmp_path / "root"
    rc, console, status = _agent(capsys, root, "--config", str(unit), "--pubkey", str(PUB), "--facts", str(path))
    assert rc == 1 and str(path) in status["reason"]
    _refused(console, status, why)
    assert list(root.iterdir()) == []


def test_facts_round_trip_and_older_facts_still_load(kit: tuple[Path, Path, Any]) -> None:
    _unit, box, facts = kit
    assert parse_facts(json.dumps(facts).encode()) == probe(box)
    for disk in facts["disks"]:  # written before by_id and in_use existed
        del disk["by_id"], disk["in_use"]
    assert parse_facts(json.dumps(facts).encode()).disks[0].in_use is False
    with pytest.raises(FactsError, match=r"facts: not valid JSON \(NaN is not a JSON number\)"):
        parse_facts(json.dumps({**facts, "memory_kib": float("nan")}).encode())


# ---------------------------------------------------------------------------- odd files in a sysfs-shaped tree
def _tree(kit: tuple[Path, Path, Any], tmp: Path) -> Path:
    tree = tmp / "box"
    shutil.copytree(kit[1], tree, symlinks=True)
    return tree


def _replace(path: Path, make: Callable[[Path, str], Path]) -> None:
    path.unlink()
    make(path.parent, path.name)


def test_a_fifo_in_a_facts_tree_is_a_value_that_cannot_be_read(
    kit: tuple[Path, Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Skipped like an unreadable file on a real box (None), never waited on: here the serial, so first boot
    refuses the box for what it cannot verify, with its reason, after reading every other file."""
    tree = _tree(kit, tmp_path)
    _replace(tree / "sys/class/dmi/id/product_serial", _fifo)
    assert probe(tree).dmi.product_serial is None
    preview = _preview(kit[0], tree)
    assert preview.exit_code == 1 and "REFUSED: wrong unit: the box reports no serial number" in preview.stdout
    root = tmp_path / "root"
    rc, console, status = _agent(capsys, root, "--config", str(kit[0]), "--pubkey", str(PUB), "--facts", str(tree))
    assert rc == 1
    _refused(console, status, "wrong unit: the box reports no serial number")
    assert _files(root) == STATUS_FILES


def test_probe_skips_fifos_and_devices_anywhere_in_the_tree(kit: tuple[Path, Path, Any], tmp_path: Path) -> None:
    tree = _tree(kit, tmp_path)
    _replace(tree / "proc/cpuinfo", _fifo)
    (tree / "proc/meminfo").unlink()
    (tree / "proc/meminfo").symlink_to("/dev/zero")
    nic = sorted((tree / "sys/class/net").iterdir())[0]
    _replace(nic / "speed", _fifo_link)
    _replace(nic / "address", _folder)
    disk = next(d for d in sorted((tree / "sys/block").iterdir()) if (d / "device/model").exists())
    _replace(disk / "device/model", _fifo)
    probed = CliRunner().invoke(app, ["facts", "probe", str(tree)])
    assert probed.exit_code == 0, probed.output
    facts = json.loads(probed.stdout)
    assert (facts["cpus"], facts["cpu_flags"], facts["memory_kib"]) == (0, [], None)
    first = next(n for n in facts["nics"] if n["name"] == nic.name)
    assert first["speed_mbps"] is None and first["mac"] is None and first["pci_address"]
    assert next(d for d in facts["disks"] if d["name"] == disk.name)["model"] is None
    assert facts["dmi"]["product_serial"] == SERIAL  # everything else is still read


def test_probe_refuses_a_root_that_is_not_a_folder(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    probed = CliRunner().invoke(app, ["facts", "probe", str(fifo)])
    assert probed.exit_code == 2 and f"{fifo}: not a folder" in probed.stderr


# ------------------------------------------------------------------------------------------ dmidecode dumps
@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_fifo, "a FIFO, not a regular file: refused"),
        (_fifo_link, "a FIFO, not a regular file: refused"),
        (_device, "a character device, not a regular file: refused"),
    ],
    ids=["FIFO", "symlink to a FIFO", "private device node"],
)
def test_a_dump_that_is_not_a_regular_file_is_refused(make: Callable[[Path], Path], why: str, tmp_path: Path) -> None:
    dump = make(tmp_path)
    with pytest.raises(UnreadableInput, match=why):
        read_report(dump)
    built = CliRunner().invoke(
        app, ["facts", "from-dmi", str(dump), "--serial", SERIAL, "--output", str(tmp_path / "out")]
    )
    assert built.exit_code == 2 and f"{dump}: cannot read dump: {why}" in built.stderr, built.output
    assert not (tmp_path / "out").exists()


def test_a_fifo_in_a_dmi_id_folder_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "id"
    folder.mkdir()
    (folder / "sys_vendor").write_text("Dell Inc.\n")
    (folder / "product_name").write_text("PowerEdge R650\n")
    _fifo(folder, "product_serial")
    (folder / "product_uuid").symlink_to("/dev/zero")
    identity = read_report(folder).identity
    assert (identity.product_name, identity.product_serial, identity.product_uuid) == ("PowerEdge R650", None, None)


# ---------------------------------------------------------------------------- the real entry points, end to end
def test_real_entry_points_refuse_a_fifo_without_hanging(kit: tuple[Path, Path, Any], tmp_path: Path) -> None:
    """`python -m hypervisor_core` and `oemkit firstboot preview`, each in its own process, bounded by a timeout."""
    fifo = _fifo(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    agent = subprocess.run(
        [sys.executable, "-m", "hypervisor_core", "--root", str(root), "--config", str(fifo), "--pubkey", str(PUB)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert agent.returncode == 1 and agent.stderr == "", agent.stderr
    status = status_line(agent.stdout)
    _refused(agent.stdout, status, f"cannot read the unit config {fifo}: a FIFO, not a regular file: refused")
    assert list(root.iterdir()) == []
    preview = subprocess.run(
        [sys.executable, "-m", "oemkit", "firstboot", "preview", str(fifo), "--pubkey", str(PUB), "--facts", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert preview.returncode == 2, preview.stderr
    assert f"{fifo}: cannot read unit config: a FIFO, not a regular file: refused" in preview.stderr
    assert "Traceback" not in preview.stderr
