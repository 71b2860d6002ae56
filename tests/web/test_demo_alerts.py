"""The demo's hooks (sim/demo_alerts.py): what `make demo` shows for issue 20 — an outside user's
booking ending in a drafted service record, and a stopped agent's alert at the local receiver."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from server import clock
from server.alerts.engine import run_round
from sim import demo_alerts
from tests.web.alerthelp import RobotReceiver
from tests.web.conftest import Web
from tests.web.test_alerts import NOW, offline, online


def test_demo_hooks(web: Web) -> None:
    robots = RobotReceiver(dingtalk_secrets={"demo-ua": demo_alerts.DEMO_SECRET, "demo-ub": demo_alerts.DEMO_SECRET})
    try:
        web.sql("INSERT INTO price_list (instrument_id, item, basis, internal_price, external_price, valid_from)"
                " VALUES ('ua-xrd', '常规测试', 'per_hour', 50, 120, '2026-01-01')")
        with clock.frozen_at(NOW):
            demo_alerts.configure(web.dsn, robots.base)
            demo_alerts.configure(web.dsn, robots.base)  # idempotent
            code = demo_alerts.book_outside(web.dsn, "ua-xrd", "ext-co", minutes=60)
        assert web.sql("SELECT count(*) FROM alert_channels") == [(4,)]
        start = NOW + timedelta(seconds=5)
        web.sql("INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
                " start_seq) VALUES ('ua-xrd-a1', 'ua-xrd', 'd1', 'booking', %s, %s, %s, 100)",
                (code, start, start + timedelta(minutes=50)))
        web.sql("INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
                " session_id, start_seq) VALUES ('ua-xrd-a1', 'ua-xrd', %s, %s, 'running', true, 'live', 'd1', 101)",
                (start, start + timedelta(minutes=45)))
        online(web, NOW)
        offline(web, NOW + timedelta(minutes=62), 2)  # the demo stops an agent
        with clock.frozen_at(NOW + timedelta(minutes=62)):
            r = run_round(web.dsn, settle_after=timedelta(minutes=1))
        assert r.settled == 1 and r.sent >= 2
        [(hours, amount, outcome)] = web.sql("SELECT measured_hours, draft_amount, outcome FROM bookings")
        assert (hours, amount, outcome) == (Decimal("0.75"), Decimal("90.00"), "used")
        offline_posts = [p for p in robots.posts if "采集端离线" in p.text]
        assert {p.robot for p in offline_posts} == {"wecom", "dingtalk"}
        assert all(p.verdict == "ok" and p.token == "demo-ua" for p in offline_posts)
    finally:
        robots.close()
