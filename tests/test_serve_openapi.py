"""docs/openapi.json is the service's OpenAPI document as FastAPI generates it (sorted keys): a change to a route or
a schema shows here as a diff to review; `pytest --regenerate-golden` rewrites it."""

from __future__ import annotations

import json

from oemkit.serve.app import openapi_json
from tests.conftest import REPO

DOC = REPO / "docs" / "openapi.json"


def test_openapi_document_is_checked_in(golden) -> None:
    golden(DOC, openapi_json())


def test_openapi_document_describes_the_contract() -> None:
    doc = json.loads(openapi_json())
    paths = doc["paths"]
    assert set(paths) == {"/", "/healthz", "/v1/fleet", "/v1/units", "/v1/units/{serial}", "/v1/units/{serial}/enrol",
                          "/v1/units/{serial}/reports"}  # fmt: skip
    report = paths["/v1/units/{serial}/reports"]["post"]
    assert report["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Report"}
    assert {"X-Oemkit-Signature".lower()} <= {p["name"].lower() for p in report["parameters"]}
    assert set(report["responses"]) >= {"201", "401", "403", "409", "413", "422", "429"}
    schemas = doc["components"]["schemas"]
    assert schemas["Report"]["additionalProperties"] is False and "Step" in schemas
    serial = next(p for p in report["parameters"] if p["name"] == "serial")
    assert serial["schema"]["pattern"] == "^[A-Za-z0-9](?:[A-Za-z0-9-]{1,30})[A-Za-z0-9]$"
    assert openapi_json() == openapi_json()  # stable: the same bytes every time
