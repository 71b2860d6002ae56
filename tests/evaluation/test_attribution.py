"""Reconciliation by attribution (issue 13, item 4): only running time attributed to the claimant's
side supports a service record; unattributed time "may support" it, shown apart; the unit's own
users' time never supports an external claim.

The hand-built scenario (tests/evaluation/scenario.py) plus records that a unit wanting to look
busy with outside users would file. Worked by hand (I1, agent A1, Asia/Shanghai):
  X1 130 dave (O4)  03-10 09-12 claims 3: only alice (O1, own) ran, agent watching -> own 3,
     attributed 0 -> 3 contradicted -> 多报 (before attribution: 一致).
  X2 130 carol (O3) 09-09 08-10 claims 2: os:guest (unmapped) ran 2 h -> may support 2 -> 一致,
     listed as relying on may-support time.
  X3 130 carol      12-31 23-24 claims 1: dave (O4, another outside organisation) ran -> other 1
     -> 多报.
  X4 130 carol      06-04 09-12 claims 3: agent offline the whole window, nothing ran -> 3 h
     unsupported, all of it unwatched -> 无法核实.
  X5 120 alice      03-10 14-18 claims 4: carol (external) ran -> other 4 -> 多报 (internal claims
     follow the same rule, attributed to the unit's own and affiliated users).
  X6 130 carol      03-10 13-18 claims 4.3: carol's s3 14-18 -> attributed 4, 0.3 beyond it is
     within the tolerance -> 一致.
  X7 130 nobody named, no organisation, 01-01 00-02 claims 2: carol (external) ran s1 -> nothing to
     attribute to, her time may support it -> 一致, listed as relying on may-support time.
Existing records: R1 (carol, attributed 4) 一致, R2 多报 8, R3 一致, R4 无法核实 2, R5 (alice, 120) 一致.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from openpyxl import load_workbook

from server.evaluation import privacy, reconciliation, rubric
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.evaluation.report import evaluate_region, region_report, unit_report
from server.exports.workbook import write_xlsx
from tests.evaluation import scenario

Y2025 = Period.year(2025)
KEY = privacy.Pseudonymizer(b"k" * 32)

# (record_no, start, end, claimed, user type, applicant, applicant org)
EXTRA: list[tuple[str, str, str, str, int, str | None, str | None]] = [
    ("X1", "2025-03-10 09:00", "2025-03-10 12:00", "3.0", 130, "dave", "O4"),
    ("X2", "2025-09-09 08:00", "2025-09-09 10:00", "2.0", 130, "carol", "O3"),
    ("X3", "2025-12-31 23:00", "2026-01-01 00:00", "1.0", 130, "carol", "O3"),
    ("X4", "2025-06-04 09:00", "2025-06-04 12:00", "3.0", 130, "carol", "O3"),
    ("X5", "2025-03-10 14:00", "2025-03-10 18:00", "4.0", 120, "alice", "O1"),
    ("X6", "2025-03-10 13:00", "2025-03-10 18:00", "4.3", 130, "carol", None),  # org from the applicant
    ("X7", "2025-01-01 00:00", "2025-01-01 02:00", "2.0", 130, None, None),
]


@pytest.fixture
def db(scenario_db: str) -> str:
    with psycopg.connect(scenario_db) as conn:
        for no, a, b, hours, user_type, user, org in EXTRA:
            name = user.title() if user else "某企业"
            conn.execute(
                "INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,"
                " amount, way, user_type, applicant_user_id, applicant_name, applicant_org_id, content)"
                " VALUES ('U1', 'I1', %s, %s, %s, %s, 100, '占用', %s, %s, %s, %s, '样品测试')",
                (no, scenario.t(a), scenario.t(b), Decimal(hours), user_type, user, name, org),
            )
    return scenario_db


def _records(dsn: str) -> dict[str, reconciliation.RecordCheck]:
    with psycopg.connect(dsn) as conn:
        rc = reconciliation.reconcile(conn, compute(conn, Y2025, ["U1"]), KEY, ["U1"])
    return {r.record_no: r for r in rc.records}


def test_internal_use_filling_the_window_never_supports_an_external_claim(db: str) -> None:
    x1 = _records(db)["X1"]
    assert x1.status == "overclaimed"
    assert (x1.attributed_hours, x1.may_support_hours, x1.own_unit_hours, x1.other_hours) == pytest.approx(
        (0.0, 0.0, 3.0, 0.0)
    )
    assert (x1.measured_verified, x1.contradicted, x1.unverifiable) == pytest.approx((3.0, 3.0, 0.0))


def test_each_verdict_with_its_breakdown(db: str) -> None:
    by_no = _records(db)
    # 一致: attributed time of the applicant's organisation
    r1 = by_no["R1"]
    assert r1.status == "ok" and r1.attributed_hours == pytest.approx(4.0) and not r1.relies_on_unattributed
    x6 = by_no["X6"]  # the record names no organisation: its applicant's (carol, O3) is used
    assert x6.status == "ok" and x6.attributed_hours == pytest.approx(4.0) and x6.unsupported == pytest.approx(0.3)
    # 一致 only through unattributed time: shown apart
    x2 = by_no["X2"]
    assert x2.status == "ok" and x2.relies_on_unattributed
    assert (x2.attributed_hours, x2.may_support_hours, x2.may_support_used) == pytest.approx((0.0, 2.0, 2.0))
    # 多报: another outside organisation's use
    x3 = by_no["X3"]
    assert x3.status == "overclaimed"
    assert (x3.other_hours, x3.attributed_hours, x3.contradicted) == pytest.approx((1.0, 0.0, 1.0))
    # 无法核实: the gap lies in time no agent watched
    x4 = by_no["X4"]
    assert x4.status == "unverifiable"
    assert (x4.unwatched_hours, x4.unverifiable, x4.contradicted) == pytest.approx((3.0, 3.0, 0.0))
    r4 = by_no["R4"]  # dave's own unwatched run supports 3 of 5 h, the other 2 are unverifiable
    assert r4.status == "unverifiable"
    assert (r4.attributed_hours, r4.unverifiable, r4.contradicted) == pytest.approx((3.0, 2.0, 0.0))
    # internal records: only the unit's own / affiliated users support them
    assert by_no["R5"].status == "ok" and by_no["R5"].attributed_hours == pytest.approx(3.0)
    x7 = by_no["X7"]  # no organisation to match: outside users' time may support it, never a proven 多报
    assert x7.status == "ok" and x7.relies_on_unattributed
    assert (x7.attributed_hours, x7.may_support_hours, x7.other_hours) == pytest.approx((0.0, 2.0, 0.0))
    x5 = by_no["X5"]
    assert x5.status == "overclaimed"
    assert (x5.attributed_hours, x5.other_hours, x5.contradicted) == pytest.approx((0.0, 4.0, 4.0))


def test_region_totals_agree_with_the_records(db: str) -> None:
    """The region's set-based query (no row per record) gives the unit the same totals."""
    with psycopg.connect(db) as conn:
        one = reconciliation.reconcile(conn, compute(conn, Y2025, ["U1"]), KEY, ["U1"]).units["U1"]
        region = reconciliation.reconcile(conn, compute(conn, Y2025), KEY).units["U1"]
    # R2 8 + X1 3 + X3 1 + X5 4 contradicted, plus X6's 0.3 (within the tolerance: 一致, yet counted);
    # R4 2 + X4 3 unverifiable; X1's 3 h of own use in an external window
    assert (one.overclaimed_records, one.unverifiable_records) == (4, 2)
    assert (one.contradicted_hours, one.unverifiable_hours) == pytest.approx((16.3, 5.0))
    assert one.own_unit_in_external_windows == pytest.approx(3.0)
    assert one.may_support_used == pytest.approx(4.0)  # X2, X7
    assert region.as_dict() == one.as_dict()


