"""`oemkit register` and `oemkit line --register` against a real `oemkit serve` (its own process, SQLite, HTTPS from
the tests' CA): what a registered image carries, and every refusal leaving the image exactly as it was."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.image.appliance import disk, layout, qcow2

from .conftest import REPO
from .firstboot_kit import compile_to
from .zt_service import ADMIN, KEYS, Service

pytestmark = pytest.mark.slow  # builds images from the session's core
runner = CliRunner()
PROFILES = REPO / "tests" / "data" / "profiles" / "zero-touch"
PROFILE, SITE = PROFILES / "zt-branch.yaml", PROFILES / "sites" / "zt-lab.yaml"


@pytest.fixture(scope="module")
def factory(core_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Service]]:
    """WORK with keys, the service running; `unit(serial)` below builds into WORK/out."""
    work = tmp_path_factory.mktemp("register")
    keys = work / "keys"
    keys.mkdir()
    for name in ("signing.key", "signing.pub"):
        shutil.copyfile(KEYS / name, keys / name)
    assert runner.invoke(app, ["keys", "init", "--dir", str(keys), "--secure-boot"]).exit_code == 0
    service = Service(work)
    service.start()
    try:
        yield work, core_dir, service
    finally:
        service.stop()


def _unit(factory, serial: str, overlay: Path | None = None) -> Path:
    work, core, _ = factory
    compile_to(PROFILE, SITE, serial, work / f"{serial}.json", overlay)
    result = runner.invoke(app, ["image", "build", str(work / f"{serial}.json"), "--core", str(core),
                                 "--keys", str(work / "keys"), "-o", str(work / "out"), "--force"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return work / "out" / serial


def _register(unit_dir: Path, *args: str, token: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OEMKIT_ADMIN_TOKEN"}
    if token is not None:
        env["OEMKIT_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "oemkit", "register", str(unit_dir), *args, "--json"], env=env,
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip


def _via(service: Service) -> tuple[str, ...]:
    return ("--server", service.url, "--ca", str(KEYS / "service-ca.pem"))


def _files(unit_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(unit_dir.iterdir())}


def _token_on_image(unit_dir: Path, tmp: Path) -> str:
    guest = qcow2.guest_raw(unit_dir / "appliance.qcow2", tmp / "guest.raw")
    assert disk.fat_read(guest, layout.CONFIG.start, "/enrol.token", tmp / "token")
    return (tmp / "token").read_text().strip()


def test_a_registered_image_carries_its_token_beside_the_config_and_still_verifies(factory, tmp_path: Path) -> None:
    work, _, service = factory
    unit_dir = _unit(factory, "J30RG001")
    config_before = json.loads((unit_dir / "manifest.json").read_text())["unit_config"]
    done = _register(unit_dir, *_via(service))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["serial"], answer["server"], answer["replaced"]) == ("J30RG001", service.url, False)
    m = json.loads((unit_dir / "manifest.json").read_text())
    token = _token_on_image(unit_dir, tmp_path)
    assert len(token) == 43 and token not in (unit_dir / "manifest.json").read_text()  # the manifest: a hash only
    assert m["contents"][layout.CONFIG_NAME]["/enrol.token"]["sha256"] == answer["token_file_sha256"]
    assert m["unit_config"] == config_before  # the signed config and its PCR 15 prediction are untouched
    verified = runner.invoke(app, ["image", "verify", str(unit_dir), "--keys", str(work / "keys")])
    assert verified.exit_code == 0, verified.output
    unit = service.get("/v1/units/J30RG001")
    assert (unit["state"], unit["enrolled"], unit["pcr15_expected"]) == ("registered", False, m["pcr15_expected"])
    assert token not in json.dumps(unit) and token not in (work / "serve.log").read_text()

    again = _register(unit_dir, *_via(service))  # before the box enrolled: a new token replaces the old one
    assert again.returncode == 0 and json.loads(again.stdout)["replaced"] is True, again.stderr
    new_token = _token_on_image(unit_dir, tmp_path)
    assert new_token != token
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def enrol(with_token: str) -> int:
        body = json.dumps({"token": with_token, "public_key": base64.b64encode(key).decode()}).encode()
        request = urllib.request.Request(f"{service.url}/v1/units/J30RG001/enrol", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10, context=service.ctx) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert enrol(token) == 403  # the replaced token enrols nothing
    assert enrol(new_token) == 200  # the box's first boot, as its phone home does it
    before = _files(unit_dir)
    late = _register(unit_dir, *_via(service))  # the box enrolled: the factory cannot take it back silently
    assert late.returncode == 1 and "409" in json.loads(late.stdout)["error"]["message"], late.stdout
    assert _files(unit_dir) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("case", "code", "says"),
    [
        ("no admin token", 2, "no admin token: set the environment variable OEMKIT_ADMIN_TOKEN"),
        ("wrong admin token", 1, "refused J30RG002 (HTTP 401)"),
        ("service down", 2, "cannot reach the provisioning service"),
        ("another CA", 2, "CERTIFICATE_VERIFY_FAILED"),
        ("image altered", 1, "the image does not verify, so it is not registered"),
    ],
)
def test_a_refused_registration_changes_nothing(factory, case: str, code: int, says: str) -> None:
    work, _, service = factory
    unit_dir = _unit(factory, "J30RG002")
    args, token = list(_via(service)), ADMIN
    if case == "no admin token":
        token = None
    elif case == "wrong admin token":
        token = "not-the-admin-token-at-all"
    elif case == "service down":
        args[1] = f"https://127.0.0.1:{_closed_port()}"
    elif case == "another CA":
        runner.invoke(app, ["keys", "service-ca", "--dir", str(work / "other-ca"), "--force"])
        args[3] = str(work / "other-ca" / "service-ca.pem")
    elif case == "image altered":
        with (unit_dir / "appliance.qcow2").open("ab") as fh:
            fh.write(b"\0" * 512)
    before = _files(unit_dir)
    done = _register(unit_dir, *args, token=token)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert says in json.loads(done.stdout)["error"]["message"], done.stdout
    assert _files(unit_dir) == before
    assert ADMIN not in done.stdout + done.stderr


def test_a_unit_without_phone_home_is_refused(factory, tmp_path: Path) -> None:
    _, _, service = factory
    overlay = tmp_path / "nophone.yaml"
    overlay.write_text("apiVersion: oemkit/v1\nkind: UnitOverlay\nserial: J30RG003\n"
                       "overrides:\n  management:\n    phone_home: null\n")  # fmt: skip
    unit_dir = _unit(factory, "J30RG003", overlay)
    before = _files(unit_dir)
    done = _register(unit_dir, *_via(service))
    assert done.returncode == 1 and "no management.phone_home" in done.stdout, done.stdout
    assert _files(unit_dir) == before


def test_the_line_registers_an_order_as_its_last_step(factory, tmp_path: Path) -> None:
    work, core, service = factory
    order = tmp_path / "order.csv"
    order.write_text(f"serial,profile,site\nJ30RG010,{PROFILE},{SITE}\nJ30RG011,{PROFILE},{SITE}\n")
    out = tmp_path / "out"
    line = [sys.executable, "-m", "oemkit", "line", str(order), "--core", str(core), "--key",
            str(work / "keys" / "signing.key"), "--keys", str(work / "keys"), "-o", str(out), "--json"]  # fmt: skip
    env = {**os.environ, "OEMKIT_ADMIN_TOKEN": ADMIN}
    built = subprocess.run(line, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert built.returncode == 0, built.stderr  # built first (burn-in would run here), nothing registered yet
    assert all("registered" not in u for u in json.loads(built.stdout)["units"])
    again = subprocess.run([*line, "--register", service.url, "--register-ca", str(KEYS / "service-ca.pem")],
                           env=env, capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    units = json.loads(again.stdout)["units"]
    assert [(u["serial"], u["status"], u["registered"]) for u in units] == [
        ("J30RG010", "skipped", True), ("J30RG011", "skipped", True)]  # fmt: skip
    for serial in ("J30RG010", "J30RG011"):
        assert service.get(f"/v1/units/{serial}")["state"] == "registered"
        events = [json.loads(x)["event"] for x in (out / serial / "line.log").read_text().splitlines()]
        assert events[-1] == "registered"
