"""The fleet as the central team sees it: GET /v1/fleet (JSON) and the page at / — per site, each unit's state, its
failure (step and reason), core, bank, PCR 15 expected against reported with a mismatch flagged, and its branding;
a hostile reason string stays text."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser

import pytest

from tests.serve_support import ADMIN, ADMIN_TOKEN, Service

pytest_plugins = ["tests.serve_fixtures"]

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
WRONG_PCR = hashlib.sha256(b"someone else's boot chain").hexdigest()


@pytest.fixture
def fleet(service: Service) -> Service:
    """berlin: READY, FAILED (hostile reason), registered, enrolled; munich: READY with the wrong PCR 15."""
    service.enrol("J30BRN01")
    assert service.report("J30BRN01", 1).status_code == 201
    service.enrol("J30BRN02", branding={"oem_name": "<b>Evil</b> OEM", "product": "Edge & Co", "support_url": None})
    assert service.report("J30BRN02", 1).status_code == 201
    failed = service.report(
        "J30BRN02", 2, status="FAILED", reason=HOSTILE, fault="step", failed_step="vm.web01.define", bank="b"
    )
    assert failed.status_code == 201
    service.register("J30BRN03")
    service.enrol("J30BRN04")
    service.enrol("J30MUC01", site="munich")
    assert service.report("J30MUC01", 7, pcr15=WRONG_PCR).status_code == 201
    return service


def test_fleet_json_groups_units_by_site_with_their_last_state(fleet: Service) -> None:
    answer = fleet.client.get("/v1/fleet", headers=ADMIN)
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["counts"] == {"registered": 1, "enrolled": 1, "READY": 2, "FAILED": 1}
    assert [s["site"] for s in doc["sites"]] == ["berlin", "munich"]
    berlin = {u["serial"]: u for u in doc["sites"][0]["units"]}
    assert list(berlin) == ["J30BRN01", "J30BRN02", "J30BRN03", "J30BRN04"]
    assert doc["sites"][0]["counts"] == {"registered": 1, "enrolled": 1, "READY": 1, "FAILED": 1}
    assert berlin["J30BRN01"]["state"] == "READY" and berlin["J30BRN01"]["pcr15_mismatch"] is False
    failed = berlin["J30BRN02"]
    assert failed["state"] == "FAILED" and failed["last_seq"] == 2
    assert failed["last_report"]["failed_step"] == "vm.web01.define" and failed["last_report"]["reason"] == HOSTILE
    assert failed["last_report"]["bank"] == "b" and failed["branding"]["oem_name"] == "<b>Evil</b> OEM"
    assert berlin["J30BRN03"]["state"] == "registered" and berlin["J30BRN03"]["last_report"] is None
    assert berlin["J30BRN04"]["state"] == "enrolled" and berlin["J30BRN04"]["last_seen_at"] is not None
    munich = doc["sites"][1]["units"][0]
    assert munich["pcr15_mismatch"] is True and munich["last_report"]["pcr15"] == WRONG_PCR


class _Rows(HTMLParser):
    """The text of each <tr id="unit-…">, and every tag the page uses."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr" and (row := dict(attrs).get("id", "") or "").startswith("unit-"):
            self._row = row.removeprefix("unit-")
            self.rows[self._row] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self.rows[self._row] += data


def test_fleet_page_shows_each_unit_and_escapes_what_boxes_sent(fleet: Service) -> None:
    answer = fleet.client.get("/", auth=("ops", ADMIN_TOKEN))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["cache-control"] == "no-store"
    html = answer.text
    assert HOSTILE not in html and "<b>Evil</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert '<meta http-equiv="refresh" content="30">' in html
    assert "Site berlin" in html and "Site munich" in html

    page = _Rows()
    page.feed(html)
    assert not [t for t, a in page.tags if t in ("script", "link", "iframe", "object", "img")], "no script, no asset"
    assert not [a for _, a in page.tags if "src" in a]
    rows = page.rows
    assert set(rows) == {"J30BRN01", "J30BRN02", "J30BRN03", "J30BRN04", "J30MUC01"}
    assert "READY" in rows["J30BRN01"] and "dell-poweredge-r650" in rows["J30BRN01"]
    assert "PCR 15 mismatch" not in rows["J30BRN01"]
    failed = rows["J30BRN02"]
    assert "FAILED" in failed and "vm.web01.define" in failed and "(step)" in failed and HOSTILE in failed
    assert "<b>Evil</b> OEM" in failed and "Edge & Co" in failed
    assert "registered" in rows["J30BRN03"] and "enrolled" in rows["J30BRN04"]
    mismatch = rows["J30MUC01"]
    assert "PCR 15 mismatch" in mismatch and WRONG_PCR[:16] in mismatch
    assert fleet.unit("J30MUC01").pcr15_expected[:16] in mismatch
    assert "ACME Systems" in rows["J30BRN01"] and "Edge Box" in rows["J30BRN01"]
    links = [a.get("href") for t, a in page.tags if t == "a"]
    assert "https://acme.example/support" in links


def test_fleet_page_of_an_empty_fleet(service: Service) -> None:
    answer = service.client.get("/", headers=ADMIN)  # Bearer works for the page as well
    assert answer.status_code == 200 and "No unit is registered yet" in answer.text
