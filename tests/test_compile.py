"""Sealing unit configs at the factory: keys, one unit, a whole order."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypervisor_core import config
from oemkit.cli.app import app

from .conftest import REPO
from .firstboot_kit import KEY, PUB, public_key

runner = CliRunner()
PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"


def _compile(out: Path, serial: str = "J30ABC12", *extra: str):
    return runner.invoke(
        app,
        ["compile", str(PROFILE), "--site", str(SITE), "--serial", serial, "--key", str(KEY), "-o", str(out), *extra],
    )


def test_keys_init_private_0600_and_never_overwrites(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "init", "--dir", str(tmp_path / "k")])
    assert result.exit_code == 0
    assert stat.S_IMODE((tmp_path / "k" / "signing.key").stat().st_mode) == 0o600
    assert config.read_public_key((tmp_path / "k" / "signing.pub").read_text())
    again = runner.invoke(app, ["keys", "init", "--dir", str(tmp_path / "k")])
    assert again.exit_code == 2 and "refusing to replace" in again.stderr


def test_compile_is_sealed_and_deterministic(tmp_path: Path) -> None:
    assert _compile(tmp_path / "a.json").exit_code == 0
    assert _compile(tmp_path / "b.json").exit_code == 0
    a = (tmp_path / "a.json").read_bytes()
    assert a == (tmp_path / "b.json").read_bytes()  # same inputs, same bytes
    doc = json.loads(a)
    assert doc["schema"] == "oemkit.unit/v1"
    assert (doc["serial"], doc["model"], doc["site"]) == ("J30ABC12", "dell-poweredge-r650", "ber01")
    assert doc["content_id"].startswith("sha256:") and doc["signature"].startswith("ed25519:")
    assert doc["host"]["hostname"] == "br-ber01-j30abc12"
    assert doc["host"]["timezone"] == "Europe/Berlin"
    assert doc["management"]["uplinks"]["rules"][0]["ports"] == [
        {"id": "LOM1", "pci_addresses": ["0000:04:00.0"], "driver": "tg3", "position": None, "of": None}
    ]
    assert doc["identity"]["product_names"] == ["PowerEdge R650"]
    assert config.load(a, public_key()).serial == "J30ABC12"


def test_secrets_are_only_hashes(tmp_path: Path) -> None:
    _compile(tmp_path / "u.json")
    text = (tmp_path / "u.json").read_text()
    admin = json.loads(text)["security"]["admins"][0]
    profile_hash = next(line.split('"')[1] for line in PROFILE.read_text().splitlines() if "password_hash" in line)
    assert admin == {"name": "storeops", "password_hash": profile_hash, "ssh_keys": admin["ssh_keys"]}
    assert '"password"' not in text and '"passwd"' not in text  # no key that could carry a plaintext secret


def test_compile_refuses_an_invalid_unit(tmp_path: Path) -> None:
    bad = runner.invoke(
        app,
        [
            "compile",
            str(REPO / "tests/data/profiles/broken/bad-ip.yaml"),
            "--site",
            str(SITE),
            "--serial",
            "J30ABC12",
            "--key",
            str(KEY),
            "-o",
            str(tmp_path / "u.json"),
        ],
    )
    assert bad.exit_code == 1 and not (tmp_path / "u.json").exists()
    assert _compile(tmp_path / "u.json", "bad serial").exit_code == 1
    assert (
        runner.invoke(
            app,
            [
                "compile",
                str(PROFILE),
                "--site",
                str(SITE),
                "--serial",
                "X123",
                "--key",
                str(PUB),
                "-o",
                str(tmp_path / "u.json"),
            ],
        ).exit_code
        == 2
    )  # a public key can't sign


def test_orders_compile_per_row_and_report_failures(tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    rows = [
        "serial,profile,site",
        f"SN0001,{PROFILE},{SITE}",
        f"SN0002,{REPO / 'profiles/remote-clinic.yaml'},{REPO / 'profiles/sites/clinic-valley.yaml'}",
        f"SN0001,{PROFILE},{SITE}",  # duplicate serial
        f"bad serial!,{PROFILE},{SITE}",
        f"SN0003,{PROFILE},{REPO / 'profiles/sites/clinic-valley.yaml'}",  # a site for another profile
        f"SN0004,{PROFILE},{SITE}",
    ]
    orders.write_text("\n".join(rows) + "\n")
    result = runner.invoke(
        app, ["compile", "--orders", str(orders), "--key", str(KEY), "-o", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 1
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(r["serial"], r["status"]) for r in lines] == [
        ("SN0001", "ok"),
        ("SN0002", "ok"),
        ("SN0001", "error"),
        ("bad serial!", "error"),
        ("SN0003", "error"),
        ("SN0004", "ok"),
    ]
    assert "already ordered on line 2" in lines[2]["problems"][0]["message"]
    assert "for profile 'remote-clinic'" in lines[4]["problems"][0]["message"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["SN0001.json", "SN0002.json", "SN0004.json"]


def test_orders_paths_are_relative_to_the_order_file(tmp_path: Path) -> None:
    orders = REPO / "profiles" / "orders-example.csv"
    result = runner.invoke(app, ["compile", "--orders", str(orders), "--key", str(KEY), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.json"))) == len(orders.read_text().splitlines()) - 1


@pytest.mark.parametrize("header", ["serial,profile\nX,y\n", ""])
def test_orders_without_the_columns_are_unreadable(header: str, tmp_path: Path) -> None:
    orders = tmp_path / "o.csv"
    orders.write_text(header)
    result = runner.invoke(app, ["compile", "--orders", str(orders), "--key", str(KEY), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "columns" in result.stderr


def test_orders_refuse_unknown_columns_and_report_empty_cells(tmp_path: Path) -> None:
    orders = tmp_path / "o.csv"
    orders.write_text(f"serial,profile,site,modle\nSN0001,{PROFILE},{SITE},x\n")
    result = runner.invoke(app, ["compile", "--orders", str(orders), "--key", str(KEY), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown column 'modle'" in result.stderr
    orders.write_text(f"serial,profile,site\nSN0001,,{SITE}\n")
    result = runner.invoke(
        app, ["compile", "--orders", str(orders), "--key", str(KEY), "-o", str(tmp_path / "o"), "--json"]
    )
    assert result.exit_code == 1 and "the profile column is empty" in result.stdout


def test_an_order_whose_serial_makes_the_host_name_too_long_points_at_the_template(tmp_path: Path) -> None:
    template = '"{site}-{serial}-' + "a" * 52 + '"'  # fits a 3-character serial; 65 characters with SN0001
    profile = tmp_path / "long.yaml"
    profile.write_text(PROFILE.read_text().replace('"br-{site}-{serial}"', template))
    orders = tmp_path / "o.csv"
    orders.write_text(f"serial,profile,site\nSN0001,long.yaml,{SITE}\n")
    result = runner.invoke(app, ["compile", "--orders", str(orders), "--key", str(KEY), "-o", str(tmp_path / "o"),
                                 "--json"])  # fmt: skip
    problem = json.loads(result.stdout)["problems"][0]
    line = next(n for n, text in enumerate(profile.read_text().splitlines(), 1) if "hostname:" in text)
    assert result.exit_code == 1
    assert (problem["file"], problem["line"], problem["path"]) == (str(profile), line, "host.hostname")
    assert problem["message"].endswith("is 65 characters, the limit is 63")


def test_an_order_row_whose_profile_is_a_fifo_is_exit_2_and_leaves_no_folder(tmp_path: Path) -> None:
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    orders = tmp_path / "o.csv"
    orders.write_text(f"serial,profile,site\nSN0001,p.yaml,{SITE}\n")
    out = tmp_path / "units"
    result = runner.invoke(app, ["compile", "--orders", str(orders), "--key", str(KEY), "-o", str(out)])
    assert result.exit_code == 2 and "a FIFO" in result.stderr
    assert not out.exists()  # nothing sealed: no folder made
