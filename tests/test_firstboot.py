"""First boot through the real agent on libvirt's test driver: READY, once-only, and every refusal changes nothing."""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from hypervisor_core import bank, config, firstboot
from hypervisor_core.backends.libvirt import read_back
from hypervisor_core.facts import probe
from hypervisor_core.firstboot import first_boot
from hypervisor_core.layout import Layout
from oemkit.cli.app import app
from oemkit.seal.compile import Compiled, sign
from oemkit.seal.keys import load_private_key

from .conftest import REPO
from .firstboot_kit import KEY, PUB, R650_DUMP, compile_to, facts_tree, public_key, status_line, test_uri

PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"
SERIAL = "J30ABC12"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    compile_to(PROFILE, SITE, SERIAL, tmp_path / "unit.json")
    return tmp_path / "unit.json"


def _boot(
    unit_raw: bytes,
    facts_dir: Path,
    root: Path,
    conn: libvirt.virConnect,
    force: bool = False,
    public: bytes | None = None,
):
    out = io.StringIO()
    report = first_boot(unit_raw, public or public_key(), root, lambda: conn, probe(facts_dir), force=force, out=out)
    return report, out.getvalue()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_first_boot_ready_then_already_done(unit: Path, tmp_path: Path) -> None:
    conn = libvirt.open(test_uri())
    facts = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    # what systemd-boot and the init leave on an appliance: the booted bank's entry, PCR 15 after the measurement
    efivars = facts / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True, exist_ok=True)
    entry = "oemkit-2-b.efi".encode("utf-16-le") + b"\0\0"
    (efivars / f"LoaderEntrySelected-{bank.LOADER_GUID}").write_bytes(b"\x06\0\0\0" + entry)
    (facts / "sys/class/tpm/tpm0/pcr-sha256").mkdir(parents=True)
    (facts / "sys/class/tpm/tpm0/pcr-sha256/15").write_text("AB" * 32 + "\n")
    report, console = _boot(unit.read_bytes(), facts, tmp_path / "root", conn)
    status = status_line(console)
    assert status["status"] == "READY", status
    # the console contract, exactly
    assert set(status) == {"status", "model", "serial", "reason", "steps", "bank", "pcr15", "fault"}
    assert (status["bank"], status["pcr15"]) == ("b", "ab" * 32)
    assert (status["model"], status["serial"], status["reason"]) == ("dell-poweredge-r650", SERIAL, None)
    assert [s["id"] for s in status["steps"]][:3] == ["host.machine-id", "host.ssh-host-keys", "host.hostname"]
    assert console.splitlines()[0] == "==== Northwind Retail Systems Northwind StoreBox ===="
    assert "powered by oemkit core" in console
    held = read_back(conn)
    assert [(d["name"], d["running"], d["autostart"]) for d in held["domains"]] == [
        ("edge-fw", True, True),
        ("nvr", True, True),
        ("pos-server", True, True),
    ]
    assert {n["name"] for n in held["networks"]} == {"pos", "cameras", "backend"}
    assert held["pools"][0]["volumes"] == [
        "edge-fw-root.img",
        "nvr-root.img",
        "nvr-video.img",
        "pos-server-root.img",
    ]
    root = tmp_path / "root"
    assert (root / "etc/hostname").read_text() == "br-ber01-j30abc12\n"
    assert json.loads((root / "etc/oemkit/network.json").read_text())["vlan"] == 100
    assert (root / "var/lib/oemkit/firstboot.done").read_text().strip() == json.loads(unit.read_text())["content_id"]

    before_files, before_libvirt = _files(root), read_back(conn)
    report, console = _boot(unit.read_bytes(), facts, root, conn)
    assert status_line(console)["status"] == "READY" and report["reason"] == "already done"
    assert _files(root) == before_files and read_back(conn) == before_libvirt  # changed nothing

    report, console = _boot(unit.read_bytes(), facts, root, conn, force=True)
    assert status_line(console)["status"] == "READY" and report["reason"] is None
    assert read_back(conn) == before_libvirt  # a forced re-run converges on the same state
    assert (root / "etc/machine-id").read_bytes() == before_files["etc/machine-id"]  # identity kept, not re-made


