"""`oemkit catalog list/show` for people and scripts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from oemkit.catalog.store import Catalog
from oemkit.cli.app import app

from .conftest import REPO

runner = CliRunner()


def test_list_json_has_every_model(catalog: Catalog) -> None:
    result = runner.invoke(app, ["catalog", "list", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == catalog.ids
    assert all({"id", "vendor", "family", "model"} <= r.keys() for r in rows)


def test_list_table_for_people(catalog: Catalog) -> None:
    result = runner.invoke(app, ["catalog", "list"])
    assert result.exit_code == 0
    for model_id in catalog.ids:
        assert model_id in result.stdout


@pytest.mark.parametrize("model_id", [p.stem for p in (REPO / "hardware_catalog").glob("*/*.yaml")])
def test_show_every_model(model_id: str, catalog: Catalog) -> None:
    full_id = next(i for i in catalog.ids if i.endswith(model_id))
    result = runner.invoke(app, ["catalog", "show", full_id])
    assert result.exit_code == 0, result.output
    model = catalog.get(full_id)
    assert model.nics[0].id in result.stdout and model.identity.product_names[0] in result.stdout
    as_json = runner.invoke(app, ["catalog", "show", full_id, "--json"])
    assert json.loads(as_json.stdout)["id"] == full_id


def test_show_unknown_model_suggests() -> None:
    result = runner.invoke(app, ["catalog", "show", "dell-poweredge-r65"])
    assert result.exit_code == 1
    assert "did you mean dell-poweredge-r650" in result.stderr


def test_broken_catalog_is_reported_not_raised(tmp_path) -> None:
    (tmp_path / "dell").mkdir()
    (tmp_path / "dell" / "x.yaml").write_text("apiVersion: oemkit/v1\nkind: HardwareModel\nid: [\n")
    result = runner.invoke(app, ["--catalog", str(tmp_path), "catalog", "list"])
    assert result.exit_code == 2
    assert "x.yaml:4:1" in result.stderr and "Traceback" not in result.output  # located, not raised
