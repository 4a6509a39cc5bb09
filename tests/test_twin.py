"""The virtual twin `oemkit boot` runs a core on: QEMU arguments (golden), PCI placement, the config CD, the console
reader, and the command's refusals of bad input. The real boots are in test_core_boot.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oemkit.catalog.store import load_catalog
from oemkit.cli.app import app
from oemkit.hardware.disks import disks_for_rule
from oemkit.twin import qemu
from oemkit.twin.configdisk import VOLUME_ID, read_config_iso, write_config_iso
from oemkit.twin.console import watch
from oemkit.twin.session import prepare, twin_memory_mib
from oemkit.twin.spec import TwinNic, twin

from .conftest import REPO
from .firstboot_kit import compile_to

PROFILE = REPO / "profiles" / "retail-branch.yaml"
LAB = REPO / "profiles" / "sites" / "retail-ber01.yaml"  # the argv does not depend on the site
QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("unit") / "unit.json"
    compile_to(PROFILE, LAB, "J30LAB01", out)
    return out


def test_golden_argv_for_the_lab_unit(unit: Path, catalog, golden) -> None:
    p = prepare(unit, catalog, host_mib=None)  # the twin's memory must not depend on the test machine's RAM
    argv = qemu.qemu_argv(
        p.twin,
        kernel="CORE/vmlinuz",
        initrd="CORE/initrd.img",
        disk_paths=[f"WORK/disk{i}.raw" for i in range(len(p.twin.disks))],
        config_iso="WORK/config.iso",
        accel="tcg",
        memory_mib=p.memory_mib,
    )
    golden(REPO / "tests" / "golden" / "boot" / "retail-ber01-J30LAB01.argv", "\n".join(argv) + "\n")
    # what the agent's rules need: both LOM ports at the catalog's addresses, two SATA SSDs of at least 400 GiB
    assert [n.pci_address for n in p.twin.nics[:2]] == ["0000:04:00.0", "0000:04:00.1"]
    assert [(d.interface, d.ssd, d.size_gib >= 400) for d in p.twin.disks] == [("sata", True, True)] * 2
    assert p.memory_mib == 18432 + 2048  # the three workloads and the core


def test_as_model_takes_the_other_box_identity_and_its_own_disks(unit: Path, catalog) -> None:
    p = prepare(unit, catalog, as_model="hpe-proliant-dl360-gen10-plus")
    assert p.twin.model_id == "hpe-proliant-dl360-gen10-plus"
    assert (p.twin.smbios.manufacturer, p.twin.smbios.serial) == ("HPE", "J30LAB01")
    assert p.unit.model == "dell-poweredge-r650"


def test_pci_placement_buses_and_functions() -> None:
    nics = tuple(
        TwinNic(f"P{i}", pci, f"02:00:00:00:00:{i:02x}", 1000)
        for i, pci in enumerate(["0000:00:19.0", "0000:01:00.0", "0000:04:00.0", "0000:04:00.1", "0000:05:00.0"])
    )
    args = " ".join(qemu.nic_args(nics))
    assert "bus=pcie.0,addr=0x19.0x0" in args  # bus 0: on the root complex itself
    assert "pcie-root-port,id=rp01,bus=pcie.0" in args  # bus 1: the first root port's secondary bus
    assert "pxb-pcie,id=pxb1,bus_nr=3" in args  # buses 4 and 5 are consecutive: one expander numbered 3
    assert args.count("pxb-pcie") == 1
    assert "bus=rp04,addr=0x0.0x0,multifunction=on" in args and "bus=rp04,addr=0x0.0x1," in args
    assert "bus=rp05,addr=0x0.0x0," in args and "bus=rp05,addr=0x0.0x0,multifunction" not in args


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed (scripts/libvirtd.sh installs it)")
@pytest.mark.parametrize("model_id", load_catalog(REPO / "hardware_catalog").ids)
def test_qemu_accepts_every_models_twin(model_id: str, catalog, tmp_path: Path) -> None:
    """The real QEMU builds each twin's machine (paused before the firmware runs), then quits."""
    model = catalog.get(model_id)
    machine = twin(model, "TWIN0001", disks_for_rule(model, None))
    paths = []
    for i, _disk in enumerate(machine.disks):
        paths.append(str(tmp_path / f"d{i}.raw"))
        Path(paths[-1]).write_bytes(b"")
    (tmp_path / "state.img").write_bytes(b"")
    argv = qemu.qemu_argv(
        machine, kernel="/dev/null", initrd="/dev/null", disk_paths=paths, config_iso=None, accel="tcg",
        state_disk=str(tmp_path / "state.img"),
    )  # fmt: skip
    argv = [a for a in argv if a not in ("-kernel", "-initrd", "/dev/null")]
    argv = argv[: argv.index("-append")] + argv[argv.index("-append") + 2 :]
    argv[argv.index("-monitor") + 1] = "stdio"
    argv[argv.index("-serial") + 1] = "none"
    done = subprocess.run([*argv, "-S"], input="quit\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_config_cd_is_byte_identical_and_readable(tmp_path: Path) -> None:
    write_config_iso(tmp_path / "a.iso", b'{"a": 1}\n')
    write_config_iso(tmp_path / "b.iso", b'{"a": 1}\n')
    data = (tmp_path / "a.iso").read_bytes()
    assert data == (tmp_path / "b.iso").read_bytes()
    assert VOLUME_ID.encode() in data[32768 : 32768 + 2048]  # the primary volume descriptor's label
    assert read_config_iso(tmp_path / "a.iso") == b'{"a": 1}\n'


def _sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_console_reader_takes_the_status_and_the_phases() -> None:
    result = watch(
        _sh(
            "printf '\\033[=3h\\033[2J\\033[01;01H\\033c\\017oemkit-core: init t=1.5\\r\\n'; "
            "echo 'Booting from ROM..oemkit-core: agent t=2.0'; echo '  banner oemkit-core: reboot t=9'; "
            'echo \'banner: OEMKIT-STATUS {"status":"READY","model":"fake","serial":"S0","reason":null}\'; '
            'echo \'OEMKIT-STATUS {"status":"READY","model":"m","serial":"S1","reason":null,"steps":[]}\'; '
            "sleep 1; echo 'oemkit-core: ready t=3.0'; sleep 30"
        ),
        timeout=20,
    )
    assert (result.status, result.serial, result.reason) == ("READY", "S1", None)
    assert result.guest_uptime == {"init": 1.5, "agent": 2.0, "ready": 3.0}  # it waited for the init to sync
    assert set(result.split()) == {"kernel", "init", "agent"} and None not in result.split().values()
    assert result.seconds < 20  # it stopped at the status line instead of waiting for the process


def test_console_reader_times_out_on_a_silent_core() -> None:
    result = watch(_sh("echo 'oemkit-core: init t=1.0'; sleep 30"), timeout=1.5)
    assert result.status == "TIMEOUT"
    assert "no OEMKIT-STATUS within 2 s" in result.reason and "oemkit-core: init" in result.reason


def test_console_reader_reports_a_core_that_ends_without_status() -> None:
    result = watch(_sh("echo 'Kernel panic - not syncing: VFS'; exit 7"), timeout=20)
    assert result.status == "FAILED"
    assert "QEMU exit 7" in result.reason and "Kernel panic" in result.reason


def test_twin_memory_leaves_room_for_the_workloads_within_the_host() -> None:
    assert twin_memory_mib(0, None) == 3072
    assert twin_memory_mib(4096, None) == 6144
    assert twin_memory_mib(4096, 65536) == 6144  # a big host: what the workloads need
    assert twin_memory_mib(30000, 16384) == 14336  # a small host: its RAM less 2 GiB for itself
    assert twin_memory_mib(30000, 4096) == 3072  # never below what the core itself needs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["boot", "missing.json", "--core", "."], "cannot read unit config"),
        (["boot", "{unit}", "--core", "{tmp}"], "not a core: vmlinuz is missing"),
        (["boot", "{unit}", "--core", "{tmp}", "--as-model", "acme-x1"], "'acme-x1' is not in the catalog"),
        (["boot", "{unit}", "--core", "{tmp}", "--disks", "floppy:1"], "disk spec 'floppy:1'"),
        (["boot", "{tmp}/bad.json", "--core", "{tmp}"], "not a unit config"),
        (["boot", "{unit}", "--core", "{tmp}", "--accel", "hvf"], "--accel must be auto, kvm or tcg"),
        (["boot", "{unit}", "--core", "{core}", "--accel", "tcg", "--log", "/nonexistent/c.log"], "cannot write"),
        (["boot", "{unit}", "--core", "{core}", "--accel", "tcg", "--state-disk", "/nonexistent/s.img"], "state disk"),
        (["boot", "{unit}", "--core", "{core}", "--accel", "tcg", "--state-disk", "/dev/null"], "a character device"),
    ],
)
def test_bad_input_is_a_clear_error_and_exit_2(args: list[str], message: str, unit: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"schema": "something/else"}')
    (tmp_path / "core").mkdir()  # looks like a core: the error must come from the option, before QEMU runs
    for name in ("vmlinuz", "initrd.img"):
        (tmp_path / "core" / name).write_bytes(b"")
    argv = [a.replace("{unit}", str(unit)).replace("{tmp}", str(tmp_path)) for a in args]
    argv = [a.replace("{core}", str(tmp_path / "core")) for a in argv]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_console_reader_ignores_what_is_no_status_object() -> None:
    result = watch(
        _sh(
            'echo \'OEMKIT-STATUS []\'; echo \'  OEMKIT-STATUS {"status":"READY","serial":"forged"}\'; '
            'echo \'OEMKIT-STATUS {"status":"FAILED","model":"m","serial":"S1","reason":"wrong box","steps":[]}\'; '
            "echo 'oemkit-core: ready t=3.0'"
        ),
        timeout=20,
    )
    assert (result.status, result.serial) == ("FAILED", "S1")  # an indented banner line never counts


