"""Closed evaluation periods through the web (issue 13, item 5): only the operator closes and
reopens; unit managers (the graded side, either unit) and evaluators are refused; the reports of a
closed period (API, page, workbook) come from the signed snapshot with late records beside it."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from openpyxl import load_workbook

from server.evaluation import snapshot
from tests.web.conftest import T0, Web


def _keyed(make_web: Callable[..., Web], tmp_path: Path) -> tuple[Web, str]:
    key, _ = snapshot.generate_key(tmp_path / "snapshot.key")
    return make_web(snapshot_key_file=str(tmp_path / "snapshot.key")), snapshot.public_key_b64(key)


def test_only_the_operator_closes_and_reopens(make_web: Callable[..., Web], tmp_path: Path) -> None:
    web, _ = _keyed(make_web, tmp_path)
    for login in ("mgr-a", "mgr-b", "eva"):
        c = web.as_(login)
        assert c.post("/api/v1/evaluation/2025/close", json={}).status_code == 403, login
    assert web.as_("mgr-b").get("/api/v1/evaluation/2025/closing").status_code == 403
    ops = web.as_("ops")
    assert ops.post("/api/v1/evaluation/2025/close", json={"confirm": False}).status_code == 422
    r = ops.post("/api/v1/evaluation/2025/close", json={})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["closed_by"] == "account:ops"
    assert ops.post("/api/v1/evaluation/2025/close", json={}).json()["error"]["code"] == "period_closed"
    for login in ("mgr-a", "mgr-b", "eva"):
        c = web.as_(login)
        assert c.post("/api/v1/evaluation/2025/reopen", json={"reason": "想改分数"}).status_code == 403, login
    assert web.as_("eva").get("/api/v1/evaluation/2025/closing").json()["closed"] is True
    assert ops.post("/api/v1/evaluation/2025/reopen", json={"reason": ""}).status_code == 422
    assert ops.post("/api/v1/evaluation/2025/reopen", json={"reason": "   "}).status_code == 422
    r = ops.post("/api/v1/evaluation/2025/reopen", json={"reason": "补传数据到达"})
    assert r.status_code == 200 and r.json()["reopened_by"] == "account:ops"
    again = ops.post("/api/v1/evaluation/2025/reopen", json={"reason": "x"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "period_not_closed"
    audit = web.sql("SELECT action, actor FROM audit_log WHERE table_name = 'period_snapshots' ORDER BY id")
    assert audit == [("INSERT", "account:ops"), ("UPDATE", "account:ops")]
    state = web.as_("eva").get("/api/v1/evaluation/2025/closing").json()
    assert state["closed"] is False and state["history"][0]["reopen_reason"] == "补传数据到达"


def test_without_a_key_nothing_is_closed(web: Web) -> None:
    r = web.as_("ops").post("/api/v1/evaluation/2025/close", json={})
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_snapshot_key"
    assert web.sql("SELECT count(*) FROM period_snapshots") == [(0,)]


def test_closed_reports_read_the_snapshot_and_show_late_records_apart(
    make_web: Callable[..., Web], tmp_path: Path
) -> None:
    web, public = _keyed(make_web, tmp_path)
    eva = web.as_("eva")
    before = eva.get("/api/v1/evaluation/2025/units/ua").json()
    assert web.as_("ops").post("/api/v1/evaluation/2025/close", json={}).status_code == 201
    # a late, spooled run of 3 h on ua-xrd in the closed year
    web.sql(
        "INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival, start_seq)"
        " VALUES ('ua-xrd-a1', 'ua-xrd', %s, %s, 'running', true, 'spool', 50)",
        (T0 + timedelta(days=30), T0 + timedelta(days=30, hours=3)),
    )
    after = eva.get("/api/v1/evaluation/2025/units/ua").json()
    assert after["instruments"] == before["instruments"]
    assert after["score_sheet"] == before["score_sheet"]
    assert after["closed"]["version"] == 1
    (row,) = after["tables"]["amendment"]["rows"]
    assert row["instrument_id"] == "ua-xrd" and row["running_added"] == 3.0
    # the graded unit reads its own closed report; the other unit still cannot
    assert web.as_("mgr-a").get("/api/v1/evaluation/2025/units/ua").json()["closed"]["version"] == 1
    assert web.as_("mgr-b").get("/api/v1/evaluation/2025/units/ua").status_code == 404
    assert web.as_("mgr-b").get("/api/v1/evaluation/2025/snapshot.json").status_code == 403
    # region, workbook and page
    region = eva.get("/api/v1/evaluation/2025/region").json()
    assert [r["instrument_id"] for r in region["tables"]["amendment"]["rows"]] == ["ua-xrd"]
    wb = load_workbook(io.BytesIO(eva.get("/api/v1/evaluation/2025/units/ua/workbook.xlsx").content))
    assert "结账后补充记录（不计入结账结果）" in wb.sheetnames
    page = eva.get("/units/ua/report?period=2025")
    assert page.status_code == 200 and 'id="closed-banner"' in page.text and "结账后补充记录" in page.text
    assert 'id="closed-banner"' in eva.get("/overview?period=2025").text
    # grades of a closed period do not move
    r = eva.post("/api/v1/evaluation/2025/units/ua/expert-scores",
                 json={"criterion": "atmosphere", "points": 5, "note": "结账后补评"})  # fmt: skip
    assert r.status_code == 409 and r.json()["error"]["code"] == "period_closed"
    # the evaluator's download verifies offline against the deployment's key
    doc = eva.get("/api/v1/evaluation/2025/snapshot.json").json()
    assert snapshot.verify(doc, public).ok
    assert not snapshot.verify({**doc, "payload": doc["payload"].replace("ua-xrd", "ua-xrX", 1)}, public).ok


def test_an_altered_snapshot_is_refused_not_shown(make_web: Callable[..., Web], tmp_path: Path) -> None:
    web, _ = _keyed(make_web, tmp_path)
    assert web.as_("ops").post("/api/v1/evaluation/2025/close", json={}).status_code == 201
    web.sql("ALTER TABLE period_snapshot_parts DISABLE TRIGGER period_snapshot_parts_guard")
    web.sql("UPDATE period_snapshot_parts SET body = convert_to(replace(convert_from(body, 'UTF8'), '甲大学',"
            " '甲大学（改）'), 'UTF8') WHERE part = 'unit/ua'")  # fmt: skip
    r = web.as_("eva").get("/api/v1/evaluation/2025/units/ua")
    assert r.status_code == 500 and r.json()["error"]["code"] == "snapshot_altered"
    assert "甲大学（改）" not in r.text
    assert web.as_("eva").get("/api/v1/evaluation/2025/region").status_code == 200  # its own part is intact