def test_identity_is_generated_on_the_box_not_copied(unit: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")  # what a cloned image carries
    _boot(unit.read_bytes(), facts_tree(R650_DUMP, SERIAL, tmp_path / "box"), root, libvirt.open(test_uri()))
    assert (root / "etc/machine-id").read_text() != "0123456789abcdef0123456789abcdef\n"
    key = (root / "etc/ssh/ssh_host_ed25519_key").read_text()
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600


def _tamper(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw
    return raw.replace(old, new, 1)


def _resign_with_other_key(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["signature"] = (
        "ed25519:" + base64.b64encode(Ed25519PrivateKey.generate().sign(config.signed_bytes(doc))).decode()
    )
    return json.dumps(doc).encode()


REFUSALS = {
    "wrong model": (
        lambda raw: raw,
        "hpe/ProLiant-DL360-Gen10-Plus/6004A3CDB655.txt",
        SERIAL,
        None,
        "wrong hardware: this config is for dell-poweredge-r650 (Dell Inc. PowerEdge R650), this box is "
        "HPE ProLiant DL360 Gen10 Plus",
    ),
    "wrong serial": (
        lambda raw: raw,
        R650_DUMP,
        "J30ZZZ99",
        None,
        "wrong unit: this config is for serial J30ABC12, the box is serial J30ZZZ99",
    ),
    "bad signature": (
        _resign_with_other_key,
        R650_DUMP,
        SERIAL,
        None,
        "unit config signature does not verify: the file was altered after signing",
    ),
    "one tampered byte": (
        lambda raw: _tamper(raw, b'"vcpus": 4', b'"vcpus": 5'),
        R650_DUMP,
        SERIAL,
        None,
        "unit config signature does not verify: the file was altered after signing",
    ),
    "unknown schema version": (
        lambda raw: _tamper(raw, b'"oemkit.unit/v1"', b'"oemkit.unit/v9"'),
        R650_DUMP,
        SERIAL,
        None,
        "unknown schema 'oemkit.unit/v9': this agent reads oemkit.unit/v1",
    ),
    "ambiguous disk rule": (
        lambda raw: raw,
        R650_DUMP,
        SERIAL,
        "sata:ssd:960x3",
        "datastore rule is ambiguous: 2 disk(s) with interface=sata, rotational=False, "
        "min_size_gib=400 wanted, 3 candidates: sda",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_change_nothing(case: str, unit: Path, tmp_path: Path) -> None:
    change, dump, box_serial, disks, message = REFUSALS[case]
    _refused_and_nothing_changed(change(unit.read_bytes()), facts_tree(dump, box_serial, tmp_path / "box", disks),
                                 tmp_path / "root", message)  # fmt: skip


def _refused_and_nothing_changed(raw: bytes, box: Path, root: Path, message: str) -> None:
    conn = libvirt.open(test_uri())
    before = read_back(conn)
    _report, console = _boot(raw, box, root, conn)
    status = status_line(console)
    assert (status["status"], status["fault"]) == ("FAILED", "refusal")  # not the core's: never a rollback
    assert status["reason"].startswith(message), status["reason"]
    assert read_back(conn) == before  # no libvirt object touched
    assert sorted(_files(root)) == ["var/lib/oemkit/report.json", "var/lib/oemkit/status.json"]  # only the status


def test_an_uplink_port_the_box_does_not_have_is_refused(unit: Path, tmp_path: Path) -> None:
    """A config that is correctly signed but whose rule names an address this box lacks (a board revision the
    catalog never saw): sealed as the factory would seal it, so only the rule is wrong, not the signature."""
    cfg = config.load(unit.read_bytes(), public_key())
    lom1, lom2 = cfg.management.uplinks.rules
    moved = replace(lom2.ports[0], pci_addresses=("0000:99:00.1",))
    uplinks = replace(cfg.management.uplinks, rules=(lom1, replace(lom2, ports=(moved,))))
    edited = replace(cfg, management=replace(cfg.management, uplinks=uplinks))
    raw = Compiled(SERIAL, [], *sign(edited, load_private_key(KEY))).text().encode()
    message = "uplinks: 2 wanted (LOM1; LOM2), found 1: enp4s0f0 (0000:04:00.0)"
    _refused_and_nothing_changed(raw, facts_tree(R650_DUMP, SERIAL, tmp_path / "box"), tmp_path / "root", message)


def test_cli_run_json_reads_libvirt_back(unit: Path, tmp_path: Path) -> None:
    facts = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    result = CliRunner().invoke(
        app,
        [
            "firstboot",
            "run",
            str(unit),
            "--pubkey",
            str(PUB),
            "--root",
            str(tmp_path / "root"),
            "--facts",
            str(facts),
            "--connect",
            test_uri(),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "READY"
    assert {d["name"] for d in report["libvirt"]["domains"]} == {"pos-server", "nvr", "edge-fw"}
    assert {"domains", "networks", "pools"} <= report["libvirt"].keys()


def _preview(unit: Path, facts: Path, *extra: str):
    return CliRunner().invoke(
        app, ["firstboot", "preview", str(unit), "--pubkey", str(PUB), "--facts", str(facts), *extra]
    )


def test_cli_preview_refuses_exactly_as_first_boot(unit: Path) -> None:
    ok = _preview(unit, REPO / "tests/data/dmi" / R650_DUMP, "--json")
    assert ok.exit_code == 0, ok.output
    preview = json.loads(ok.stdout)
    assert preview["uplinks"] == ["enp4s0f0", "enp4s0f1"] and preview["plan"][-1]["id"] == "report"
    wrong = _preview(unit, REPO / "tests/data/dmi/lenovo/ThinkSystem-SR650-V2/7AC016764E14.txt")
    assert wrong.exit_code == 1 and "REFUSED: wrong hardware" in wrong.stdout


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not json", "unit config is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "unit config is not valid JSON"),
        (b" " * (2 << 20), "unit config is 2097152 bytes; the limit is 1048576"),
        (b'{"schema": "oemkit.unit/v1"}', "unit config is not signed"),
    ],
)
def test_unreadable_configs_fail_cleanly(raw: bytes, reason: str, tmp_path: Path) -> None:
    _report, console = _boot(
        raw, facts_tree(R650_DUMP, SERIAL, tmp_path / "box"), tmp_path / "root", libvirt.open(test_uri())
    )
    status = status_line(console)
    assert status["status"] == "FAILED" and status["reason"].startswith(reason), status


def test_a_signed_config_with_a_path_in_a_name_is_refused(unit: Path, tmp_path: Path) -> None:
    cfg = config.load(unit.read_bytes(), public_key())
    with pytest.raises(config.ConfigError, match=re.escape("pool name '../../etc' is not a plain name")):
        replace(cfg, storage=replace(cfg.storage, pool="../../etc"))  # the factory cannot even build it...
    # ...and the box refuses it too, on the name itself: signed by hand, as a compromised factory could
    doc = json.loads(unit.read_bytes())
    doc["storage"]["pool"] = "../../etc"
    key = load_private_key(KEY)
    doc.pop("signature")
    doc["content_id"] = config.content_id(doc)
    doc["signature"] = "ed25519:" + base64.b64encode(key.sign(config.signed_bytes(doc))).decode()
    _report, console = _boot(
        json.dumps(doc).encode(),
        facts_tree(R650_DUMP, SERIAL, tmp_path / "box"),
        tmp_path / "root",
        libvirt.open(test_uri()),
    )
    status = status_line(console)
    assert (
        status["status"] == "FAILED" and status["reason"] == "pool name '../../etc' is not a plain name (a-z, 0-9, '-')"
    )
    assert not (tmp_path / "etc").exists()


def test_the_boot_media_is_never_a_datastore_disk(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE.read_text().replace("min_size_gib: 400, ", ""))
    compile_to(profile, SITE, SERIAL, tmp_path / "u.json")
    box = facts_tree(R650_DUMP, SERIAL, tmp_path / "box", "sata:ssd:960x1")  # one data disk + the BOSS card
    _, console = _boot((tmp_path / "u.json").read_bytes(), box, tmp_path / "root", libvirt.open(test_uri()))
    reason = status_line(console)["reason"]
    assert reason.startswith("datastore: 2 disk(s) with interface=sata, rotational=False wanted, 1 found"), reason


def test_duplicate_keys_in_the_config_are_refused(unit: Path, tmp_path: Path) -> None:
    raw = unit.read_bytes().replace(b'  "serial": "J30ABC12"', b'  "serial": "EVIL0001",\n  "serial": "J30ABC12"')
    _, console = _boot(
        raw, facts_tree(R650_DUMP, SERIAL, tmp_path / "box"), tmp_path / "root", libvirt.open(test_uri())
    )
    assert "duplicate key 'serial'" in status_line(console)["reason"]


def test_secure_boot_required_but_not_uefi_is_refused(unit: Path, tmp_path: Path) -> None:
    box = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    for var in (box / "sys/firmware/efi/efivars").iterdir():
        var.unlink()
    for d in ("sys/firmware/efi/efivars", "sys/firmware/efi"):
        (box / d).rmdir()
    _, console = _boot(unit.read_bytes(), box, tmp_path / "root", libvirt.open(test_uri()))
    assert "not booted through UEFI" in status_line(console)["reason"]


def test_a_paused_domain_is_resumed_and_image_host_keys_are_replaced(unit: Path, tmp_path: Path) -> None:
    conn = libvirt.open(test_uri())
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/ssh_host_rsa_key").write_text("the image's key\n")
    box = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    _boot(unit.read_bytes(), box, root, conn)
    assert not (root / "etc/ssh/ssh_host_rsa_key").exists()
    conn.lookupByName("nvr").suspend()
    report, console = _boot(unit.read_bytes(), box, root, conn, force=True)
    assert status_line(console)["status"] == "READY"
    assert next(s for s in report["steps"] if s["id"] == "libvirt.start.nvr")["detail"] == "resumed"
    assert conn.lookupByName("nvr").state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_a_refusal_does_not_overwrite_a_configured_box(unit: Path, tmp_path: Path) -> None:
    conn = libvirt.open(test_uri())
    root = tmp_path / "root"
    box = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    _boot(unit.read_bytes(), box, root, conn)
    before = _files(root)
    _, console = _boot(unit.read_bytes().replace(b'"vcpus": 4', b'"vcpus": 5', 1), box, root, conn)
    assert status_line(console)["status"] == "FAILED"
    assert _files(root) == before  # the successful boot's status and report stay


def test_an_internal_error_still_ends_with_the_status_line(unit: Path, tmp_path: Path, monkeypatch) -> None:
    def broken(*_a, **_k):  # a bug of ours, which no real part can be made to produce on cue
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(firstboot, "make_plan", broken)
    _, console = _boot(
        unit.read_bytes(), facts_tree(R650_DUMP, SERIAL, tmp_path / "box"), tmp_path / "root", libvirt.open(test_uri())
    )
    assert status_line(console) == {
        "status": "FAILED",
        "model": None,
        "serial": None,
        "reason": "internal error: ZeroDivisionError: boom",
        "steps": [],
        "bank": None,
        "pcr15": None,
        "fault": "core",
    }


def test_facts_probe_writes_the_json_that_facts_accepts(unit: Path, tmp_path: Path) -> None:
    box = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    probed = CliRunner().invoke(app, ["facts", "probe", str(box)])
    assert probed.exit_code == 0
    facts_json = tmp_path / "facts.json"
    facts_json.write_text(probed.stdout)
    assert json.loads(probed.stdout)["cpus"] == 64  # the R650 dump's two populated sockets, 32 threads each
    preview = CliRunner().invoke(
        app, ["firstboot", "preview", str(unit), "--pubkey", str(PUB), "--facts", str(facts_json), "--json"]
    )
    assert preview.exit_code == 0 and json.loads(preview.stdout)["status"] == "OK"


def test_cli_preview_plan_shows_every_action_with_its_parameters(unit: Path) -> None:
    dump = REPO / "tests/data/dmi" / R650_DUMP
    short = json.loads(_preview(unit, dump, "--json").stdout)["plan"]
    assert all(set(step) == {"id", "kind"} for step in short)  # without --plan: the contract as it was
    full = _preview(unit, dump, "--plan", "--json")
    assert full.exit_code == 0, full.output
    plan = json.loads(full.stdout)["plan"]
    assert [s["id"] for s in plan] == [s["id"] for s in short]
    network = next(s for s in plan if s["id"] == "host.management-network")
    assert network["args"]["vlan"] == 100 and [u["name"] for u in network["args"]["uplinks"]] == [
        "enp4s0f0",
        "enp4s0f1",
    ]
    domain = next(s for s in plan if s["id"] == "libvirt.domain.nvr")
    assert domain["args"]["xml"].startswith("<domain") and domain["description"]
    text = _preview(unit, dump, "--plan")
    assert text.exit_code == 0, text.output
    assert "libvirt.domain.nvr — define workload nvr" in text.stdout
    assert "        <name>nvr</name>" in text.stdout  # the XML as a block under its action, as virt-install prints it
    assert '      hostname: "br-ber01-j30abc12"' in text.stdout


def test_a_failed_step_is_the_steps_fault_not_a_refusal(unit: Path, tmp_path: Path) -> None:
    """A step that fails (here: etc/hostname is a folder, so the host.hostname step cannot write it) is reported
    with fault "step": on a bank on trial the init reboots for it (a new core must do what the old one did),
    unlike a refusal of the box or its config."""
    root = tmp_path / "root"
    (root / "etc/hostname").mkdir(parents=True)
    box = facts_tree(R650_DUMP, SERIAL, tmp_path / "box")
    _, console = _boot(unit.read_bytes(), box, root, libvirt.open(test_uri()))
    status = status_line(console)
    assert (status["status"], status["fault"]) == ("FAILED", "step"), status
    assert "host.hostname" in status["reason"], status


def _on_trial(box: Path) -> None:
    """What systemd-boot leaves for a bank on trial: the entry it picked and the counted file's path."""
    efivars = box / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True, exist_ok=True)
    for name, value in (("LoaderEntrySelected", "oemkit-2-b+3-0.efi"),
                        ("LoaderBootCountPath", "\\EFI\\Linux\\oemkit-2-b+2-1.efi")):  # fmt: skip
        (efivars / f"{name}-{bank.LOADER_GUID}").write_bytes(b"\x06\0\0\0" + value.encode("utf-16-le") + b"\0\0")


def test_a_configured_box_on_trial_must_show_libvirt_runs_what_first_boot_made(unit: Path, tmp_path: Path) -> None:
    """An upgrade reaches a box configured long ago: "already done" is not enough for a core on trial. READY only
    when libvirt holds and runs what first boot made; a workload not running is the core's fault (the init then
    reboots and the firmware falls back), not a refusal."""
    conn = libvirt.open(test_uri())
    box, root = facts_tree(R650_DUMP, SERIAL, tmp_path / "box"), tmp_path / "root"
    assert status_line(_boot(unit.read_bytes(), box, root, conn)[1])["status"] == "READY"  # the old core's first boot
    _on_trial(box)

    def again() -> dict:
        out = io.StringIO()
        run = firstboot.FirstBootRun(Layout(root), out)
        run.trial_check_s = 0.5
        run.run(unit.read_bytes(), public_key(), lambda: conn, probe(box))
        return status_line(out.getvalue())

    first = again()
    assert (first["status"], first["reason"], first["bank"]) == ("READY", "already done", "b"), first
    conn.lookupByName("nvr").destroy()  # under the new core, a workload did not come up
    second = again()
    assert (second["status"], second["fault"]) == ("FAILED", "core"), second
    assert second["reason"].startswith("on trial: ") and "nvr is not running" in second["reason"], second
