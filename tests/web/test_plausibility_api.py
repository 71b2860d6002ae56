"""Plausibility flags where people look: `GET /api/v1/instruments/{id}/plausibility` (scope as the
other instrument routes, range checks) and the instrument page's "数据可信性检查" section."""

from __future__ import annotations

from datetime import datetime, timedelta

from server.store.times import TZ
from tests.web.conftest import Web

D0 = datetime(2025, 4, 1, tzinfo=TZ)  # local midnight
URL = "/api/v1/instruments/ua-xrd/plausibility"
RANGE = {"from": "2025-04-01T00:00:00+08:00", "to": "2025-04-11T00:00:00+08:00"}


def _nonstop_week(web: Web) -> None:
    """ua-xrd running 8 whole days with no rest (the `continuous_running` pattern), and one envelope
    of 3 records received 2 hours ahead of the server clock (`future_clock`)."""
    web.sql("INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
            " session_id, start_seq) VALUES ('ua-xrd-a1', 'ua-xrd', %s, %s, 'running', true, 'live', NULL, 100)",
            (D0, D0 + timedelta(days=8)))
    web.sql("INSERT INTO future_records (agent_id, first_seq, last_seq, records, max_ahead_ms, received_at)"
            " VALUES ('ua-xrd-a1', 101, 103, 3, 7200000, %s)", (D0 + timedelta(days=9, hours=10),))


def test_a_flagged_instrument_returns_its_flags(web: Web) -> None:
    _nonstop_week(web)
    for login in ("ops", "mgr-a", "eva"):
        r = web.as_(login).get(URL, params=RANGE)
        assert r.status_code == 200, (login, r.text)
        got = r.json()
        assert got["instrument"] == "ua-xrd"
        assert datetime.fromisoformat(got["from"]) == D0
        assert datetime.fromisoformat(got["to"]) == D0 + timedelta(days=10)
        flags = {f["check"]: f for f in got["flags"]}
        assert set(flags) == {"continuous_running", "future_clock"}, login
        run = flags["continuous_running"]
        assert run["value"] == 8.0 and "8 consecutive days" in run["detail"]
        assert datetime.fromisoformat(run["start"]) == D0
        assert datetime.fromisoformat(run["end"]) == D0 + timedelta(days=8)
        assert flags["future_clock"]["value"] == 3.0 and "ahead of the server clock" in flags["future_clock"]["detail"]
    # times without a zone are Asia/Shanghai; a range before the pattern shows nothing
    r = web.as_("ops").get(URL, params={"from": "2025-04-01T00:00:00", "to": "2025-04-05T00:00:00"})
    assert datetime.fromisoformat(r.json()["from"]) == D0 and r.json()["flags"] == []
    # an instrument with honest data: no flags
    assert web.as_("eva").get("/api/v1/instruments/ub-sem/plausibility", params=RANGE).json()["flags"] == []


def test_scope_and_roles(web: Web) -> None:
    _nonstop_week(web)
    r = web.as_("mgr-b").get(URL, params=RANGE)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert "continuous_running" not in r.text
    assert web.as_("mgr-b").get("/api/v1/instruments/ub-sem/plausibility", params=RANGE).status_code == 200
    assert web.as_("ops").get("/api/v1/instruments/nope/plausibility", params=RANGE).status_code == 404
    assert web.client().get(URL, params=RANGE).status_code == 401


def test_bad_ranges_name_the_field(web: Web) -> None:
    ops = web.as_("ops")
    cases = [
        ({"from": RANGE["to"], "to": RANGE["from"]}, "to"),                                # backwards
        ({"from": RANGE["from"], "to": RANGE["from"]}, "to"),                              # empty
        ({"from": "2025-01-01T00:00:00+08:00", "to": "2025-04-05T00:00:00+08:00"}, "to"),  # > 92 days
        ({"from": "yesterday", "to": RANGE["to"]}, "from"),
        ({"to": RANGE["to"]}, "from"),
    ]
    for params, field in cases:
        r = ops.get(URL, params=params)
        assert r.status_code == 422, params
        err = r.json()["error"]
        assert err["code"] == "validation" and [f["field"] for f in err["fields"]] == [field], (params, err)
    ok = {"from": "2025-01-01T00:00:00+08:00", "to": "2025-04-03T00:00:00+08:00"}  # exactly 92 days
    assert ops.get(URL, params=ok).status_code == 200


def test_the_openapi_example_has_the_answers_keys(web: Web) -> None:
    _nonstop_week(web)
    spec = web.client().get("/openapi.json").json()
    example = spec["paths"]["/api/v1/instruments/{instrument_id}/plausibility"]["get"]["responses"]["200"][
        "content"]["application/json"]["example"]
    answer = web.as_("ops").get(URL, params=RANGE).json()
    assert set(example) == set(answer)
    assert set(example["flags"][0]) == set(answer["flags"][0])


def test_the_instrument_page_shows_the_checks(web: Web) -> None:
    _nonstop_week(web)
    for login in ("mgr-a", "eva"):
        page = web.as_(login).get("/instruments/ua-xrd?span=month&start=2025-04-01").text
        section = page.split('id="plausibility"', 1)[1].split("</section>", 1)[0]
        assert "数据可信性检查" in section
        assert '<li data-check="continuous_running"><b>连续多日不停机运行</b> · 2025-04-01 – 2025-04-09' in section
        assert '<li data-check="future_clock"><b>采集端时钟超前</b>' in section
        assert "8 consecutive days" in section and "未发现异常" not in section
        # the finding itself in Chinese, its English words beside it
        assert "自 2025-04-01 至 2025-04-08 连续 8 天每天运行不少于 22 小时" in section
        assert "最多 120 分钟" in section
        # the section comes right before the trend
        assert page.index('id="plausibility"') < page.index('id="trend"')
    en = web.as_("ops").get("/instruments/ua-xrd?span=month&start=2025-04-01&lang=en").text
    assert "Plausibility checks" in en and "Running for days without rest" in en
    assert "Running at least 22 h on each of 8 consecutive days (2025-04-01 to 2025-04-08)" in en
    assert "连续" not in en
    # a period without the pattern (the week before): nothing unusual
    page = web.as_("mgr-a").get("/instruments/ua-xrd?span=week&start=2025-03-01").text
    section = page.split('id="plausibility"', 1)[1].split("</section>", 1)[0]
    assert "未发现异常" in section and "<li" not in section
    assert "nothing unusual" in web.as_("eva").get("/instruments/ub-sem?lang=en").text
