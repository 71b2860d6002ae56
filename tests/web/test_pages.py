"""Every page renders for the roles allowed to see it, in Chinese and (switched) in English."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
from openpyxl import load_workbook

from server.store.times import TZ
from tests.web.charthelp import figures
from tests.web.conftest import Web
from tests.web.livehelp import store_live

PAGES = {
    "ops": ["/registry", "/registry?unit=ua", "/audit", "/overview?year=2025", "/overview?year=2025&code=03040702",
            "/units/ua/board", "/units/ua/report?year=2025", "/instruments/ua-xrd?span=week&start=2025-03-01",
            "/catalog", "/catalog/ua-xrd", "/quarantine"],
    "mgr-a": ["/units/ua/board", "/units/ua/report?year=2025", "/instruments/ua-xrd?span=month&start=2025-03-01",
              "/registry"],
    "eva": ["/overview?year=2025", "/units/ub/report?year=2025", "/instruments/ub-sem", "/registry"],
}


@pytest.mark.parametrize("login", sorted(PAGES))
def test_pages_render(web: Web, login: str) -> None:
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running")
    c = web.as_(login)
    for path in PAGES[login]:
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "<html" in r.text and "机时" in r.text


def test_language_switch_sticks(web: Web) -> None:
    c = web.as_("mgr-a")
    assert "实时看板" in c.get("/units/ua/board").text
    r = c.get("/units/ua/board?lang=en")
    assert "live board" in r.text and "lang=en" in r.headers["set-cookie"]
    assert "Running" in c.get("/units/ua/report?year=2025").text or "Utilization" in c.get(
        "/units/ua/report?year=2025").text
    c.cookies.set("lang", "en")
    assert "Log out" in c.get("/registry").text
    r = c.get("/api/v1/units/ub")
    assert r.json()["error"]["message"].startswith("Unit 'ub' not found")


def _local_ms(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def test_timeline_shows_states_sessions_and_gaps(web: Web) -> None:
    mgr = web.as_("mgr-a")
    data = mgr.get("/api/v1/instruments/ua-xrd/timeline", params={"start": "2025-03-03"}).json()
    assert [s["state"] for s in data["segments"]] == ["idle", "running", "idle"]
    assert [g["status"] for g in data["gaps"]] == ["offline"]
    day = {d["day"]: d for d in data["daily"]}
    assert day["2025-03-03"]["verified"] == 2.0
    page = mgr.get("/instruments/ua-xrd?span=day&start=2025-03-03").text
    lanes = {tr["name"]: tr for tr in figures(page)["运行时间线"]["data"]}
    run = data["segments"][1]
    assert lanes["st-running"]["base"] == [_local_ms(run["start_at"])] and lanes["st-running"]["y"] == [0]
    assert lanes["st-running"]["x"] == [(datetime.fromisoformat(run["end_at"])
                                         - datetime.fromisoformat(run["start_at"])).total_seconds() * 1000]
    assert lanes["cov-offline"]["y"] == [2] and "agent stopped" in lanes["cov-offline"]["hovertext"][0]
    assert 'id="total-verified">2.00<' in page


def test_report_matches_the_evaluation_and_downloads(web: Web) -> None:
    mgr = web.as_("mgr-a")
    rep = mgr.get("/api/v1/evaluation/2025/units/ua").json()
    ind = rep["unit"]["indicators"]
    assert ind["evaluated"] == 2 and ind["open"] == 2 and ind["open_rate"] == 1.0
    assert ind["running_hours"]["verified"] == 2.0 and ind["external_hours"]["verified"] == 2.0
    assert ind["revenue"] == "450.00"
    page = mgr.get("/units/ua/report?year=2025").text
    assert 'id="kpi-open-rate"><span>开放率</span><b>100.0%</b>' in page
    assert "450.00" in page
    r = mgr.get("/api/v1/evaluation/2025/units/ua/workbook.xlsx")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxml")
    wb = load_workbook(io.BytesIO(r.content), read_only=True)
    assert "概览" in wb.sheetnames
    assert mgr.get("/api/v1/evaluation/20x5/units/ua").json()["error"]["code"] == "bad_period"


def test_overview_lists_low_use_and_duplicates(web: Web) -> None:
    eva = web.as_("eva")
    low = eva.get("/api/v1/evaluation/2025/low-use").json()
    assert {i["instrument_id"] for i in low["instruments"]} >= {"ua-nmr", "ub-sem"}
    dup = eva.get("/api/v1/evaluation/2025/duplicates", params={"classification_code": "03040702"}).json()
    assert {d["instrument_id"] for d in dup} == {"ua-xrd", "ub-sem"}
    page = eva.get("/overview?year=2025").text
    assert 'id="ranking"' in page and "甲大学" in page and "乙研究所" in page