def test_report_page_table_and_workbook_show_the_breakdown(db: str, tmp_path: Path) -> None:
    with psycopg.connect(db) as conn:
        rep = unit_report(conn, Y2025, "U1", rubric.load(None), KEY)
        region = region_report(evaluate_region(conn, Y2025, rubric.load(None), KEY))
    table = rep.as_dict()["tables"]["reconciliation"]
    rows = {r["record_no"]: r for r in table["rows"]}
    assert set(rows) == {"R2", "R4", "X1", "X2", "X3", "X4", "X5", "X7"}  # R1, R3, R5, X6 are consistent
    assert rows["X1"]["status"] == "多报" and rows["X1"]["own_unit_hours"] == pytest.approx(3.0)
    assert rows["X2"]["status"] == "一致（依赖可能支持机时）"
    assert rows["X4"]["status"] == "无法核实"
    assert rep.as_dict()["summary"]["own_unit_in_external_windows"]["value"] == pytest.approx(3.0)
    assert region.as_dict()["tables"]["scores"]["rows"][0]["unverifiable_records"] == 2
    path = tmp_path / "u1.xlsx"
    write_xlsx(rep, path)
    sheet = load_workbook(path)["服务记录核对（差异）"]
    header = [c.value for c in sheet[1]]
    col = {h: i for i, h in enumerate(header)}
    assert "本单位/关联单位用户运行机时（不支持对外记录）" in col and "未能归属用户的运行机时（可能支持）" in col
    by_no = {row[0].value: row for row in sheet.iter_rows(min_row=2) if row[0].value}
    assert by_no["X1"][col["本单位/关联单位用户运行机时（不支持对外记录）"]].value == pytest.approx(3.0)
    assert by_no["X2"][col["未能归属用户的运行机时（可能支持）"]].value == pytest.approx(2.0)
