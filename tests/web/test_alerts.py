"""Alerts (issue 20): rules, de-duplication, delivery to 企业微信 / 钉钉 robots and e-mail through
local receivers that check the documented formats and the 钉钉 signature, rate limits, the daily
digest, and scope (a second unit's manager sees and changes nothing of the first unit's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from server import clock
from server.alerts.channels import SmtpConfig, dingtalk_sign
from server.alerts.engine import RETRY_AFTER, run_round
from server.alerts.rules import evaluate
from server.store.times import TZ
from server.web.db import Database
from tests.web.alerthelp import RobotReceiver, SmtpSink
from tests.web.conftest import Web

NOW = datetime(2026, 6, 15, 10, 30, tzinfo=TZ)  # a Monday, far from the period's end
KEY_A, KEY_B, DT_A = "693a91f6-aaaa-key-of-ua", "693a91f6-bbbb-key-of-ub", "dt-token-of-ua"
SECRET_A = "SECfeedc0ffee0123456789"


@pytest.fixture
def robots() -> Iterator[RobotReceiver]:
    r = RobotReceiver(dingtalk_secrets={DT_A: SECRET_A})
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    s = SmtpSink()
    yield s
    s.close()


def run(web: Web, at: datetime, smtp: SmtpSink | None = None) -> Any:
    with clock.frozen_at(at):
        return run_round(web.dsn, SmtpConfig("127.0.0.1", smtp.port) if smtp else None)


def offline(web: Web, at: datetime, minutes: int, instrument: str = "ua-xrd", agent: str = "ua-xrd-a1",
            unit: str = "ua") -> None:
    since = at - timedelta(minutes=minutes)
    web.sql("INSERT INTO live_state (instrument_id, unit_id, agent_id, state, today, online, last_received_at,"
            " updated_at) VALUES (%s, %s, %s, 'idle', %s, false, %s, %s) ON CONFLICT (instrument_id) DO UPDATE"
            " SET online = false, last_received_at = EXCLUDED.last_received_at, updated_at = EXCLUDED.updated_at",
            (instrument, unit, agent, at.date(), since, since))


def online(web: Web, at: datetime, instrument: str = "ua-xrd") -> None:
    web.sql("UPDATE live_state SET online = true, last_received_at = %s, updated_at = %s WHERE instrument_id = %s",
            (at, at, instrument))


def fault(web: Web, at: datetime) -> None:
    web.sql("INSERT INTO agents (id, instrument_id) VALUES ('ua-nmr-a1', 'ua-nmr') ON CONFLICT DO NOTHING")
    web.sql("INSERT INTO live_state (instrument_id, unit_id, agent_id, state, state_since, today, online,"
            " last_received_at, updated_at) VALUES ('ua-nmr', 'ua', 'ua-nmr-a1', 'fault', %s, %s, true, %s, %s)",
            (at - timedelta(minutes=3), at.date(), at, at))


def channel(c: Any, **body: Any) -> dict[str, Any]:
    r = c.post("/api/v1/alert-channels", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def deliveries(web: Web) -> list[tuple[Any, ...]]:
    return web.sql("SELECT c.kind, d.kind, d.status, d.error, d.alert_ids FROM alert_deliveries d"
                   " JOIN alert_channels c ON c.id = d.channel_id ORDER BY d.id")


def test_offline_agent_reaches_each_channel_once_then_clears(web: Web, robots: RobotReceiver,
                                                              smtp: SmtpSink) -> None:
    with clock.frozen_at(NOW):
        a, ops = web.as_("mgr-a"), web.as_("ops")  # plain http to this machine: the operator's to set up
        channel(ops, unit_id="ua", kind="wecom", name="实验室群", webhook_url=robots.wecom_url(KEY_A))
        channel(ops, unit_id="ua", kind="dingtalk", webhook_url=robots.dingtalk_url(DT_A), sign_secret=SECRET_A)
        channel(a, unit_id="ua", kind="email", recipients=["lab-a@example.edu.cn"])
        channel(ops, unit_id="ub", kind="wecom", webhook_url=robots.wecom_url(KEY_B))
        listed = a.get("/api/v1/alert-channels").text
    assert KEY_A not in listed and SECRET_A not in listed and DT_A not in listed  # secrets are write-only

    offline(web, NOW, 45)
    r = run(web, NOW, smtp)
    assert (r.opened, r.open_total, r.sent, r.failed) == (1, 1, 3, 0)
    assert [(p.robot, p.token, p.verdict) for p in robots.posts] == [("wecom", KEY_A, "ok"), ("dingtalk", DT_A, "ok")]
    for p in robots.posts:
        assert "采集端离线" in p.text and "ua-xrd-a1" in p.text and "Agent offline" in p.text
        assert "45 分钟" in p.text
    assert robots.posts[1].body["markdown"]["title"].startswith("【机时告警】甲大学")
    [(to, mail)] = smtp.messages
    assert to == ["lab-a@example.edu.cn"]
    assert "机时告警" in mail["Subject"] and "Jishi alert" in mail["Subject"]
    body = mail.get_body(("plain",))
    assert body is not None and "ua-xrd-a1" in body.get_content()

    # still offline five minutes later: the same alert, nothing sent again
    r = run(web, NOW + timedelta(minutes=5), smtp)
    assert (r.opened, r.open_total, r.sent) == (0, 1, 0)
    assert len(robots.posts) == 2 and len(smtp.messages) == 1

    # back online: the alert clears and each channel hears it is resolved, once
    online(web, NOW + timedelta(minutes=10))
    r = run(web, NOW + timedelta(minutes=11), smtp)
    assert (r.cleared, r.open_total, r.sent) == (1, 0, 3)
    assert [p.verdict for p in robots.posts[2:]] == ["ok", "ok"]
    assert all("告警解除" in p.text and "resolved" in p.text and "ua-xrd-a1" in p.text for p in robots.posts[2:])
    assert "告警解除" in smtp.messages[1][1]["Subject"]
    assert run(web, NOW + timedelta(minutes=12), smtp).sent == 0
    # offline again later: a new alert, sent again
    offline(web, NOW + timedelta(hours=3), 40)
    r = run(web, NOW + timedelta(hours=3), smtp)
    assert (r.opened, r.sent) == (1, 3)
    assert web.sql("SELECT count(*), count(cleared_at) FROM alerts") == [(2, 1)]
    assert [(d[1], d[2]) for d in deliveries(web)] == [("alert", "sent")] * 3 + [("clear", "sent")] * 3 + [
        ("alert", "sent")] * 3
    assert not [p for p in robots.posts if p.token == KEY_B]  # ub's group hears nothing of ua


def test_dingtalk_signature() -> None:
    """The documented example: HMAC-SHA256 over "timestamp\\nsecret", base64, then url-encoded."""
    import base64
    import hashlib
    import hmac
    from urllib.parse import quote_plus

    ts = 1_700_000_000_000
    raw = hmac.new(b"SECx", f"{ts}\nSECx".encode(), hashlib.sha256).digest()
    assert dingtalk_sign("SECx", ts) == quote_plus(base64.b64encode(raw).decode())
    assert not set(dingtalk_sign("SECx", ts)) & set("+/=")  # url-encoded, as a query parameter must be


def test_failures_are_stored_and_retried(web: Web, robots: RobotReceiver) -> None:
    robots.fail_tokens.add(KEY_A)
    with clock.frozen_at(NOW):
        a, ops = web.as_("mgr-a"), web.as_("ops")
        ding = channel(ops, unit_id="ua", kind="dingtalk", webhook_url=robots.dingtalk_url(DT_A),
                       sign_secret="SECwrong")
        channel(ops, unit_id="ua", kind="wecom", webhook_url=robots.wecom_url(KEY_A))
    offline(web, NOW, 60)
    r = run(web, NOW)
    assert (r.sent, r.failed) == (0, 2)
    errors = {d[0]: d[3] for d in deliveries(web)}
    assert errors["dingtalk"].startswith("errcode 310000") and "sign" in errors["dingtalk"]
    assert errors["wecom"].startswith("HTTP 500")
    assert KEY_A not in errors["wecom"]
    assert [p.verdict for p in robots.posts if p.robot == "dingtalk"] == ["sign not match"]

    assert run(web, NOW + RETRY_AFTER - timedelta(seconds=1)).failed == 0  # waits before retrying
    assert run(web, NOW + RETRY_AFTER + timedelta(seconds=1)).failed == 2

    robots.fail_tokens.clear()
    with clock.frozen_at(NOW + timedelta(minutes=20)):
        r = a.patch(f"/api/v1/alert-channels/{ding['id']}", json={"sign_secret": SECRET_A})
        assert r.status_code == 200, r.text
    r = run(web, NOW + timedelta(minutes=20))
    assert (r.sent, r.failed) == (2, 0)
    assert [d[2] for d in deliveries(web)] == ["failed"] * 4 + ["sent"] * 2

    with clock.frozen_at(NOW + timedelta(minutes=21)):
        page = a.get("/alerts")
        api = a.get("/api/v1/alerts").json()["items"]
    assert page.status_code == 200
    assert "失败" in page.text and "已送达" in page.text and "errcode 310000" in page.text
    [item] = api
    assert [d["status"] for d in item["deliveries"]] == ["failed"] * 4 + ["sent"] * 2


def test_rate_limit_per_channel(web: Web, robots: RobotReceiver) -> None:
    with clock.frozen_at(NOW):
        channel(web.as_("ops"), unit_id="ua", kind="wecom", webhook_url=robots.wecom_url(KEY_A), max_per_hour=1)
    offline(web, NOW, 45)
    assert run(web, NOW).sent == 1
    fault(web, NOW + timedelta(minutes=10))
    r = run(web, NOW + timedelta(minutes=10))
    assert (r.opened, r.sent) == (1, 0)  # the hour's one message is spent: the fault waits
    r = run(web, NOW + timedelta(minutes=61))
    assert r.sent == 1
    assert len(robots.posts) == 2 and "仪器故障" in robots.posts[1].text and "ua-nmr" in robots.posts[1].text


def test_daily_digest(web: Web, robots: RobotReceiver) -> None:
    day = datetime.combine(NOW.date(), time(7, 0), TZ)
    with clock.frozen_at(day):
        channel(web.as_("ops"), unit_id="ua", kind="wecom", webhook_url=robots.wecom_url(KEY_A), digest=True,
                digest_hour=8)
    offline(web, day, 45)
    fault(web, day)
    assert run(web, day).open_total == 2
    assert robots.posts == []  # a digest channel gets nothing one by one, nor before its hour
    assert run(web, day + timedelta(hours=1, minutes=5)).sent == 1
    [post] = robots.posts
    assert "每日汇总" in post.text and "ua-xrd-a1" in post.text and "ua-nmr" in post.text and post.verdict == "ok"
    assert run(web, day + timedelta(hours=3)).sent == 0  # once a day
    assert run(web, day + timedelta(days=1, hours=1, minutes=1)).sent == 1
    assert [(d[1], d[2]) for d in deliveries(web)] == [("digest", "sent")] * 2


def test_scope_second_unit_manager(web: Web, robots: RobotReceiver) -> None:
    with clock.frozen_at(NOW):
        a, b, ops, eva = web.as_("mgr-a"), web.as_("mgr-b"), web.as_("ops"), web.as_("eva")
        ua = channel(ops, unit_id="ua", kind="wecom", webhook_url=robots.wecom_url(KEY_A))
    offline(web, NOW, 45)
    run(web, NOW)
    with clock.frozen_at(NOW + timedelta(minutes=1)):
        assert b.get("/api/v1/alerts").json()["items"] == []
        assert b.get("/api/v1/alerts", params={"unit_id": "ua"}).status_code == 403
        assert b.get("/api/v1/alert-channels").json() == []
        assert b.get("/api/v1/alert-deliveries").json() == []
        assert b.patch(f"/api/v1/alert-channels/{ua['id']}", json={"enabled": False}).status_code == 404
        assert b.post(f"/api/v1/alert-channels/{ua['id']}/test").status_code == 404
        assert b.post("/api/v1/alert-channels", json={"unit_id": "ua", "kind": "wecom",
                                                      "webhook_url": robots.wecom_url("x")}).status_code == 404
        assert b.put("/api/v1/units/ua/alert-settings", json={}).status_code == 404
        assert b.get(f"/alerts/channels/{ua['id']}/edit").status_code == 404
        page_b = b.get("/alerts")
        assert page_b.status_code == 200 and "ua-xrd-a1" not in page_b.text and KEY_A[-4:] not in page_b.text
        assert eva.get("/api/v1/alerts").status_code == 403
        assert eva.get("/alerts").status_code == 403
        assert "ua-xrd-a1" in a.get("/alerts").text
        assert [i["rule"] for i in a.get("/api/v1/alerts").json()["items"]] == ["agent_offline"]
        assert [i["unit_id"] for i in ops.get("/api/v1/alerts").json()["items"]] == ["ua"]
        en = a.get("/api/v1/alerts", params={"lang": "en"}).json()["items"][0]
        assert en["rule_label"] == "Agent offline" and "has been offline since" in en["message"]
    assert web.sql("SELECT enabled FROM alert_channels") == [(True,)]


def test_channel_targets_are_checked(web: Web) -> None:
    with clock.frozen_at(NOW):
        a = web.as_("mgr-a")
        bad: list[dict[str, Any]] = [
            {"kind": "wecom", "webhook_url": "http://example.com/cgi-bin/webhook/send?key=k"},  # plain http, remote
            {"kind": "wecom", "webhook_url": "http://127.0.0.1:8080/cgi-bin/webhook/send?key=k"},  # local: ops only
            {"kind": "wecom", "webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"},  # no key
            {"kind": "dingtalk", "webhook_url": "https://oapi.dingtalk.com/robot/send"},  # no access_token
            {"kind": "email", "recipients": ["not-an-address"]},
            {"kind": "email", "recipients": []},
        ]
        for body in bad:
            r = a.post("/api/v1/alert-channels", json={"unit_id": "ua", **body})
            assert r.status_code == 422, (body, r.text)
        ok = a.post("/api/v1/alert-channels", json={"unit_id": "ua", "kind": "wecom",
                                                    "webhook_url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY_A}"})
        assert ok.status_code == 201 and ok.json()["target_hint"].endswith(KEY_A[-4:])
        assert KEY_A not in ok.text
    # the audit log records the channel, never the webhook key
    assert not web.sql("SELECT 1 FROM audit_log WHERE after::text LIKE %s", (f"%{KEY_A}%",))
    assert web.sql("SELECT count(*) FROM audit_log WHERE table_name = 'alert_channels'") == [(1,)]


def conditions(dsn: str, at: datetime, *, by_unit: bool = False) -> dict[tuple[str, ...], dict[str, Any]]:
    db = Database(dsn)
    db.open()
    try:
        with clock.frozen_at(at), db.read() as conn:
            return {((c.unit_id,) if by_unit else ()) + (c.rule, c.subject): c.params for c in evaluate(conn)}
    finally:
        db.close()


def test_rules(web: Web) -> None:
    at = datetime(2025, 10, 11, 10, 0, tzinfo=TZ)  # a Saturday worked for National Day (调休)
    # accepted 2025-09-01: the 30th working day after is 2025-10-17 (the National Day holiday and the
    # make-up days 09-28 and 10-11 counted); on 10-11, five working days are left (10-13 .. 10-17)
    web.sql("INSERT INTO instruments (id, unit_id, name, original_value, accepted_on) VALUES"
            " ('ua-tem', 'ua', '透射电镜', 5000000, '2025-09-01'), ('ua-ok', 'ua', '小仪器', 1000, '2025-09-01')")
    # an outside user's session a day and a half ago, with no service record
    web.sql("INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
            " start_seq) VALUES ('ua-xrd-a1', 'ua-xrd', 's9', 'os', 'LAB\\zhang', %s, %s, 20)",
            (at - timedelta(hours=40), at - timedelta(hours=36)))
    # the agent of ua-xrd is watched since long ago; its last run ended on 2025-03-03 (seed)
    web.sql("UPDATE agents SET created_at = '2024-01-01T00:00:00Z'")
    found = conditions(web.dsn, at)
    deadline = found[("registration_deadline", "ua-tem")]
    assert (deadline["deadline"], deadline["left"]) == ("2025-10-17", 5)
    assert ("registration_deadline", "ua-ok") not in found  # below the 300,000 CNY scope
    ext = found[("external_unrecorded", "ua-xrd-a1/s9")]
    assert ext["org"] == "丙科技有限公司" and ext["hours"] == 4.0
    unused = found[("instrument_unused", "ua-xrd")]  # full days since the run ended, 2025-03-03 11:00
    assert (unused["days"], unused["last"]) == ((at.date() - date(2025, 3, 3)).days - 1, "2025-03-03 11:00")
    assert found[("instrument_unused", "ub-sem")]["last"] == "—"
    assert not [k for k in found if k[0] == "period_closing"]

    day_before = conditions(web.dsn, at - timedelta(days=1))  # Friday 10-10: six working days left
    assert ("registration_deadline", "ua-tem") not in day_before

    # a service record covering the session clears it; a threshold set to null switches a rule off
    web.sql("INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,"
            " user_type) VALUES ('ua', 'ua-xrd', 'SR-9', %s, %s, 4, 130)",
            (at - timedelta(hours=40), at - timedelta(hours=36)))
    with clock.frozen_at(at):
        r = web.as_("mgr-a").patch("/api/v1/units/ua/alert-settings", json={"unused_days": None})
        assert r.status_code == 200 and r.json()["unused_days"] is None and r.json()["offline_minutes"] == 30
    found = conditions(web.dsn, at)
    assert ("external_unrecorded", "ua-xrd-a1/s9") not in found
    assert ("instrument_unused", "ua-xrd") not in found and ("instrument_unused", "ub-sem") in found

    overdue = conditions(web.dsn, datetime(2025, 10, 20, 9, 0, tzinfo=TZ))
    assert overdue[("registration_deadline", "ua-tem")]["overdue"] == 3

    closing = conditions(web.dsn, datetime(2025, 12, 20, 9, 0, tzinfo=TZ), by_unit=True)
    assert {k for k in closing if k[1] == "period_closing"} == {("ua", "period_closing", "2025"),
                                                               ("ub", "period_closing", "2025")}
    assert closing[("ua", "period_closing", "2025")] == {"year": 2025, "end": "2025-12-31", "days": 12, "waiting": 0}


def test_period_closing_on_sweep_days(web: Web, today: date) -> None:
    """The evaluation period is the calendar year: warned of in its last 30 days, on any day."""
    found = conditions(web.dsn, clock.now())
    days_left = (date(today.year + 1, 1, 1) - today).days
    closing = {k: v for k, v in found.items() if k[0] == "period_closing"}
    if days_left <= 30:
        assert set(closing) == {("period_closing", str(today.year))}
        assert closing[("period_closing", str(today.year))]["days"] == days_left
    else:
        assert closing == {}


def test_cli_round(web: Web, robots: RobotReceiver) -> None:
    with clock.frozen_at(NOW):
        channel(web.as_("ops"), unit_id="ua", kind="wecom", webhook_url=robots.wecom_url(KEY_A))
    offline(web, NOW, 45)
    env = {**os.environ, "JISHI_NOW": NOW.isoformat(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-m", "server.cli", "alerts", "--once", "--dsn", web.dsn],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "1 opened" in out.stderr and "1 sent" in out.stderr
    assert [p.verdict for p in robots.posts] == ["ok"]


def test_demo_receiver_accepts_both_robots(web: Web, tmp_path: Path) -> None:
    """server/alerts/receiver.py, the demo's stand-in for the groups: a signed 钉钉 message and a
    企业微信 message are accepted and logged; a wrong signature is refused as the robot would."""
    from tests.web.alerthelp import free_port

    port, log = free_port(), tmp_path / "robot.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "server.alerts.receiver", "--port", str(port),
                             "--dingtalk-secret", SECRET_A, "--log", str(log)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and "robot receiver on" in proc.stderr.readline()
        base = f"http://127.0.0.1:{port}"
        with clock.frozen_at(NOW):
            a = web.as_("ops")
            channel(a, unit_id="ua", kind="wecom", webhook_url=f"{base}/cgi-bin/webhook/send?key=demo")
            channel(a, unit_id="ua", kind="dingtalk", webhook_url=f"{base}/robot/send?access_token=demo",
                    sign_secret=SECRET_A)
            channel(a, unit_id="ua", kind="dingtalk", webhook_url=f"{base}/robot/send?access_token=other",
                    sign_secret="SECwrong")
        offline(web, NOW, 45)
        r = run(web, NOW)
        assert (r.sent, r.failed) == (2, 1)
        lines = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
        assert sorted((x["robot"], x["verdict"]) for x in lines) == [
            ("dingtalk", "ok"), ("dingtalk", "sign not match"), ("wecom", "ok")]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_test_message_from_the_page(web: Web, robots: RobotReceiver) -> None:
    with clock.frozen_at(NOW):
        ops, a, b = web.as_("ops"), web.as_("mgr-a"), web.as_("mgr-b")
        ch = channel(ops, unit_id="ua", kind="dingtalk", webhook_url=robots.dingtalk_url(DT_A), sign_secret=SECRET_A)
        assert f'data-api="/api/v1/alert-channels/{ch["id"]}/test"' in a.get("/alerts").text
        assert b.post(f"/api/v1/alert-channels/{ch['id']}/test").status_code == 404
        r = a.post(f"/api/v1/alert-channels/{ch['id']}/test")
        assert r.json() == {"status": "sent", "error": ""}
        page = a.get("/alerts").text
        other = b.get("/alerts")
    [post] = robots.posts
    assert post.verdict == "ok" and "测试消息" in post.text
    assert 'data-kind="test"' in page and "已送达" in page
    assert other.status_code == 200 and other.url.path == "/alerts" and 'data-kind="test"' not in other.text
