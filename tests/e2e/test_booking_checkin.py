"""End to end (issue 20): a booking's code checks the user in on the real agent, the records go
through the broker and ingest, the derived session carries the code, and settling the booking finds
the measured running time and attributes it to the outside user; the stopped agent's death makes
an alert that reaches a (local) 企业微信 robot."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from protocols.signing import key_id, load_private, public_to_b64
from server import clock
from server.alerts import queries as aq
from server.alerts.engine import run_round
from server.bookings import queries as bq
from server.bookings import service
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import cli, wait_until, write_config
from tests.e2e.helpers import agent_with_ingest
from tests.server.helpers import query, wait_for
from tests.web.alerthelp import RobotReceiver

METER = """
[detectors.power]
kind = "power_meter"
port = "{port}"
timeout_s = 0.05
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(cfg: Path) -> dict[str, Any]:
    out = cli("status", "--config", str(cfg), "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def test_booking_code_checks_the_user_in(fresh_db: str, mqtt_broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    agent_id = f"bk-{tag}"
    unit, instrument, dsn = f"u-{agent_id}", f"i-{agent_id}", fresh_db
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=mqtt_broker, detectors=METER.format(port=meter.port),
                           running="power", period=0.05, heartbeat=0.2, checkin_port=free_port())
        key = load_private(tmp_path / "agent.key")
        query(dsn, "INSERT INTO organisations (id, name, kind) VALUES (%s, '甲大学', 'university'),"
                   " (%s, '丙科技有限公司', 'enterprise') RETURNING 1", (f"o-{tag}", f"ext-{tag}"))
        query(dsn, "INSERT INTO units (id, org_id, name) VALUES (%s, %s, '甲大学') RETURNING 1", (unit, f"o-{tag}"))
        query(dsn, "INSERT INTO instruments (id, unit_id, name, original_value) VALUES (%s, %s, 'X射线衍射仪', 1250000)"
                   " RETURNING 1", (instrument, unit))
        query(dsn, "INSERT INTO agents (id, instrument_id) VALUES (%s, %s) RETURNING 1", (agent_id, instrument))
        query(dsn, "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s) RETURNING 1",
              (key_id(key), agent_id, public_to_b64(key)))
        with psycopg.connect(dsn) as conn:
            bq.upsert_rules(conn, instrument, {"min_notice_hours": 0, "external_needs_approval": False}, clock.now())
            start = clock.now() + timedelta(seconds=1)
            booking = service.request(conn, {"id": instrument, "unit_id": unit}, start, start + timedelta(minutes=10),
                                      {"applicant_name": "李四", "applicant_org_id": f"ext-{tag}"})
        assert booking["status"] == "approved" and booking["user_type"] == 130
        code = booking["code"]

        with agent_with_ingest(dsn, mqtt_broker, cfg, tag) as agent:
            wait_until(lambda: status(cfg).get("running") is True, 20, "the agent answering")
            out = cli("checkin", code.lower(), "--booking", "--config", str(cfg))  # typed as people type
            assert out.returncode == 0 and "Checked in" in out.stdout, out
            meter.watts = 900.0
            wait_until(lambda: status(cfg).get("state") == "running", 10, "the instrument running")
            meter.watts = 40.0
            wait_until(lambda: status(cfg).get("state") == "idle", 10, "the instrument idle again")
            assert cli("checkout", "--config", str(cfg)).returncode == 0
            assert agent.stop() == 0
            wait_for(lambda: query(dsn, "SELECT online FROM live_state WHERE instrument_id = %s", (instrument,))
                     == [(False,)], 30, what="the agent's death stored")
            wait_for(lambda: query(dsn, "SELECT count(*) FROM user_sessions WHERE method = 'booking'"
                                        " AND identifier = %s AND end_at IS NOT NULL", (code.lower(),)) == [(1,)],
                     30, what="the booking session derived")

    with psycopg.connect(dsn) as conn:
        [session] = bq.code_sessions(conn, instrument, [code, code.lower()])
        assert session["running_s"] > 0  # the run happened inside the checked-in session
        with clock.frozen_at(booking["end_at"] + service.SETTLE_AFTER + timedelta(seconds=1)):
            assert service.settle_due(conn) == 1
        got = bq.booking(conn, booking["id"])
    assert got is not None and got["outcome"] == "used"
    assert (got["used_from"], got["used_to"]) == (session["start_at"], session["end_at"])
    # the code's hours are the outside user's: identity map -> platform user of the enterprise
    assert query(dsn, "SELECT p.org_id FROM identity_map m JOIN platform_users p ON p.id = m.user_id"
                      " WHERE m.method = 'booking' AND m.identifier = %s", (code.lower(),)) == [(f"ext-{tag}",)]

    # the stopped agent: an alert at the unit's robot once it has been offline a minute
    robots = RobotReceiver()
    try:
        with psycopg.connect(dsn) as conn:
            url = robots.wecom_url(f"key-{tag}")
            aq.create_channel(conn, unit, "wecom", "", "", [], True, False, 8, 10, url, "")
            # only the offline rule: the others depend on the date the test runs on
            aq.upsert_settings(conn, unit, {"offline_minutes": 1, "period_close_days": None}, clock.now())
        [(died,)] = query(dsn, "SELECT updated_at FROM live_state WHERE instrument_id = %s", (instrument,))
        with clock.frozen_at(died + timedelta(seconds=30)):
            assert run_round(dsn).opened == 0  # not a minute yet
        with clock.frozen_at(died + timedelta(minutes=1, seconds=1)):
            r = run_round(dsn)
        assert (r.opened, r.sent) == (1, 1)
        [post] = robots.posts
        assert post.verdict == "ok" and agent_id in post.text and "采集端离线" in post.text
    finally:
        robots.close()
