"""Pure rules: subsidy, rubric, working-day deadlines, periods, sampling, spreadsheet cells."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.evaluation import rubric
from server.evaluation.compliance import WorkdayCalendar
from server.evaluation.indicators import Aggregate, HourSplit, InstrumentFigures, UnitIndicators
from server.evaluation.period import Period, year_fraction
from server.evaluation.sampling import sample
from server.evaluation.subsidy import post_subsidy
from server.exports.cells import cell_value, csv_value, safe_text

# -- post-subsidy (art. 23) ---------------------------------------------------------------------


def test_subsidy_coefficients() -> None:
    assert post_subsidy("优秀", Decimal("100000")).amount == Decimal("20000.00")
    assert post_subsidy("良好", Decimal("100000")).amount == Decimal("10000.00")
    assert post_subsidy("合格", Decimal("100000")).amount == Decimal("0.00")
    assert post_subsidy("不合格", Decimal("100000")).amount == Decimal("0.00")


def test_subsidy_cap() -> None:
    # 优秀: 1,500,000 x 0.2 = 300,000 exactly: not over the cap
    s = post_subsidy("优秀", Decimal("1500000"))
    assert (s.amount, s.capped) == (Decimal("300000.00"), False)
    # 1,500,000.05 x 0.2 = 300,000.01 -> capped at 300,000.00
    s = post_subsidy("优秀", Decimal("1500000.05"))
    assert (s.uncapped, s.amount, s.capped) == (Decimal("300000.01"), Decimal("300000.00"), True)
    # 良好 with 5,000,000: 500,000 -> 300,000
    assert post_subsidy("良好", Decimal("5000000")).amount == Decimal("300000.00")


def test_subsidy_rounding_half_up_to_fen() -> None:
    # 0.125 x 0.2 = 0.025 -> 0.03 (half up, not banker's 0.02)
    assert post_subsidy("优秀", Decimal("0.125")).amount == Decimal("0.03")
    # 12,345.67 x 0.1 = 1,234.567 -> 1,234.57
    assert post_subsidy("良好", Decimal("12345.67")).amount == Decimal("1234.57")
    # revenue itself is taken to the fen first: 0.005 -> 0.01, x 0.2 = 0.002 -> 0.00
    assert post_subsidy("优秀", Decimal("0.005")).amount == Decimal("0.00")


def test_subsidy_zero_revenue_and_sanction() -> None:
    s = post_subsidy("优秀", Decimal("0"))
    assert s.amount == Decimal("0.00") and not s.capped
    s = post_subsidy("优秀", Decimal("100000"), sanction="2024 年虚报服务记录")
    assert s.amount == Decimal("0.00") and "第二十五条" in s.note
    with pytest.raises(ValueError):
        post_subsidy("优秀", Decimal("-1"))


# -- rubric -------------------------------------------------------------------------------------


def _unit(
    open_rate_num: int, evaluated: int, running: float, rated: float, external: float, revenue: str, cases: int
) -> UnitIndicators:
    agg = Aggregate(
        evaluated=evaluated,
        open=open_rate_num,
        rated_hours=rated,
        running=HourSplit(live=running),
        external=HourSplit(live=external),
        revenue=Decimal(revenue),
    )
    return UnitIndicators("U", "单位", "", agg, cases)


def test_sample_rubric_thresholds() -> None:
    rb = rubric.load()
    assert rb.max_total == pytest.approx(100)
    assert rb.grade(100) == "优秀" and rb.grade(90) == "优秀"
    assert rb.grade(89.99) == "良好" and rb.grade(75) == "良好"
    assert rb.grade(74.99) == "合格" and rb.grade(60) == "合格"
    assert rb.grade(59.99) == "不合格" and rb.grade(0) == "不合格"


def test_curve_is_piecewise_linear_and_clamped() -> None:
    c = rubric.Criterion(
        key="u",
        label="利用率",
        group="g",
        kind="indicator",
        indicator="utilization",
        max_points=20,
        curve=[(0.0, 0.0), (0.5, 16.0), (0.7, 20.0)],
    )
    assert c.points(None) == 0
    assert c.points(-1) == 0
    assert c.points(0.25) == pytest.approx(8)
    assert c.points(0.6) == pytest.approx(18)
    assert c.points(5) == 20


def test_full_marks_and_pending_experts() -> None:
    rb = rubric.load()
    unit = _unit(10, 10, 1000, 1400, 600, "2000000", 9)
    sheet = rubric.score(rb, unit, {})
    # indicator criteria at maximum: 20 + 20 + 15 + 10 + 15 = 80; experts pending -> 80 -> 良好
    assert sheet.total == pytest.approx(80) and not sheet.complete and sheet.grade == "良好"
    experts = {
        k: rubric.ExpertScore(p, "依据材料", "专家")
        for k, p in (("management_system", 8), ("online_platform", 6), ("atmosphere", 6))
    }
    sheet = rubric.score(rb, unit, experts)
    assert sheet.total == pytest.approx(100) and sheet.complete and sheet.grade == "优秀"


def test_rubric_is_configuration(tmp_path: Path) -> None:
    text = """
