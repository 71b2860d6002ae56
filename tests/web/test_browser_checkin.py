"""Phone check-in end to end (issue 19): headless Chromium at a phone's viewport opens an
instrument label's URL, logs in through the REAL OpenID Connect provider (node oidc-provider, its
own login form), checks in on a REAL agent watching only a power meter (the pymodbus test device),
sees the agent's answer, checks out; the session is in the agent's signed chain as stored by
ingest, and the board shows the user's organisation: an outside person's (乙研究所) on unit A's
instrument. Pending registrants are refused in tests/web/test_checkin.py (same provider)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from protocols.signing import generate, key_id, load_private, public_to_b64, save_private
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import write_config
from tests.e2e.helpers import agent_with_ingest
from tests.server.helpers import wait_for
from tests.web.conftest import PASSWORD, Web
from tests.web.livehelp import serve
from tests.web.ssohelp import PROVIDER_PASSWORD, Idp
from tests.web.test_browser import ARTIFACTS, browser  # noqa: F401
from tests.web.test_browser_bookings import watch

METER = """
[detectors.power]
kind = "power_meter"
port = "{port}"
timeout_s = 0.05
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""
PHONE = {"width": 390, "height": 844}


def test_phone_checks_in_on_a_power_meter_agent(web: Web, mqtt_broker: Any, browser: Any,  # noqa: F811
                                                 oidc_idp: Idp, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    agent_id = f"qr-{tag}"
    unit, instrument = f"u-{agent_id}", f"i-{agent_id}"
    server_key = tmp_path / "server.key"
    save_private(generate(), server_key)
    web.sql("INSERT INTO units (id, org_id, name) VALUES (%s, 'org-a', '甲大学')", (unit,))
    web.sql("INSERT INTO instruments (id, unit_id, name, original_value) VALUES (%s, %s, '电感耦合等离子体质谱仪',"
            " 1800000)", (instrument, unit))
    # an outside user of unit A (another organisation), known to the unit by the university login `wu`
    web.sql("INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES ('p-wu', '吴六', 'org-b', %s)",
            (unit,))
    web.sql("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, 'login', 'uni:wu', 'p-wu')",
            (unit,))
    code = web.as_("ops").post(f"/api/v1/instruments/{instrument}/checkin-code").json()["code"]

    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=mqtt_broker, detectors=METER.format(port=meter.port),
                           running="power", period=0.1, heartbeat=1.0)
        cfg.write_text(cfg.read_text().replace(  # the agent learns the server's key at enrolment
            "[identity]\n", f'[identity]\nserver_key = "{public_to_b64(load_private(server_key))}"\n', 1))
        key = load_private(tmp_path / "agent.key")
        web.sql("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (agent_id, instrument))
        web.sql("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                (key_id(key), agent_id, public_to_b64(key)))
        with agent_with_ingest(web.dsn, mqtt_broker, cfg, tag):
            wait_for(lambda: web.sql("SELECT online FROM live_state WHERE instrument_id = %s", (instrument,))
                     == [(True,)], 30, what="the agent online")
            with serve(web.dsn, port=oidc_idp.browser_port, login_providers=[oidc_idp.provider()],
                       command_key_file=str(server_key), command_mqtt_host=mqtt_broker.host,
                       command_mqtt_port=mqtt_broker.port) as base:
                ctx = browser.new_context(locale="zh-CN", viewport=PHONE, is_mobile=True, has_touch=True)
                try:
                    page = ctx.new_page()
                    errors = watch(page)
                    page.goto(f"{base}/c/{code}")  # what the label's QR code opens: the login first
                    page.wait_for_url(f"{base}/login?next=/c/{code}")
                    page.click("#sso-uni")  # 统一身份认证登录: the provider's own form
                    page.wait_for_selector("#login")
                    page.fill("#login", "wu")
                    page.fill("#password", PROVIDER_PASSWORD)
                    page.click("#submit")
                    page.wait_for_url(f"{base}/c/{code}")  # and back to the label's page
                    assert "电感耦合等离子体质谱仪" in (page.text_content("#checkin-instrument") or "")
                    assert "吴六（乙研究所）" in (page.text_content("#checkin-person") or "")
                    assert page.text_content("#phone-who") == "吴六" and page.is_visible("#phone-logout")
                    assert page.is_hidden("#checkin-offline")  # the agent is online
                    t0 = time.monotonic()
                    page.click("#checkin-in")
                    page.wait_for_selector("#checkin-result[data-state=done]", timeout=10_000)
                    answered_in = time.monotonic() - t0
                    assert "采集端已签名记录" in (page.text_content("#checkin-result") or "")
                    page.screenshot(path=str(ARTIFACTS / "checkin-phone.png"), full_page=True)
                    assert answered_in < 5, answered_in  # about a second on an idle machine

                    [(session, method, ident, seq)] = web.sql(
                        "SELECT session_id, method, identifier, start_seq FROM user_sessions WHERE agent_id = %s"
                        " AND end_at IS NULL", (agent_id,))
                    assert session.startswith("qr-") and (method, ident) == ("checkin", "person:p-wu")
                    # the board shows the user's organisation (live state resolved through the identity map)
                    wait_for(lambda: web.sql("SELECT org_name FROM live_state WHERE instrument_id = %s",
                                             (instrument,)) == [("乙研究所",)], 10, what="the board's organisation")

                    page.click("#checkin-out")
                    page.wait_for_selector("#checkin-result[data-state=done]", timeout=10_000)
                    assert "下机登记成功" in (page.text_content("#checkin-result") or "")
                    page.click("#phone-logout")  # the person's session ends: the label asks for a login again
                    page.wait_for_url(f"{base}/login")
                    page.goto(f"{base}/c/{code}")
                    page.wait_for_url(f"{base}/login?next=/c/{code}")
                    assert errors == [], "\n".join(errors)
                finally:
                    ctx.close()
                with_board = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
                try:
                    bp = with_board.new_page()
                    bp.goto(base + "/login")
                    bp.fill("input[name=login]", "ops")
                    bp.fill("input[name=password]", PASSWORD)
                    bp.click("button[type=submit]")
                    bp.goto(f"{base}/instruments/{instrument}")
                    assert "乙研究所" in (bp.text_content("body") or "")  # the session, with its organisation
                finally:
                    with_board.close()
            [(end_reason,)] = web.sql("SELECT end_reason FROM user_sessions WHERE agent_id = %s AND session_id = %s",
                                      (agent_id, session))
            assert end_reason == "checkout"
            # the session is in the agent's signed chain: the stored envelope carries the record
            [(raw,)] = web.sql("SELECT e.raw FROM envelopes e JOIN agent_progress p ON p.agent_no = e.agent_no"
                               " WHERE p.agent_id = %s AND e.first_seq <= %s AND e.last_seq >= %s",
                               (agent_id, seq, seq))
            env = orjson.loads(bytes(raw))
            [rec] = [r for r in env["records"] if r["seq"] == seq]
            assert rec == {**rec, "type": "session_start", "session": session, "method": "checkin",
                           "user": "person:p-wu"}
            assert web.sql("SELECT kind, agent_id IS NOT NULL, login FROM checkin_requests ORDER BY id") == [
                ("agent", True, "uni:wu"), ("agent", True, "uni:wu")]
