"""The factory's Secure Boot keys (`oemkit keys init --secure-boot`) and an OVMF variable store with them enrolled
(`oemkit keys enroll-vars`): real RSA keys and X.509 certificates, a real edk2 store written by virt-fw-vars and
read back from its own dump. That firmware booted with it runs only what the db key signed is proven by the
appliance's boot tests."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from oemkit.cli.app import app
from oemkit.seal import firmware_vars, secureboot

runner = CliRunner()
needs_ovmf = pytest.mark.skipif(
    not firmware_vars.OVMF_VARS_TEMPLATE.is_file() and os.environ.get("OEMKIT_REQUIRE_CORE") != "1",
    reason="Debian's ovmf is not installed (bash scripts/setup.sh)",
)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    result = runner.invoke(app, ["keys", "init", "--dir", str(folder), "--secure-boot", "--org", "Northwind Retail"])
    assert result.exit_code == 0, result.output
    return folder


def test_init_writes_three_key_pairs_private_and_whole(keys_dir: Path) -> None:
    sb = keys_dir / "secureboot"
    assert (keys_dir / "signing.key").is_file()  # a new factory gets its config-signing key too
    for role in secureboot.ROLES:
        assert stat.S_IMODE((sb / f"{role}.key").stat().st_mode) == 0o600
        pem = x509.load_pem_x509_certificate((sb / f"{role}.crt").read_bytes())
        der = x509.load_der_x509_certificate((sb / f"{role}.cer").read_bytes())
        assert pem == der and pem.subject == pem.issuer  # self-signed, as firmware keys are
        assert pem.subject.rfc4514_string() == f"CN=Northwind Retail Secure Boot {role},O=Northwind Retail"
        key = pem.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
        assert pem.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is (role != "db")
    assert secureboot.load(keys_dir).owner == (sb / "owner.guid").read_text().strip()


def test_init_never_replaces_secure_boot_keys_and_keeps_the_signing_key(keys_dir: Path, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in (keys_dir / "secureboot").iterdir()}
    result = runner.invoke(app, ["keys", "init", "--dir", str(keys_dir), "--secure-boot"])
    assert result.exit_code == 2 and "refusing to replace the factory's Secure Boot keys" in result.stderr
    assert {p: p.read_bytes() for p in (keys_dir / "secureboot").iterdir()} == before
    # a factory that has a signing key adds Secure Boot keys beside it, the signing key untouched
    runner.invoke(app, ["keys", "init", "--dir", str(tmp_path)])
    signing = (tmp_path / "signing.key").read_bytes()
    result = runner.invoke(app, ["keys", "init", "--dir", str(tmp_path), "--secure-boot"])
    assert result.exit_code == 0 and "kept" in result.stderr
    assert (tmp_path / "signing.key").read_bytes() == signing and (tmp_path / "secureboot" / "db.key").is_file()


@needs_ovmf
def test_enroll_vars_writes_a_store_with_our_keys_and_secure_boot_on(keys_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "VARS.fd"
    result = runner.invoke(app, ["keys", "enroll-vars", "--dir", str(keys_dir), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    keys = secureboot.load(keys_dir)
    assert doc["owner"] == keys.owner and doc["secure_boot"] is True
    assert doc["sha256"] == {r: secureboot.fingerprint(secureboot.certificate(keys, r)) for r in secureboot.ROLES}
    assert out.stat().st_size == firmware_vars.OVMF_VARS_TEMPLATE.stat().st_size  # a drop-in for the template
    # an existing store is kept unless --force
    again = runner.invoke(app, ["keys", "enroll-vars", "--dir", str(keys_dir), "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.stderr
    assert runner.invoke(app, ["keys", "enroll-vars", "--dir", str(keys_dir), "-o", str(out), "--force"]).exit_code == 0


@needs_ovmf
def test_a_store_with_other_keys_fails_the_check(keys_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    runner.invoke(app, ["keys", "init", "--dir", str(other), "--secure-boot"])
    theirs = secureboot.load(other)
    ours = secureboot.load(keys_dir)
    expected = {r: secureboot.fingerprint(secureboot.certificate(ours, r)) for r in secureboot.ROLES}
    firmware_vars.enroll(theirs, firmware_vars.OVMF_VARS_TEMPLATE, tmp_path / "theirs.fd")
    dump = tmp_path / "d.json"
    subprocess.run([firmware_vars.tool(), "-i", str(tmp_path / "theirs.fd"), "--output-json", str(dump)], check=True)
    with pytest.raises(firmware_vars.EnrollError, match="PK in the written store is not the factory's"):
        firmware_vars.check(json.loads(dump.read_text()), expected, ours.owner)


@pytest.mark.parametrize("damage", ["no-folder", "bad-guid", "bad-cert", "fifo-template"])
def test_bad_keys_or_template_are_located_refusals(keys_dir: Path, tmp_path: Path, damage: str) -> None:
    folder, template = tmp_path / "k", firmware_vars.OVMF_VARS_TEMPLATE
    if damage != "no-folder":
        (folder / "secureboot").mkdir(parents=True)
        for p in (keys_dir / "secureboot").iterdir():
            (folder / "secureboot" / p.name).write_bytes(p.read_bytes())
    if damage == "bad-guid":
        (folder / "secureboot" / "owner.guid").write_text("not-a-guid\n")
    if damage == "bad-cert":
        (folder / "secureboot" / "KEK.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    if damage == "fifo-template":
        template = tmp_path / "fifo"
        os.mkfifo(template)
    out = tmp_path / "VARS.fd"
    args = ["keys", "enroll-vars", "--dir", str(folder), "-o", str(out), "--template", str(template)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("oemkit: error: ") and "Traceback" not in result.output
    assert not out.exists()