name = "只看共享率"
basis = "including_unverified"
[grades]
"优秀" = 50
[[criteria]]
key = "sharing"
label = "共享率"
group = "开放效果"
kind = "indicator"
indicator = "sharing"
max_points = 100
curve = [[0.0, 0.0], [1.0, 100.0]]
"""
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8")
    rb = rubric.load(path)
    unit = _unit(0, 1, 10, 100, 6, "0", 0)
    unit.figures.running.unverified = 10
    unit.figures.external.unverified = 4
    sheet = rubric.score(rb, unit, {})
    assert sheet.total == pytest.approx(50) and sheet.grade == "优秀"  # (6+4)/(10+10)
    path.write_text(text.replace("[0.0, 0.0], [1.0, 100.0]", "[1.0, 0.0], [0.5, 100.0]"), encoding="utf-8")
    with pytest.raises(ValidationError):
        rubric.load(path)


# -- working days (art. 13) ---------------------------------------------------------------------


def test_thirty_working_days_with_holidays_and_make_up_days() -> None:
    cal = WorkdayCalendar()
    # Accepted Fri 2025-09-26. Sun 09-28 is a make-up working day (1), 09-29 (2), 09-30 (3),
    # 10-01..10-08 National Day holiday, 10-09 (4), 10-10 (5), Sat 10-11 make-up (6), then five a
    # week: 10-13..17 (11), 20..24 (16), 27..31 (21), 11-03..07 (26), 11-10..13 (30).
    assert cal.add_working_days(date(2025, 9, 26), 30) == date(2025, 11, 13)
    assert cal.note() == ""


def test_cached_deadlines_match_a_fresh_walk() -> None:
    cal = WorkdayCalendar()
    starts = [date(2024, 12, 1) + timedelta(days=k) for k in range(0, 400, 7)]
    first = {(s, n): cal.add_working_days(s, n) for s in starts for n in (1, 30)}
    fresh = WorkdayCalendar()
    for (s, n), deadline in first.items():
        walked, day = 0, s
        while walked < n:
            day += timedelta(days=1)
            walked += fresh.is_workday(day)
        assert deadline == day == cal.add_working_days(s, n)
    assert cal.add_working_days(date(2025, 9, 26), 1) != cal.add_working_days(date(2025, 9, 26), 30)


def test_year_beyond_the_package_falls_back_to_weekdays(caplog: pytest.LogCaptureFixture) -> None:
    cal = WorkdayCalendar()
    with caplog.at_level(logging.WARNING):
        # Thu 2026-12-10: 12-11 (1), 12-14..18 (6), 21..25 (11), 28..31 (15), and in 2027 (no
        # official data: Mon-Fri, so Fri 01-01 counts) 01-01 (16), 01-04..08 (21), 11..15 (26), 18..21 (30)
        assert cal.add_working_days(date(2026, 12, 10), 30) == date(2027, 1, 21)
    assert cal.fallback_years == {2027}
    assert "2027" in cal.note() and "周一至周五" in cal.note()
    assert any("2027" in r.message for r in caplog.records)


# -- periods ------------------------------------------------------------------------------------


def test_default_period_is_last_year_in_shanghai() -> None:
    # 2026-01-01 00:30 in Shanghai is still 2025-12-31 in UTC: the evaluation year is 2025.
    now = datetime.fromisoformat("2025-12-31T16:30:00+00:00")
    assert Period.default(now) == Period.year(2025)
    assert Period.year(2025).t0.isoformat() == "2025-01-01T00:00:00+08:00"
    assert Period.parse("2025-03-01..2025-04-01").days == 31
    assert Period.parse("2025").previous == Period.year(2024)
    with pytest.raises(ValueError):
        Period.parse("2025-13")


def test_year_fraction_leap_and_partial() -> None:
    assert year_fraction(date(2024, 1, 1), date(2025, 1, 1)) == pytest.approx(1.0)
    assert year_fraction(date(2024, 7, 1), date(2025, 1, 1)) == pytest.approx(184 / 366)
    assert year_fraction(date(2024, 12, 1), date(2025, 2, 1)) == pytest.approx(31 / 366 + 31 / 365)


# -- spot-check sampling ------------------------------------------------------------------------


def _fig(i: int) -> InstrumentFigures:
    f = InstrumentFigures(
        id=f"I{i:03d}",
        unit_id="U",
        name="x",
        category="通用",
        classification_code="",
        original_value=Decimal(500000),
        accepted_on=None,
        registered_on=None,
        retired_on=None,
        is_open=True,
        sharing_mode="外部共享",
        has_agent=True,
    )
    f.in_scope = True
    return f


def test_sampling_is_reproducible_and_weighted() -> None:
    figs = [_fig(i) for i in range(100)]
    disc = {"I007": 500.0, "I042": 300.0}
    a = sample(figs, disc, 10, seed=2025)
    assert a == sample(list(reversed(figs)), disc, 10, seed=2025)  # order of input does not matter
    assert a != sample(figs, disc, 10, seed=2026)
    assert len(a) == 10 and len({s.instrument_id for s in a}) == 10
    hits = sum("I007" in {s.instrument_id for s in sample(figs, disc, 10, seed=s)} for s in range(200))
    plain = sum("I050" in {s.instrument_id for s in sample(figs, disc, 10, seed=s)} for s in range(200))
    assert hits > 190 and plain < 60  # a 500 h discrepancy is almost always checked
    assert len(sample(figs[:3], {}, 10, seed=1)) == 3


# -- cells: formula injection -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["=1+2", "+86 471", "-cmd", "@SUM(A1)", "\t=x", "\r=x"])
def test_dangerous_text_is_escaped(text: str) -> None:
    assert safe_text(text) == "'" + text
    assert cell_value(text) == "'" + text
    assert csv_value(text) == "'" + text


def test_values_keep_their_types() -> None:
    assert cell_value(-5) == -5 and cell_value(Decimal("-1.5")) == Decimal("-1.5")
    assert cell_value(True) == "是" and cell_value(None) is None
    naive = cell_value(datetime.fromisoformat("2025-03-10T01:00:00+00:00"))
    assert naive == datetime(2025, 3, 10, 9, 0)
    assert csv_value(date(2025, 1, 2)) == "2025-01-02"
    assert safe_text("透射电镜") == "透射电镜"
