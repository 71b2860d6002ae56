"""Rules that ask "what is today", each run on every day of the sweep (tests/conftest.py SWEEP_DAYS):
first and last day of a month, 1 January, 29 February, an official holiday, a make-up working day
and a year the official calendar package does not know yet.

Every rule reads server.clock; the `today` fixture freezes it at 10:30 Asia/Shanghai on the day."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date, datetime, time, timedelta

from server import clock
from server.evaluation.period import year_fraction
from server.store.times import TZ
from tests.web.conftest import Web
from tests.web.livehelp import store_live

TREND = "/api/v1/instruments/ua-xrd/utilization-trend"


def _month_start(d: date, back: int = 0) -> date:
    y, m = d.year, d.month - back
    while m < 1:
        y, m = y - 1, m + 12
    return date(y, m, 1)


def test_trend_months_end_with_this_month(web: Web, today: date) -> None:
    pts = web.as_("mgr-a").get(TREND, params={"months": 12, "bucket": "month"}).json()["points"]
    assert [p["label"] for p in pts] == [_month_start(today, k).strftime("%Y-%m") for k in range(11, -1, -1)]
    # ua-xrd: 通用, accepted 2020 -> 1,400 h a year; this month earns rated hours up to today only
    first = _month_start(today)
    assert abs(pts[-1]["rated"] - 1400 * year_fraction(first, today + timedelta(days=1))) < 1e-3
    assert abs(pts[0]["rated"] - 1400 * year_fraction(_month_start(today, 11), _month_start(today, 10))) < 1e-3


def test_trend_weeks_cover_the_months_asked(web: Web, today: date) -> None:
    pts = web.as_("mgr-a").get(TREND, params={"months": 2, "bucket": "week"}).json()["points"]
    starts = [date.fromisoformat(p["start"]) for p in pts]
    span_start = _month_start(today, 1)
    assert starts[0] == span_start - timedelta(days=span_start.weekday())  # the Monday of the span's first week
    assert all(b - a == timedelta(days=7) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= today < starts[-1] + timedelta(days=7)  # the week of today is the last
    assert abs(pts[-1]["rated"] - 1400 * year_fraction(starts[-1], today + timedelta(days=1))) < 1e-3


def test_board_counts_today_only(web: Web, today: date) -> None:
    store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "running", today_running_s=5400)
    c = web.as_("mgr-a")
    tile = next(t for t in c.get("/api/v1/units/ua/live").json()["tiles"] if t["id"] == "ua-xrd")
    assert tile["today_hours"] == 1.5
    # the same live row read after midnight (Asia/Shanghai) is yesterday's: today starts at zero
    with clock.frozen_at(datetime.combine(today + timedelta(days=1), time(0, 5), TZ)):
        tiles = web.as_("mgr-a").get("/api/v1/units/ua/live").json()["tiles"]
        tile = next(t for t in tiles if t["id"] == "ua-xrd")
    assert tile["today_hours"] == 0.0


def test_catalog_prices_and_retirement_as_of_today(web: Web, today: date) -> None:
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    web.sql("INSERT INTO price_list (instrument_id, item, basis, external_price, valid_from, valid_to) VALUES"
            " ('ua-xrd', 'ended', 'per_hour', 100, %(a)s, %(y)s),"
            " ('ua-xrd', 'in force', 'per_hour', 200, %(a)s, %(t)s),"
            " ('ua-xrd', 'from today', 'per_hour', 300, %(t)s, NULL),"
            " ('ua-xrd', 'not yet', 'per_hour', 400, %(n)s, NULL)",
            {"a": date(2020, 1, 1), "y": yesterday, "t": today, "n": tomorrow})
    c = web.client()
    items = {p["item"] for p in c.get("/api/v1/public/instruments/ua-xrd").json()["prices"]}
    assert items == {"in force", "from today"}
    web.sql("UPDATE instruments SET retired_on = %s WHERE id = 'ua-nmr'", (tomorrow,))
    web.sql("UPDATE instruments SET retired_on = %s WHERE id = 'ub-sem'", (today,))
    listed = {i["id"] for i in c.get("/api/v1/public/instruments").json()["items"]}
    assert listed == {"ua-xrd", "ua-nmr"}  # retired today: no longer published


def test_sessions_expire_by_the_clock(make_web: Callable[..., Web], today: date) -> None:
    web = make_web(session_ttl_s=3600)
    c = web.as_("mgr-a")
    start = clock.now()
    with clock.frozen_at(start + timedelta(seconds=3599)):
        assert c.get("/api/v1/auth/me").status_code == 200
    with clock.frozen_at(start + timedelta(seconds=3601)):
        r = c.get("/api/v1/auth/me")
        assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"


def test_default_report_year_is_last_year(web: Web, today: date) -> None:
    html = web.as_("mgr-a").get("/units/ua/report").text
    assert f"甲大学 · {today.year - 1} 年度评价指标" in html


def test_registration_deadline_not_missed_before_it_comes(web: Web, today: date) -> None:
    # accepted 5 days ago and not registered: the 30-working-day deadline lies ahead of today
    web.sql("UPDATE instruments SET accepted_on = %s, registered_on = NULL WHERE id = 'ua-nmr'",
            (today - timedelta(days=5),))
    c = web.as_("eva")
    running = c.get(f"/api/v1/evaluation/{today.year}/compliance").json()
    assert not [f for f in running["findings"] if f["instrument_id"] == "ua-nmr" and f["rule"] == "not_registered"]
    assert running["as_of"].startswith(today.isoformat())
    later = clock.now() + timedelta(days=120)  # long past any 30-working-day deadline
    with clock.frozen_at(later):
        found = web.as_("eva").get(f"/api/v1/evaluation/{today.year}/compliance",
                      params={"as_of": later.isoformat()}).json()["findings"]
    assert [f["rule"] for f in found if f["instrument_id"] == "ua-nmr" and f["rule"] == "not_registered"]


def test_running_year_is_rated_up_to_today(web: Web, today: date) -> None:
    got = web.as_("eva").get(f"/api/v1/evaluation/{today.year}/indicators", params={"instrument": "ua-xrd"}).json()
    (xrd,) = got["instruments"]
    assert abs(xrd["rated_hours"] - 1400 * year_fraction(date(today.year, 1, 1), today + timedelta(days=1))) < 1e-3
    last = web.as_("eva").get(f"/api/v1/evaluation/{today.year - 1}/indicators",
                              params={"instrument": "ua-xrd"}).json()["instruments"][0]
    assert abs(last["rated_hours"] - 1400) < 1e-3  # a whole past year
