"""One unit's report built for a page (`unit_report(rows=N)`, issue 17 report6): the long per-record
lists hold their first N rows with the count of all, and every figure, note and other table is the
full report's, exactly (the totals are summed in SQL in the order the full list adds them)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from server.evaluation import privacy, reconciliation, rubric
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.evaluation.report import Report, unit_report
from server.web.services.evaluation import page_view
from tests.evaluation import scenario

Y2025 = Period.year(2025)
KEY = privacy.Pseudonymizer(b"k" * 32)


def _report(conn: psycopg.Connection[Any], unit: str, rows: int | None, tolerance_h: float = 0.5,
            offset: int = 0) -> Report:
    rep = unit_report(conn, Y2025, unit, rubric.load(), KEY, rows=rows, tolerance_h=tolerance_h, offset=offset)
    rep.generated_at = Y2025.t0  # the same for both ways
    return rep


@pytest.mark.parametrize("tolerance_h", [0.5, 0.0])
def test_a_page_of_the_report_is_the_head_of_the_full_one(scenario_db: str, tolerance_h: float) -> None:
    with psycopg.connect(scenario_db) as conn:
        units = [u for (u,) in conn.execute("SELECT id FROM units ORDER BY id")]
        truncated = 0
        for unit in units:
            full = _report(conn, unit, None, tolerance_h)
            assert all(t.total is None for t in full.tables)
            for n in (0, 1, 2, 1000):
                page = _report(conn, unit, n, tolerance_h)
                assert page.summary == full.summary  # every figure, exactly (floats compared with ==)
                assert page.data == full.data
                assert [t.key for t in page.tables] == [t.key for t in full.tables]
                for a, b in zip(full.tables, page.tables, strict=True):
                    assert (b.title, b.columns, b.notes) == (a.title, a.columns, a.notes), a.key
                    if a.key in ("reconciliation", "revenue"):
                        assert b.total == len(a.rows), a.key
                        assert b.rows == a.rows[:n], a.key
                        truncated += len(a.rows) > n
                    else:
                        assert b.total is None and b.rows == a.rows, a.key
                # what the page draws is the same either way
                assert page_view(page, n) == page_view(full, n)
        assert truncated >= 4  # the scenario's lists are longer than the small pages


def test_the_reconciliation_of_a_page_has_the_full_figures(scenario_db: str) -> None:
    with psycopg.connect(scenario_db) as conn:
        ev = compute(conn, Y2025, ["U1"])
        full = reconciliation.reconcile(conn, ev, KEY, ["U1"])
        page = reconciliation.reconcile(conn, ev, KEY, ["U1"], rows=1)
    assert page.units == full.units
    assert page.instruments == full.instruments
    assert page.sessions == full.sessions
    listed = [r for r in full.records
              if not (r.status == "ok" and not r.type_mismatch and r.may_support_used <= full.tolerance_h)]
    assert len(listed) >= 2
    assert page.records == listed[:1]
    assert (page.listed, page.consistent) == (len(listed), len(full.records) - len(listed))
    assert (full.listed, full.consistent) == (None, None)


def test_a_window_past_the_periods_end_counts_only_its_part_in_the_period(scenario_db: str) -> None:
    """report7: the page's totals take back a window's external time after the period's end as the
    full list does: dave's (O4, external) s7 runs 2025-12-31 23:00 - 2026-01-01 01:00 (scenario)."""
    with psycopg.connect(scenario_db) as conn:
        before = reconciliation.reconcile(conn, compute(conn, Y2025, ["U1"]), KEY, ["U1"])
        conn.execute(
            "INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,"
            " amount, way, user_type, applicant_user_id, applicant_name, applicant_org_id, content)"
            " VALUES ('U1', 'I1', 'Y1', %s, %s, 2.0, 100, '占用', 130, 'dave', 'Dave', 'O4', '样品测试')",
            (scenario.t("2025-12-31 23:00"), scenario.t("2026-01-01 01:00")),
        )
        ev = compute(conn, Y2025, ["U1"])
        full = reconciliation.reconcile(conn, ev, KEY, ["U1"])
        page = reconciliation.reconcile(conn, ev, KEY, ["U1"], rows=1)
    y1 = next(r for r in full.records if r.record_no == "Y1")
    assert y1.measured_external == pytest.approx(2.0)  # the whole window's external time
    i1 = next(i for i in full.instruments if i.instrument_id == "I1")
    without = next(i for i in before.instruments if i.instrument_id == "I1")
    # only the hour inside the period is covered (watched: the scenario's agent watches then)
    assert (i1.covered_verified + i1.covered_unverified) - (without.covered_verified + without.covered_unverified) \
        == pytest.approx(1.0)
    assert page.units == full.units
    assert page.instruments == full.instruments


def test_a_page_of_the_report_says_it_is_one_and_is_not_exported(scenario_db: str, tmp_path: Any) -> None:
    from server.exports.workbook import write_json, write_xlsx

    with psycopg.connect(scenario_db) as conn:
        page = _report(conn, "U1", 1)
        full = _report(conn, "U1", None)
    tables = page.as_dict()["tables"]
    assert tables["reconciliation"]["total"] > len(tables["reconciliation"]["rows"]) == 1
    assert all("total" not in t for t in full.as_dict()["tables"].values())
    for write in (write_xlsx, write_json):
        with pytest.raises(ValueError, match="first rows of revenue, reconciliation"):
            write(page, tmp_path / "page.out")
        write(full, tmp_path / "full.out")  # the full report is exported as before


def test_pages_from_an_offset_put_together_are_the_full_lists(scenario_db: str) -> None:
    with psycopg.connect(scenario_db) as conn:
        full = {t.key: t for t in _report(conn, "U1", None).tables}
        got: dict[str, list[dict[str, Any]]] = {"reconciliation": [], "revenue": []}
        offset = 0
        while offset <= max(len(full[k].rows) for k in got):
            page = _report(conn, "U1", 1, offset=offset)
            for t in page.tables:
                if t.key in got:
                    assert (t.total, t.offset) == (len(full[t.key].rows), offset)
                    got[t.key] += t.rows
                else:
                    assert t.rows == full[t.key].rows
            offset += 1
    for key, rows in got.items():
        assert len(full[key].rows) >= 2 and rows == full[key].rows, key
