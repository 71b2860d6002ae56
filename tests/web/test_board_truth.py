"""The board tells the truth at a glance (issue 18): a user only while their session is open,
today's hours including the run in progress, offline and fault tiles marked to stand out, and this
year's utilization so far next to the low-use line. Time is an input: the clock is frozen."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from server import clock
from tests.web.conftest import T0, Web
from tests.web.livehelp import store_live

NOW = T0 + timedelta(days=7, hours=2)  # 2025-03-10 11:00 Asia/Shanghai, a week after the seeded run


def _tile(web: Web, iid: str) -> dict[str, Any]:
    r = web.as_("mgr-a").get("/api/v1/units/ua/live")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = next(t for t in r.json()["tiles"] if t["id"] == iid)
    return found


def test_today_includes_the_run_in_progress(web: Web) -> None:
    with clock.frozen_at(NOW - timedelta(minutes=6)):
        # 0.25 h counted earlier today; a run began 30 minutes ago, its last record came 6 minutes ago
        store_live(web.dsn, "ua-nmr", "ua", "ua-nmr-a1", "running", since=NOW - timedelta(minutes=30),
                   today_running_s=900 + 24 * 60)
    with clock.frozen_at(NOW):
        assert _tile(web, "ua-nmr")["today_hours"] == 0.75
    # an idle instrument: only what was stored
    with clock.frozen_at(NOW - timedelta(minutes=6)):
        store_live(web.dsn, "ua-nmr", "ua", "ua-nmr-a1", "idle", today_running_s=900)
    with clock.frozen_at(NOW):
        assert _tile(web, "ua-nmr")["today_hours"] == 0.25
    # a run that began yesterday evening counts from today's midnight only (received just now)
    with clock.frozen_at(NOW - timedelta(hours=14)):
        store_live(web.dsn, "ua-nmr", "ua", "ua-nmr-a1", "running")
    with clock.frozen_at(NOW):
        web.sql("UPDATE live_state SET today = %s, today_running_s = 0, last_received_at = %s"
                " WHERE instrument_id = 'ua-nmr'", (clock.today(), NOW))
        hours = _tile(web, "ua-nmr")["today_hours"]
    assert hours == 11.0  # 00:00 to 11:00 Asia/Shanghai


def test_user_only_while_the_session_is_open(web: Web) -> None:
    with clock.frozen_at(NOW):
        store_live(web.dsn, "ua-nmr", "ua", "ua-nmr-a1", "idle", identifier="LAB\\zhang", org_name="丙科技有限公司")
        assert _tile(web, "ua-nmr")["user_org"] == "丙科技有限公司"
        web.sql("INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at,"
                " end_at, start_seq) VALUES ('ua-nmr-a1', 'ua-nmr', 's-live', 'os', 'LAB\\zhang', %s, NULL, 5)",
                (NOW - timedelta(hours=1),))
        assert _tile(web, "ua-nmr")["user_present"] is True
        web.sql("UPDATE user_sessions SET end_at = %s WHERE session_id = 's-live'", (NOW - timedelta(minutes=5),))
        tile = _tile(web, "ua-nmr")
        assert tile["user_present"] is False and tile["user_org"] is None
        html = web.as_("mgr-a").get("/units/ua/board").text
        block = html.split('id="tile-ua-nmr"', 1)[1].split("</a>", 1)[0]
        assert "丙科技" not in block


def test_offline_and_fault_tiles_stand_out(web: Web) -> None:
    with clock.frozen_at(NOW):
        store_live(web.dsn, "ua-nmr", "ua", "ua-nmr-a1", "fault")
        store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "idle", online=False)
        assert _tile(web, "ua-nmr")["alarm"] is True and _tile(web, "ua-xrd")["alarm"] is True
        html = web.as_("mgr-a").get("/units/ua/board").text
        store_live(web.dsn, "ua-xrd", "ua", "ua-xrd-a1", "idle")
        assert _tile(web, "ua-xrd")["alarm"] is False
    assert re.search(r'class="tile st-fault alarm" id="tile-ua-nmr"', html)
    assert re.search(r'class="tile st-offline alarm" id="tile-ua-xrd"', html)


def test_year_utilization_next_to_the_low_use_line(web: Web) -> None:
    with clock.frozen_at(NOW):
        html = web.as_("mgr-a").get("/units/ua/board").text
    block = html.split('id="tile-ua-xrd"', 1)[1].split("</a>", 1)[0]
    m = re.search(r'class="tile-util( low-use)?" data-util="([0-9.]*)"', block)
    assert m is not None
    # 2 h verified running this year; rated 1,400 h a year pro-rated over 69 days begun (Jan 1 - Mar 10)
    assert float(m.group(2)) == round(2 / (1400 * 69 / 365), 4)
    assert m.group(1) == " low-use" and "低效线 20%" in block and "今年利用率" in block
    nmr = html.split('id="tile-ua-nmr"', 1)[1].split("</a>", 1)[0]
    assert 'data-util="0.0000"' in nmr
