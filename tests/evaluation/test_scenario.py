"""The hand-built scenario (tests/evaluation/scenario.py), every figure worked out by hand.

Built on the derived tables directly: the ingest path offers no callable to drive yet, so the
end-to-end version (signed records -> ingest -> derive -> these tables) is pending.

Evaluation year 2025, Asia/Shanghai. Running segments of I1 (agent A1), hours inside 2025:
  s1  2024-12-31 22:00 -> 01-01 02:00  carol (O3, external)  live      2.0 (4 h, 2 before the year)
  s2  03-10 09:00-12:00                alice (O1, own org)    live      3.0
  s3  03-10 14:00-18:00                carol                  spool     4.0
  s4  05-06 09:00-10:30                bob (O2, affiliated)   live      1.5  -> internal
  s5  06-03 10:00-13:00  agent offline dave (O4, external)    watched=f 3.0  -> unverified
  --  08-01 10:00-11:00  nobody logged in                     live      1.0  -> unattributed
  s6  09-09 08:00-10:00  os:guest (unmapped)                  live      2.0  -> unattributed
  s7  12-31 23:00 -> 2026-01-01 01:00  dave                   live      1.0 (2 h, 1 after the year)
  logbook 06-07 20:00 -> 06-08 04:00, 130: the agent watched again from 06-08 00:00, so 4.0 h
  unverified external.
I1 running: live 2+3+1.5+1+2+1 = 10.5, spool 4, unverified 3+4 = 7; verified 14.5, total 21.5.
I1 external: live 2+1 = 3, spool 4, unverified 3+4 = 7; verified 7, total 14.
I1 internal 3+1.5 = 4.5 live; unattributed 1+2 = 3 live.  (14 + 4.5 + 3 = 21.5)
I1 rated 1,400 (通用, whole year). Utilization 14.5/1400 = 1.0357 %, incl. 21.5/1400 = 1.5357 %.
I1 sharing 7/14.5 = 48.28 %, incl. 14/21.5 = 65.12 %.

I2 (专用, accepted 2025-07-01): s8 07-15 09-13 carol 4.0 live, s9 07-20 09-11 alice 2.0 live.
I2 rated 800 x 184/365 = 403.2877 (07-01..12-31 is 184 days). Sharing 4/6.
I3 is out of scope (250,000 CNY): its 3 h logbook entry shows per instrument, not in the unit.
I4 (500,000, rated override 1,000, never registered): 0 h, counts in the denominators.
I5 (exempted with approval): out of open rate, utilization and sharing.

Unit U1: evaluated I1, I2, I4 -> open: I1, I2 (registered 2025-09-15 < 2026-01-01) -> 2/3.
Rated 1400 + 403.2877 + 1000 = 2803.2877.
Utilization verified (14.5+6)/2803.2877 = 0.0073129; incl. (21.5+6)/2803.2877 = 0.0098099.
Mean of ratios verified (14.5/1400 + 6/403.2877 + 0)/3 = (0.0103571 + 0.0148777)/3 = 0.0084116.
Sharing verified (7+4)/20.5 = 0.5365854; incl. (14+4)/27.5 = 0.6545455.
Revenue (130 records starting in 2025): R1 2000 + R2 4000 + R3 1500.50 + R4 1000 = 8500.50
(R5 is internal 120, R6 is in 2024).

Reconciliation (tolerance 0.5 h):
  R1 I1 03-10 14-18 claims 4.0: s3 measured 4.0 -> ok.
  R2 I1 05-20 09-17 claims 8.0: agent watching, instrument idle -> 8.0 contradicted, 多报.
  R3 I2 07-15 09-12 claims 3.0: s8 inside the window 3.0 -> ok.
  R4 I1 06-03 09-14 claims 5.0: 3.0 unverified running, agent offline the whole window ->
     2.0 not measured, all of it unverifiable -> 无法核实.
  R5 I1 internal, 3.0 claimed, s2 3.0 -> ok.
  Uncovered external, verified: I1 external 7.0 (s1 2 + s3 4 + s7 1) minus what 130 windows cover
  (R1 covers s3's 4.0) = 3.0 (s1, s7); I2 4.0 minus R3's 3.0 = 1.0 (s8 12:00-13:00) -> unit 4.0 h.
  Unverified: I1 7.0 (s5 3 + logbook 4) minus R4's 3.0 (s5) = 4.0: the logbook entry has no record.
  Sessions listed for the unit: s1 (2.0), s8 (1.0), s7 (1.0).

Compliance (as of 2026-01-10, silent > 7 days): I2 accepted Tue 2025-07-01, 30 working days
later (no holiday in July/August 2025) is 2025-08-12, registered 2025-09-15: 34 days late.
I4 accepted 2019-03-01, never registered: not_registered and not_open. I4 (in scope) has no
agent; neither has I5, but I5 is exempted only from opening, so it is listed too. Agents: A1 last
watched 2026-01-01 01:00 (8.96 days before), A2 2025-07-21: both silent.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from openpyxl import load_workbook

from server import admin
from server.evaluation import compliance, privacy, reconciliation, review, rubric
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.evaluation.report import evaluate_region, unit_report
from server.store.times import TZ
from tests.evaluation import scenario

Y2025 = Period.year(2025)
AS_OF = datetime(2026, 1, 10, tzinfo=TZ)


@pytest.fixture
def db(scenario_db: str) -> str:
    return scenario_db


def test_indicators_by_hand(db: str) -> None:
    with psycopg.connect(db) as conn:
        ev = compute(conn, Y2025)
    i1 = ev.instruments["I1"]
    assert (i1.running.live, i1.running.spool, i1.running.unverified) == pytest.approx((10.5, 4.0, 7.0))
    assert (i1.external.live, i1.external.spool, i1.external.unverified) == pytest.approx((3.0, 4.0, 7.0))
    assert i1.internal.total == pytest.approx(4.5)
    assert i1.unattributed.total == pytest.approx(3.0)
    assert i1.rated_hours == pytest.approx(1400)
    assert i1.utilization.verified == pytest.approx(14.5 / 1400)
    assert i1.sharing.verified == pytest.approx(7 / 14.5)
    assert i1.sharing.including_unverified == pytest.approx(14 / 21.5)

    i2 = ev.instruments["I2"]
    assert i2.service_days == 184
    assert i2.rated_hours == pytest.approx(800 * 184 / 365)
    assert (i2.running.verified, i2.external.verified) == pytest.approx((6.0, 4.0))

    i3 = ev.instruments["I3"]
    assert not i3.in_scope and i3.external.unverified == pytest.approx(3.0)
    assert ev.instruments["I5"].exempted and not ev.instruments["I5"].evaluated
    assert ev.instruments["I4"].rated_hours == pytest.approx(1000)

    u = ev.units["U1"].figures
    assert (u.in_scope, u.exempted, u.evaluated, u.open) == (4, 1, 3, 2)
    assert u.open_rate == pytest.approx(2 / 3)
    assert u.rated_hours == pytest.approx(2803.2877, abs=1e-4)
    assert u.utilization.verified == pytest.approx(20.5 / 2803.28767, rel=1e-6)
    assert u.utilization.including_unverified == pytest.approx(27.5 / 2803.28767, rel=1e-6)
    assert u.utilization_mean.verified == pytest.approx((14.5 / 1400 + 6 / (800 * 184 / 365) + 0) / 3)
    assert u.sharing.verified == pytest.approx(11 / 20.5)
    assert u.sharing.including_unverified == pytest.approx(18 / 27.5)
    assert u.revenue == Decimal("8500.50")
    assert ev.units["U1"].cases == 1


def test_partial_period_clips_at_local_midnight(db: str) -> None:
    """Only 2025-12-31 (local): s7 contributes 23:00-24:00, 1 h, and nothing else runs."""
    with psycopg.connect(db) as conn:
        ev = compute(conn, Period.parse("2025-12-31..2026-01-01"))
    assert ev.instruments["I1"].running.total == pytest.approx(1.0)
    assert ev.instruments["I1"].rated_hours == pytest.approx(1400 / 365)


def test_reconciliation_by_hand(db: str) -> None:
    with psycopg.connect(db) as conn:
        rc = reconciliation.reconcile(conn, compute(conn, Y2025, ["U1"]), privacy.Pseudonymizer(b"k" * 32), ["U1"])
    by_no = {r.record_no: r for r in rc.records}
    assert set(by_no) == {"R1", "R2", "R3", "R4", "R5"}
    assert by_no["R1"].status == "ok" and by_no["R1"].measured_verified == pytest.approx(4.0)
    assert by_no["R2"].status == "overclaimed" and by_no["R2"].contradicted == pytest.approx(8.0)
    assert by_no["R3"].status == "ok" and by_no["R3"].measured_external == pytest.approx(3.0)
    r4 = by_no["R4"]
    assert r4.status == "unverifiable"
    assert (r4.measured_unverified, r4.unwatched_hours, r4.unverifiable, r4.contradicted) == pytest.approx(
        (3.0, 5.0, 2.0, 0.0)
    )
    assert r4.applicant_seen is True
    assert by_no["R5"].status == "ok"
    unc = {i.instrument_id: i for i in rc.instruments}
    assert unc["I1"].uncovered_verified == pytest.approx(3.0)
    assert unc["I1"].uncovered_unverified == pytest.approx(4.0)
    assert unc["I2"].uncovered_verified == pytest.approx(1.0)
    assert [s.session_id for s in rc.sessions] == ["s1", "s8", "s7"]
    assert [s.uncovered_verified for s in rc.sessions] == pytest.approx([2.0, 1.0, 1.0])
    u = rc.units["U1"]
    assert u.overclaimed_records == 1
    assert (u.contradicted_hours, u.uncovered_verified) == pytest.approx((8.0, 4.0))
    # Users appear as pseudonyms only.
    assert all(s.user.startswith("U-") for s in rc.sessions)


def test_compliance_by_hand(db: str) -> None:
    with psycopg.connect(db) as conn:
        findings, cal = compliance.check(conn, Y2025, as_of=AS_OF)
    got = {(f.rule, f.agent_id or f.instrument_id) for f in findings}
    assert got == {
        ("late_registration", "I2"),
        ("not_registered", "I4"),
        ("not_open", "I4"),
        ("no_agent", "I4"),
        ("no_agent", "I5"),
        ("agent_silent", "A1"),
        ("agent_silent", "A2"),
    }
    late = next(f for f in findings if f.rule == "late_registration")
    assert "2025-08-12" in late.detail and late.days == 34
    assert cal.note() == ""


def test_score_subsidy_and_expert_override(db: str) -> None:
    rb = rubric.load()
    with psycopg.connect(db) as conn:
        for key, points in (("management_system", 8), ("online_platform", 5), ("atmosphere", 6)):
            rubric.record_expert_score(conn, rb, "U1", "2025", key, points, "现场查看制度文件", "专家甲")
        rubric.record_expert_score(conn, rb, "U1", "2025", "service_cases", 12, "企业成果证据充分", "专家乙")
        with pytest.raises(ValueError):
            rubric.record_expert_score(conn, rb, "U1", "2025", "atmosphere", 7, "超出满分", "专家甲")
        conn.commit()
        result = evaluate_region(conn, Y2025, rb, privacy.Pseudonymizer(b"k" * 32), as_of=AS_OF)
    sheet = result.sheets["U1"]
    pts = {line.key: line.points for line in sheet.lines}
    # open 2/3 x 20 = 13.333; utilization 0.0073129 x 16/0.5 = 0.234; sharing 0.53659 >= 0.5 -> 15;
    # revenue 8500.50 x 5/100000 = 0.425025; cases overridden 12 (computed 1 x 3 = 3); experts 8+5+6.
    assert pts["open_rate"] == pytest.approx(40 / 3)
    assert pts["utilization"] == pytest.approx(20.5 / 2803.28767 * 32, rel=1e-5)
    assert pts["sharing"] == pytest.approx(15)
    assert pts["revenue"] == pytest.approx(0.425025)
    assert pts["service_cases"] == 12
    line = next(x for x in sheet.lines if x.key == "service_cases")
    assert line.computed == pytest.approx(3.0) and line.override is not None
    assert sheet.complete
    assert sheet.total == pytest.approx(13.333 + 0.234 + 15 + 0.425025 + 12 + 19, abs=0.01)
    assert sheet.grade == "不合格"
    assert result.subsidies["U1"].amount == Decimal("0.00")


def test_report_cli_xlsx_and_json_agree(db: str, tmp_path: Path) -> None:
    rc = admin.main(
        ["--dsn", db, "report", "--year", "2025", "--unit", "U1", "--out", str(tmp_path), "--as-of", "2026-01-10T00:00"]
    )
    assert rc == 0
    data = json.loads((tmp_path / "U1-2025.json").read_text(encoding="utf-8"))
    assert data["summary"]["open_rate"]["value"] == pytest.approx(2 / 3, abs=1e-6)
    assert data["summary"]["revenue"]["value"] == "8500.50"
    wb = load_workbook(tmp_path / "U1-2025.xlsx")
    assert {
        "概览",
        "开放率",
        "利用率",
        "共享率",
        "服务收入",
        "对外服务案例",
        "服务记录核对（差异）",
        "评分",
        "仪器明细",
    } <= set(wb.sheetnames)
    summary = {r[0]: r[1] for r in wb["概览"].iter_rows(min_row=5, values_only=True) if r[0]}
    assert summary["开放率"] == pytest.approx(2 / 3, abs=1e-6)
    assert summary["共享率（仅核验数据）"] == pytest.approx(11 / 20.5, abs=1e-6)
    # every table of the JSON is a sheet with the same rows
    for key, table in data["tables"].items():
        ws = wb[table["title"]]
        assert [c.value for c in ws[1]] == [c["label"] for c in table["columns"]], key
        assert ws.max_row - 1 >= len(table["rows"]), key
    # art. 17: no user name anywhere in the evaluator's files
    text = (tmp_path / "U1-2025.json").read_text(encoding="utf-8")
    for _, name, _ in scenario.USERS:
        assert name not in text
    for ws in wb.worksheets:
        for row in ws.iter_rows(values_only=True):
            assert not any(isinstance(v, str) and v in {n for _, n, _ in scenario.USERS} for v in row)


def test_unit_report_unknown_unit(db: str) -> None:
    with psycopg.connect(db) as conn, pytest.raises(LookupError):
        unit_report(conn, Y2025, "NOPE", rubric.load(), privacy.Pseudonymizer(b"k" * 32))


def test_pseudonyms_are_stable(db: str) -> None:
    with psycopg.connect(db) as conn:
        a = privacy.load(conn).user("carol")
        conn.commit()
    with psycopg.connect(db) as conn:
        b = privacy.load(conn).user("carol")
    assert a == b and a.startswith("U-") and "carol" not in a


def test_low_use_and_duplicate_review(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(db) as conn:
        items, units = review.low_use(compute(conn, Y2025), 0.2)
    # every evaluated instrument is far below 20 %; the general-purpose ones may be reassigned
    assert {(i.instrument_id, i.reassignable) for i in items} == {("I1", True), ("I2", False), ("I4", True)}
    assert units == ["U1"]
    # a proposed 200 kV electron microscope in Hohhot: I1 is the same small class (030401..)
    assert admin.main(["--dsn", db, "review", "duplicate", "--year", "2025", "--code", "03040100",
                       "--specs", "200 kV", "--location", "呼和浩特"]) == 0  # fmt: skip
    found = json.loads(capsys.readouterr().out)
    assert [c["instrument_id"] for c in found] == ["I1"]
    assert "同地区" in found[0]["match"] and "200" in found[0]["match"]
    assert found[0]["utilization"]["verified"] == pytest.approx(14.5 / 1400, abs=1e-6)


def test_evaluate_cli_is_reproducible(db: str, tmp_path: Path) -> None:
    args = ["--dsn", db, "evaluate", "--year", "2025", "--seed", "7", "--sample", "3"]
    assert admin.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert admin.main([*args, "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "evaluation-2025.json").read_text(encoding="utf-8"))
    b = json.loads((tmp_path / "b" / "evaluation-2025.json").read_text(encoding="utf-8"))
    assert a["tables"]["sample"] == b["tables"]["sample"]
    assert len(a["tables"]["sample"]["rows"]) == 3  # in scope: I1, I2, I4, I5 (I3 is below 300,000)
    scores = a["tables"]["scores"]["rows"][0]
    assert scores["unit_id"] == "U1" and scores["contradicted_hours"] == pytest.approx(8.0)
    assert scores["uncovered_verified"] == pytest.approx(4.0)
