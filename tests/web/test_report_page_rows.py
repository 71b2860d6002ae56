"""The unit's report page builds its long lists only as far as it draws them (report6); the rest is
one link away: the JSON (and the XLSX) carry every row, to the unit's people only."""

from __future__ import annotations

import re

from server.web.pages.main import MAX_ROWS
from tests.web.conftest import Web
from tests.web.test_long_tables import _many_records


def test_the_page_draws_the_first_rows_and_links_the_full_lists(web: Web) -> None:
    _many_records(web, MAX_ROWS + 30)  # external records of ua: the revenue list and the record check
    mgr = web.as_("mgr-a")
    html = mgr.get("/units/ua/report?year=2025").text
    revenue = html.split('id="table-revenue"', 1)[1].split("</details>", 1)[0]
    assert 'data-rows="' + str(MAX_ROWS + 31) + '"' in html.split('id="table-revenue"', 1)[1][:200]
    assert revenue.count("<tr>") == MAX_ROWS + 1  # the header and the page's rows
    assert "SR-N1<" in revenue and f"SR-N{MAX_ROWS}<" not in revenue  # the earliest first
    json_link = re.search(r'id="download-json" href="([^"]+)"', html)
    xlsx_link = re.search(r'id="download-xlsx" href="([^"]+)"', html)
    assert json_link and xlsx_link
    full = mgr.get(json_link.group(1))
    assert full.status_code == 200
    rows = full.json()["tables"]["revenue"]["rows"]
    assert len(rows) == MAX_ROWS + 31 and rows[-1]["record_no"] == f"SR-N{MAX_ROWS + 30}"
    assert mgr.get(xlsx_link.group(1)).status_code == 200
    # another unit's manager: neither the page nor the full lists
    other = web.as_("mgr-b")
    assert other.get(json_link.group(1)).status_code in (403, 404)
    assert other.get(xlsx_link.group(1)).status_code in (403, 404)
    assert other.get("/units/ua/report?year=2025").status_code in (403, 404)


def test_the_api_pages_the_per_record_lists_for_the_units_people_only(web: Web) -> None:
    _many_records(web, 25)
    mgr = web.as_("mgr-a")
    url = "/api/v1/evaluation/2025/units/ua"
    full = mgr.get(url).json()
    assert all("total" not in t for t in full["tables"].values())  # whole by default, as before
    got: dict[str, list[dict[str, object]]] = {"revenue": [], "reconciliation": []}
    for offset in range(0, 40, 10):
        page = mgr.get(url, params={"rows": 10, "offset": offset}).json()
        assert (page["summary"], page["unit"], page["reconciliation"]) == (
            full["summary"], full["unit"], full["reconciliation"])  # the same figures on every page
        for key, t in page["tables"].items():
            if key in got:
                assert (t["total"], t["offset"]) == (len(full["tables"][key]["rows"]), offset)
                got[key] += t["rows"]
            else:
                assert t == full["tables"][key], key
    assert got["revenue"] == full["tables"]["revenue"]["rows"] and len(got["revenue"]) == 26
    assert got["reconciliation"] == full["tables"]["reconciliation"]["rows"] and len(got["reconciliation"]) > 10
    # another unit's manager gets no page of it; nonsense is refused with the field named
    assert web.as_("mgr-b").get(url, params={"rows": 10}).status_code in (403, 404)
    bad = mgr.get(url, params={"rows": -1})
    assert bad.status_code == 422 and "rows" in bad.text
