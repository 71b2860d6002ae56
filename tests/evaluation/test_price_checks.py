"""Price lists in the evaluation: fees of service records against the list in force on their date,
and the revenue at risk of measured external use without a record. Worked by hand on the scenario
(tests/evaluation/scenario.py) with a price list imported as a unit would."""

from __future__ import annotations

import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from openpyxl import Workbook, load_workbook

from server import admin
from server.evaluation import prices, privacy, reconciliation, rubric
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.evaluation.report import evaluate_region, region_report, unit_report
from server.registry.importer import run_import
from tests.evaluation import scenario

Y2025 = Period.year(2025)


def price_sheet() -> bytes:
    """I1 机时 100 / 500 元/小时 from 2025-01-01, external 600 from 2025-06-01; I2 机时 500 元/小时
    (external) and 送样测试 100 元/样."""
    wb = Workbook()
    ws = wb.active
    ws.append(["开放共享服务价格目录"])
    ws.merge_cells("A1:F1")
    ws.append(["仪器编号", "收费项目", "计价单位", "校内价格（元）", "校外价格（元）", "执行日期"])
    ws.append(["I1", "机时", "元/小时", 100, "¥500.00", "2025年1月1日"])
    ws.append([None, "机时", "元/机时", "100", "600元/小时", "2025-06-01"])
    ws.merge_cells("A3:A4")
    ws.append(["I2", "机时", "小时", None, 500, date(2025, 1, 1)])
    ws.append(["I2", "送样测试", None, "80元/样", "100元/样", "2025.1.1"])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@pytest.fixture
def db(scenario_db: str) -> str:
    with psycopg.connect(scenario_db) as conn:
        rep = run_import(conn, "prices", "U1", price_sheet(), "价格目录.xlsx")
        assert rep.status == "committed" and rep.accepted == 4, rep.text()
        # R7: 10 samples on I2, charged by sample; R8: on I4, which has no price list
        conn.execute(
            "INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,"
            " sample_count, amount, user_type) VALUES"
            " ('U1', 'I2', 'R7', %s, %s, 1.0, 10, 1000.00, 130), ('U1', 'I4', 'R8', %s, %s, 2.0, NULL, 300.00, 130)",
            (
                scenario.t("2025-08-01 09:00"),
                scenario.t("2025-08-01 10:00"),
                scenario.t("2025-08-02 09:00"),
                scenario.t("2025-08-02 11:00"),
            ),
        )
    return scenario_db


def test_fee_check_by_hand(db: str) -> None:
    # Records of 2025 (R6 is in 2024), expected fee = rate in force on the record's date x quantity:
    #   R1 I1 03-10 130  4.0 h x 500 = 2000.00, charged 2000.00 -> ok
    #   R2 I1 05-20 130  8.0 h x 500 = 4000.00, charged 4000.00 -> ok
    #   R3 I2 07-15 130  3.0 h x 500 = 1500.00, charged 1500.50 -> 0.50 within 1.00 -> ok
    #   R4 I1 06-03 130  5.0 h x 600 = 3000.00 (the 06-01 price), charged 1000.00 -> differs by -2000.00
    #   R5 I1 03-10 120  3.0 h x 100 =  300.00, charged  300.00 -> ok (internal rate)
    #   R7 I2 08-01 130  1.0 h x 500 = 500.00 or 10 samples x 100 = 1000.00; charged 1000.00 -> ok
    #   R8 I4 08-02 130  no price list -> not checked
    with psycopg.connect(db) as conn:
        fees = prices.check_fees(conn, Y2025, ["U1"])
        # only the priced instruments' records read (report6), the same as every record checked
        assert fees == prices.check_fees(conn, Y2025, ["U1"], precomputed=False)
    u = fees.units["U1"]
    assert (u.checked, u.differing, u.without_price, u.difference) == (6, 1, 1, Decimal("-2000.00"))
    [r4] = fees.records
    assert (r4.record_no, r4.item, r4.basis, r4.rate, r4.quantity) == (
        "R4",
        "机时",
        "per_hour",
        Decimal("600.00"),
        Decimal("5.0"),
    )
    assert (r4.expected, r4.amount, r4.difference) == (Decimal("3000.00"), Decimal("1000.00"), Decimal("-2000.00"))


