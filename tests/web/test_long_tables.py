"""Long report sections stay usable (issue 18): every section but the score sheet starts folded
with its row count; one longer than a screenful gets a filter; the page draws at most MAX_ROWS rows
of it (the full list is in the XLSX and the JSON), and the filter narrows the rows in the browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from server.web.pages.main import FOLD_ROWS, MAX_ROWS, OPEN_SECTIONS
from tests.web.conftest import T0, Web
from tests.web.livehelp import serve
from tests.web.test_browser import browser, logged_in

__all__ = ["browser"]


def _many_records(web: Web, n: int) -> None:
    web.sql("INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours, amount,"
            " user_type, applicant_name, applicant_org_name)"
            " SELECT 'ua', 'ua-nmr', 'SR-N' || g, %s + g * interval '1 day',"
            " %s + g * interval '1 day' + interval '1 hour',"
            " 1.0, 100, 130, '某人', '某公司' FROM generate_series(1, %s) g", (T0, T0, n))


def _sections(html: str) -> dict[str, tuple[int, bool]]:
    """Section key -> (rows drawn, starts open)."""
    out = {}
    for m in re.finditer(r'<details class="card table-card report-table" id="table-(\w+)" data-rows="(\d+)" (open)?',
                         html):
        body = html[m.end():].split("</details>", 1)[0]
        out[m.group(1)] = (body.count("<tr>") - (1 if "<table>" in body else 0), m.group(3) == "open")
    return out


def test_long_sections_fold_and_draw_at_most_max_rows(web: Web) -> None:
    _many_records(web, MAX_ROWS + 30)
    html = web.as_("mgr-a").get("/units/ua/report?year=2025").text
    sections = _sections(html)
    long = {k: v for k, v in sections.items() if v[0] > FOLD_ROWS}
    assert long, sections
    for key, (drawn, is_open) in long.items():
        assert not is_open and drawn <= MAX_ROWS, key
    # the page is its figures: every section folded (its rows a click away) but the score sheet
    assert {k for k, (_, is_open) in sections.items() if is_open} == set(OPEN_SECTIONS)
    assert len(sections) >= 10
    assert f"共 {MAX_ROWS + 31} 行；完整列表见 XLSX 和 JSON" in html  # the seeded record and the new ones
    assert html.count('class="table-filter"') == len(long)
    en = web.as_("mgr-a").get("/units/ua/report?year=2025&lang=en").text
    assert f"of {MAX_ROWS + 31} rows; the full list is in the XLSX and the JSON" in en


SCREEN = {"width": 1280, "height": 800}
MAX_SCREENS = 5  # "fits in a few screens, with its details a click away" (issue 18)


def test_the_report_fits_in_a_few_screens_and_the_filter_narrows_the_rows(
        browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    _many_records(web, MAX_ROWS + 50)  # a unit with a year of daily service records
    with serve(web.dsn) as base, logged_in(browser, base, "mgr-a", viewport=SCREEN) as page:
        for lang in ("en", "zh"):
            page.goto(base + f"/units/ua/report?year=2025&lang={lang}")
            height = page.evaluate("document.body.scrollHeight")
            assert height <= MAX_SCREENS * SCREEN["height"], f"[{lang}] the report is {height} px tall"
        section = page.locator("details.report-table:has(input.table-filter)").first
        assert int(section.get_attribute("data-rows") or 0) > MAX_ROWS
        section.locator("summary").click()  # the details: one click away
        rows = section.locator("table tr:not([hidden])")
        before = rows.count()
        assert before > FOLD_ROWS + 1
        assert page.evaluate("document.body.scrollHeight") > MAX_SCREENS * SCREEN["height"]  # they were folded
        section.locator("input.table-filter").fill("SR-N42")
        page.wait_for_function("""(el) => el.querySelectorAll('table tr:not([hidden])').length < 5""",
                               arg=section.element_handle())
        assert "SR-N42" in section.locator("table tr:not([hidden])").nth(1).inner_text()
        assert "/" in section.locator(".filter-count").inner_text()
        section.locator("input.table-filter").fill("")
        assert rows.count() == before