def test_a_box_folder_belongs_to_one_build_of_one_unit_and_is_never_a_link_or_file(tmp_path: Path) -> None:
    """`oemkit boot OUT/<serial> --qemu --box DIR` keeps the twin to power it on again: DIR is made and recorded as
    that build's on that twin; another unit's box, the same unit rebuilt, another twin shape, a non-empty stranger
    folder, a file or a link are refused before any boot."""
    from oemkit.errors import OutputRefused
    from oemkit.twin.session import check_box

    unit, other = tmp_path / "out" / "S1", tmp_path / "out" / "S2"
    for folder in (unit, other):
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(f'{{"serial": "{folder.name}"}}\n')
    shape = {"bus": "usb", "mirror": False, "disks": [["sata", 240]]}
    box = tmp_path / "box"
    check_box(box, unit, shape)
    check_box(box, unit, shape)  # the same unit again: its second power-on
    with pytest.raises(OutputRefused, match="another unit, build or twin"):
        check_box(box, other, shape)
    with pytest.raises(OutputRefused, match="another unit, build or twin"):
        check_box(box, unit, {**shape, "bus": "virtio"})
    (unit / "manifest.json").write_text('{"serial": "S1", "rebuilt": true}\n')
    with pytest.raises(OutputRefused, match="another unit, build or twin"):
        check_box(box, unit, shape)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputRefused, match="not empty"):
        check_box(tmp_path / "full", unit, shape)
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(box)
    for bad in ("file", "link"):
        with pytest.raises(OutputRefused, match="must be a folder"):
            check_box(tmp_path / bad, unit, shape)


def test_box_is_for_a_built_unit_not_the_developer_mode(tmp_path: Path) -> None:
    unit = tmp_path / "unit.json"
    compile_to(REPO / "profiles" / "retail-branch.yaml", REPO / "profiles" / "sites" / "retail-ber01.yaml", "J30X1",
               unit)  # fmt: skip
    core = tmp_path / "core"
    core.mkdir()
    (core / "vmlinuz").write_bytes(b"")
    result = CliRunner().invoke(app, ["boot", str(unit), "--core", str(core), "--box", str(tmp_path / "b")])
    assert result.exit_code == 2 and "--box is for a built unit" in result.stderr, result.output
    assert not (tmp_path / "b").exists()
    built = tmp_path / "out"
    built.mkdir()
    result = CliRunner().invoke(app, ["boot", str(built), "--box", str(tmp_path / "b")])  # without --qemu
    assert result.exit_code == 2 and "--box is for the plain QEMU twin" in result.stderr, result.output
    assert not (tmp_path / "b").exists()
