"""PCR 15: the raw TPM2_PCR_Extend the init sends (byte for byte, TPM 2.0 Part 3 §22.2), the factory's prediction,
and a box without a TPM. The extend itself is proven against swtpm in tests/test_appliance_boot.py."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import pytest

from hypervisor_core import tpm


def test_the_extend_command_is_the_65_bytes_the_spec_defines() -> None:
    digest = hashlib.sha256(b"unit").digest()
    cmd = tpm.extend_command(15, digest)
    assert len(cmd) == 65
    assert cmd[:10].hex() == "8002" + "00000041" + "00000182"  # sessions tag, size 65, TPM_CC_PCR_Extend
    assert cmd[10:14].hex() == "0000000f"  # PCR 15
    assert cmd[14:27].hex() == "00000009" + "40000009" + "0000" + "00" + "0000"  # one password session, empty
    assert cmd[27:33].hex() == "00000001" + "000b" and cmd[33:] == digest  # one SHA-256 digest
    with pytest.raises(ValueError):
        tpm.extend_command(15, b"short")


def test_the_prediction_is_one_extend_from_zero() -> None:
    config = b'{"serial": "J30LAB01"}'
    inner = hashlib.sha256(config).digest()
    assert tpm.predicted(config) == hashlib.sha256(bytes(32) + inner).hexdigest()
    assert tpm.predicted(config) != tpm.predicted(config + b" ")


def test_a_tpm_answer_is_checked() -> None:
    assert tpm.response_code(bytes.fromhex("80010000000a00000000")) == 0
    assert tpm.response_code(bytes.fromhex("80010000000a00000922")) == 0x922
    for bad in (b"", bytes.fromhex("80010000001000000000")):
        with pytest.raises(tpm.TpmError):
            tpm.response_code(bad)


def test_extend_talks_to_the_device_and_reports_a_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for /dev/tpmrm0 (a Unix socket: what a real TPM can't be made to do, refuse an extend)."""
    path = tmp_path / "tpm.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen = []

    def answer() -> None:
        conn, _ = server.accept()
        seen.append(conn.recv(4096))
        conn.sendall(bytes.fromhex("80010000000a00000149"))  # TPM_RC_... a refusal
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))
    monkeypatch.setattr(tpm.os, "open", lambda *_a, **_k: client.detach())
    with pytest.raises(tpm.TpmError, match="response code 0x149"):
        tpm.extend(b"config", device=path)
    thread.join()
    assert seen[0] == tpm.extend_command(15, hashlib.sha256(b"config").digest())


def test_no_tpm_is_said_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    config = tmp_path / "unit.json"
    config.write_text("{}")
    monkeypatch.setattr(tpm, "DEVICE", tmp_path / "no-tpmrm0")
    assert tpm.main([str(config)]) == 1
    assert "no TPM" in capsys.readouterr().out
    assert tpm.main([]) == 2