def test_region_totals_and_reconciliation_carry_the_fees(db: str) -> None:
    with psycopg.connect(db) as conn:
        rc = reconciliation.reconcile(conn, compute(conn, Y2025), privacy.Pseudonymizer(b"k" * 32))
    assert rc.fees is not None and rc.fees.records == []  # region: totals only
    assert rc.fees.units["U1"].differing == 1
    with psycopg.connect(db) as conn:
        result = evaluate_region(conn, Y2025, rubric.load(), privacy.Pseudonymizer(b"k" * 32))
    [row] = {t.key: t for t in region_report(result).tables}["scores"].rows
    assert (row["revenue_at_risk"], row["fee_differences"]) == (Decimal("2000.00"), 1)  # as in the unit report


def test_revenue_at_risk_in_the_report(db: str, tmp_path: Path) -> None:
    # Uncovered external hours (test_scenario.test_reconciliation_by_hand): I1 3.0 verified + 4.0
    # unverified, I2 1.0 verified. I1's external hourly rate was 500 then 600 from 06-01: the lowest,
    # 500, is used. Verified: 3 x 500 + 1 x 500 = 2000.00; including unverified: 7 x 500 + 500 = 4000.00.
    with psycopg.connect(db) as conn:
        rep = unit_report(conn, Y2025, "U1", rubric.load(), privacy.Pseudonymizer(b"k" * 32))
    summary = {k: v for k, _, v, _ in rep.summary}
    assert summary["revenue_at_risk"] == Decimal("2000.00")
    assert summary["revenue_at_risk_all"] == Decimal("4000.00")
    assert summary["fee_differences"] == 1
    # the official indicator is still the records' amounts: 8500.50 + R7 1000 + R8 300
    assert summary["revenue"] == Decimal("9800.50")
    tables = {t.key: t for t in rep.tables}
    risk = {r["instrument_id"]: r for r in tables["revenue_at_risk"].rows}
    assert risk["I1"]["rate"] == Decimal("500.00") and risk["I1"]["note"] == "期内调价，按最低价估算"
    assert risk["I1"]["estimate_verified"] == Decimal("1500.00") and risk["I2"]["estimate_all"] == Decimal("500.00")
    [fee] = tables["fees"].rows
    assert fee["record_no"] == "R4" and fee["difference"] == Decimal("-2000.00")
    assert fee["finding"] == "收费与公布的收费标准不符"

    out = tmp_path / "out"
    assert admin.main(["--dsn", db, "report", "--year", "2025", "--unit", "U1", "--out", str(out)]) == 0
    data = json.loads((out / "U1-2025.json").read_text(encoding="utf-8"))
    assert data["prices"]["revenue_at_risk"] == "2000.00"
    assert data["prices"]["fees"] == {"checked": 6, "differing": 1, "without_price": 1, "difference": "-2000.00"}
    wb = load_workbook(out / "U1-2025.xlsx", read_only=True)
    assert "按收费标准估算的未登记服务收入" in wb.sheetnames and "收费核对" in wb.sheetnames
    header = next(wb["按收费标准估算的未登记服务收入"].iter_rows(values_only=True))
    assert "按收费标准估算的未登记服务收入（核验）" in header
    overview = {r[0]: r[1] for r in wb["概览"].iter_rows(values_only=True) if len(r) > 1}
    assert overview["按收费标准估算的未登记服务收入（元，核验）"] == 2000


def test_price_listing_on_a_date(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin.main(["--dsn", db, "registry", "list", "prices", "--unit", "U1", "--on", "2025-07-01"]) == 0
    out = capsys.readouterr().out
    assert "600.00" in out and "500.00" in out and "（3 行）" in out  # I1 from 06-01, I2's two items
    assert admin.main(["--dsn", db, "registry", "list", "prices", "--unit", "U1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and rows[0]["收费项目"] == "机时"
