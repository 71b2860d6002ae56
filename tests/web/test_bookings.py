"""Bookings (issue 20): a request from the public catalog, approval under the instrument's rules,
check-in with the booking code, booked vs measured after the slot, the drafted service record of an
outside user with the measured hours and the price-list fee, iCalendar, and scope."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from server import clock
from server.alerts.engine import run_round
from server.bookings.service import ics
from server.store.times import TZ
from tests.web.conftest import Web
from tests.web.test_alerts import conditions

NOW = datetime(2026, 6, 15, 10, 30, tzinfo=TZ)  # Monday
SLOT = datetime(2026, 6, 18, 9, 0, tzinfo=TZ)  # Thursday 09:00-12:00


def request(c: Any, start: datetime = SLOT, hours: float = 3, **kw: Any) -> Any:
    body = {"instrument_id": "ua-xrd", "start_at": start.isoformat(),
            "end_at": (start + timedelta(hours=hours)).isoformat(), "applicant_name": "李四",
            "applicant_org_id": "ext-co", "content": "粉末衍射 5 个样品"} | kw
    return c.post("/api/v1/public/bookings", json=body)


def prices(web: Web) -> None:
    web.sql("INSERT INTO price_list (instrument_id, item, basis, internal_price, external_price, valid_from,"
            " valid_to) VALUES ('ua-xrd', '常规测试', 'per_hour', 50, 150, '2026-01-01', NULL),"
            " ('ua-xrd', '旧价', 'per_hour', 20, 60, '2025-01-01', '2025-12-31'),"
            " ('ua-xrd', '制样', 'per_sample', 10, 30, '2026-01-01', NULL)")


def check_in(web: Web, code: str, start: datetime, end: datetime, run_from: datetime, run_to: datetime) -> None:
    """What the agent records when the user checks in with the code and the instrument runs."""
    web.sql("INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
            " start_seq) VALUES ('ua-xrd-a1', 'ua-xrd', 'bk1', 'booking', %s, %s, %s, 100)", (code, start, end))
    web.sql("INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
            " session_id, start_seq) VALUES"
            " ('ua-xrd-a1', 'ua-xrd', %(a)s, %(b)s, 'idle', true, 'live', 'bk1', 100),"
            " ('ua-xrd-a1', 'ua-xrd', %(b)s, %(c)s, 'running', true, 'live', 'bk1', 101),"
            " ('ua-xrd-a1', 'ua-xrd', %(c)s, %(d)s, 'idle', true, 'live', 'bk1', 102)",
            {"a": start, "b": run_from, "c": run_to, "d": end})


def test_outside_user_booking_ends_in_a_drafted_service_record(web: Web) -> None:
    prices(web)
    with clock.frozen_at(NOW):
        a, b, anon = web.as_("mgr-a"), web.as_("mgr-b"), web.client()
        r = a.put("/api/v1/instruments/ua-xrd/booking-rules",
                  json={"external_needs_approval": True, "service_terms": "按校外价收费", "ip_terms": "成果归用户",
                        "confidentiality": "样品与数据保密"})
        assert r.status_code == 200, r.text
        r = request(anon)
        assert r.status_code == 201, r.text
        booking = r.json()
        code = booking["code"]
        assert re.fullmatch(r"[A-Z2-9]{10}", code) and booking["status"] == "requested"
        assert booking["user_type"] == 130 and booking["terms"]["ip_terms"] == "成果归用户"
        page = anon.get(f"/booking/{code}")
        assert page.status_code == 200 and code in page.text and "待审批" in page.text
        assert b.post(f"/api/v1/bookings/{booking['id']}/approve").status_code == 404  # another unit's
        assert b.get("/api/v1/bookings").json() == []
        assert web.as_("eva").get("/api/v1/bookings").status_code == 403
        r = a.post(f"/api/v1/bookings/{booking['id']}/approve", json={"note": "请提前 10 分钟到"})
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
        user = r.json()["user_id"]
    assert web.sql("SELECT identifier, user_id FROM identity_map WHERE unit_id = 'ua' AND method = 'booking'"
                   " ORDER BY identifier") == [(code, user), (code.lower(), user)]  # as typed at check-in
    assert web.sql("SELECT org_id FROM platform_users WHERE id = %s", (user,)) == [("ext-co",)]

    # the user checks in with the code at 09:05, the instrument runs 09:10-11:40, check-out 12:20
    check_in(web, code.lower(), SLOT + timedelta(minutes=5), SLOT + timedelta(hours=3, minutes=20),
             SLOT + timedelta(minutes=10), SLOT + timedelta(hours=2, minutes=40))
    with clock.frozen_at(SLOT + timedelta(hours=3, minutes=10)):
        assert run_round(web.dsn).settled == 0  # not yet: half an hour after the slot for late check-outs
    with clock.frozen_at(SLOT + timedelta(hours=4)):
        assert run_round(web.dsn).settled == 1
        a, b = web.as_("mgr-a"), web.as_("mgr-b")  # days later: new sessions
        got = {x["id"]: x for x in a.get("/api/v1/bookings").json()}[booking["id"]]
        assert got["outcome"] == "overrun" and Decimal(str(got["measured_hours"])) == Decimal("2.50")
        assert Decimal(str(got["draft_amount"])) == Decimal("375.00") and got["draft_price_item"] == "常规测试"
        page = a.get("/bookings")
        assert page.status_code == 200 and "超时" in page.text and "375.00" in page.text
        assert b.post(f"/api/v1/bookings/{booking['id']}/confirm").status_code == 404
        r = a.post(f"/api/v1/bookings/{booking['id']}/confirm")
        assert r.status_code == 201, r.text
        assert a.post(f"/api/v1/bookings/{booking['id']}/confirm").status_code == 409
    [rec] = web.sql("SELECT record_no, service_hours, amount, user_type, applicant_user_id, applicant_org_id,"
                    " ip_terms, start_at, end_at FROM service_records WHERE id = %s", (r.json()["service_record_id"],))
    assert rec[:7] == (f"BK-{booking['id']}", Decimal("2.5"), Decimal("375.00"), 130, user, "ext-co", "成果归用户")
    assert (rec[7], rec[8]) == (SLOT + timedelta(minutes=5), SLOT + timedelta(hours=3, minutes=20))
    # the record is audited as the manager's
    assert web.sql("SELECT actor FROM audit_log WHERE table_name = 'service_records' AND action = 'INSERT'"
                   " AND row_key = %s", (str(r.json()["service_record_id"]),)) == [("account:mgr-a",)]


def test_booking_rules_refuse(web: Web) -> None:
    with clock.frozen_at(NOW):
        a, anon = web.as_("mgr-a"), web.client()
        assert request(anon, NOW + timedelta(hours=1)).status_code == 422  # default notice: 2 hours
        assert request(anon, NOW + timedelta(days=31)).status_code == 422  # default: 30 days ahead
        assert request(anon, hours=9).status_code == 422  # default: at most 8 hours
        assert request(anon, hours=-1).status_code == 422
        assert request(anon, applicant_org_id="no-such-org").status_code == 422
        # a claimed internal user waits for approval by default (no login proves it) ...
        waits = request(anon, SLOT + timedelta(days=3), applicant_org_id="org-a", applicant_name="王五")
        assert waits.json()["status"] == "requested" and waits.json()["user_type"] == 120
        # ... unless the manager's rules say internal bookings need none
        assert a.put("/api/v1/instruments/ua-xrd/booking-rules",
                     json={"internal_needs_approval": False}).status_code == 200
        inner = request(anon, applicant_org_id="org-a", applicant_name="王五")
        assert inner.status_code == 201 and inner.json()["status"] == "approved" and inner.json()["user_type"] == 120
        taken = request(anon, SLOT + timedelta(hours=1))
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "booking_refused"
        assert "已被预约" in taken.json()["error"]["message"]
        en = anon.post("/api/v1/public/bookings?lang=en", json={
            "instrument_id": "ua-xrd", "start_at": (SLOT + timedelta(hours=1)).isoformat(),
            "end_at": (SLOT + timedelta(hours=2)).isoformat(), "applicant_name": "x"})
        assert en.json()["error"]["message"] == "This slot is already booked."
        assert a.put("/api/v1/instruments/ua-xrd/booking-rules", json={"who": "internal"}).status_code == 200
        assert request(anon, SLOT + timedelta(days=1)).status_code == 422  # outsiders may not book now
        assert a.put("/api/v1/instruments/ua-xrd/booking-rules", json={"who": "none"}).status_code == 200
        assert request(anon, SLOT + timedelta(days=1), applicant_org_id="org-a").status_code == 422
        assert web.as_("mgr-b").put("/api/v1/instruments/ua-xrd/booking-rules", json={}).status_code == 404
    web.sql("UPDATE instruments SET is_open = false WHERE id = 'ua-nmr'")
    with clock.frozen_at(NOW):
        assert request(anon, instrument_id="ua-nmr").status_code == 404  # not in the public catalog
        # the applicant cancels with the code; a cancelled slot is free again
        code = inner.json()["code"]
        assert anon.post(f"/api/v1/public/bookings/{code}/cancel").json()["status"] == "cancelled"
        assert anon.post(f"/api/v1/public/bookings/{code}/cancel").status_code == 409
        assert anon.get("/api/v1/public/bookings/NOSUCHCODE").status_code == 404


def test_no_show_has_no_draft_and_waiting_requests_alert(web: Web) -> None:
    with clock.frozen_at(NOW):
        a, anon = web.as_("mgr-a"), web.client()
        first = request(anon).json()
        second = request(anon, SLOT + timedelta(days=1)).json()
    found = conditions(web.dsn, NOW + timedelta(hours=25), by_unit=True)
    waiting = found[("ua", "booking_waiting", "ua-xrd")]
    assert (waiting["n"], waiting["since"]) == (2, "2026-06-15 10:30")
    assert not conditions(web.dsn, NOW + timedelta(hours=23), by_unit=True).get(("ua", "booking_waiting", "ua-xrd"))
    with clock.frozen_at(NOW + timedelta(hours=1)):
        assert a.post(f"/api/v1/bookings/{first['id']}/approve").status_code == 200
        assert a.post(f"/api/v1/bookings/{second['id']}/decline", json={"note": "维护"}).json()["status"] == "declined"
        assert a.post(f"/api/v1/bookings/{second['id']}/approve").status_code == 409
    with clock.frozen_at(SLOT + timedelta(hours=4)):
        assert run_round(web.dsn).settled == 1  # the declined one is never settled
        a = web.as_("mgr-a")
        got = {x["id"]: x for x in a.get("/api/v1/bookings").json()}
        assert got[first["id"]]["outcome"] == "no_show" and got[first["id"]]["draft_amount"] is None
        assert a.post(f"/api/v1/bookings/{first['id']}/confirm").status_code == 422


def test_calendars(web: Web) -> None:
    with clock.frozen_at(NOW):
        a, anon = web.as_("mgr-a"), web.client()
        booking = request(anon).json()
        a.post(f"/api/v1/bookings/{booking['id']}/approve")
        cal = anon.get("/api/v1/public/instruments/ua-xrd/bookings.ics")
        mine = anon.get(f"/api/v1/public/bookings/{booking['code']}/calendar.ics")
        user_id = a.get("/api/v1/bookings").json()[0]["user_id"]
        person = a.get(f"/api/v1/people/{user_id}/bookings.ics")
        other = web.as_("mgr-b").get(f"/api/v1/people/{user_id}/bookings.ics")
    assert cal.status_code == 200 and cal.headers["content-type"].startswith("text/calendar")
    text = cal.text
    assert text.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n") and text.endswith("END:VCALENDAR\r\n")
    assert "DTSTART:20260618T010000Z\r\nDTEND:20260618T040000Z" in text and "STATUS:CONFIRMED" in text
    assert "李四" not in text  # the public calendar shows busy slots, never who
    assert booking["code"] in mine.text and "BEGIN:VEVENT" in mine.text
    assert "李四" in person.text and "BEGIN:VEVENT" not in other.text


def test_ics_lines_are_folded() -> None:
    with clock.frozen_at(NOW):
        out = ics("长" * 60, [{"id": 1, "start_at": SLOT, "end_at": SLOT + timedelta(hours=1), "status": "approved",
                              "summary": "扫描电子显微镜；高分辨, 长名称" * 5}])
    for line in out.split("\r\n"):
        assert len(line.encode()) <= 75
    unfolded = out.replace("\r\n ", "")
    assert "SUMMARY:" + "扫描电子显微镜；高分辨\\, 长名称" * 5 in unfolded  # RFC 5545 escapes the ASCII comma


def test_unbooked_runs(web: Web) -> None:
    run_at = NOW - timedelta(days=1)
    web.sql("INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
            " session_id, start_seq) VALUES ('ua-xrd-a1', 'ua-xrd', %s, %s, 'running', true, 'live', NULL, 500)",
            (run_at, run_at + timedelta(hours=1, minutes=30)))
    with clock.frozen_at(NOW):
        mine = web.as_("mgr-a").get("/api/v1/bookings/unbooked").json()
        theirs = web.as_("mgr-b").get("/api/v1/bookings/unbooked").json()
    assert [(u["instrument_id"], Decimal(str(u["hours"]))) for u in mine] == [("ua-xrd", Decimal("1.50"))]
    assert theirs == []


def test_pages_render(web: Web) -> None:
    with clock.frozen_at(NOW):
        anon, a = web.client(), web.as_("mgr-a")
        book = anon.get("/catalog/ua-xrd/book")
        assert book.status_code == 200 and 'id="booking-form"' in book.text and "/static/bookings.js" in book.text
        assert 'id="book-online"' in anon.get("/catalog/ua-xrd").text
        assert anon.get("/bookings").url.path == "/login"  # managers only
        for path in ("/bookings", "/bookings/rules/ua-xrd", "/alerts", "/alerts/channels/new",
                     "/alerts/settings/ua"):
            r = a.get(path)
            assert r.status_code == 200, (path, r.status_code)
        assert "预约规则" in a.get("/bookings/rules/ua-xrd").text
        assert "可预约 30 天内的时段" in book.text and "预约需管理人员审批后生效" in book.text
        assert "Booking rules" in a.get("/bookings/rules/ua-xrd", params={"lang": "en"}).text
        assert a.get("/bookings/rules/ub-sem").status_code == 404
        assert a.get("/alerts/settings/ub").status_code == 404


def test_public_requests_are_rate_limited_per_client(web: Web) -> None:
    from server.web.api.bookings import PUBLIC_REQUESTS_PER_HOUR

    with clock.frozen_at(NOW):
        anon = web.client()
        for i in range(PUBLIC_REQUESTS_PER_HOUR):
            assert request(anon, SLOT + timedelta(hours=i), hours=0.5).status_code == 201
        r = request(anon, SLOT + timedelta(days=2), hours=0.5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3600"
    assert web.sql("SELECT count(*) FROM bookings") == [(PUBLIC_REQUESTS_PER_HOUR,)]


def test_a_booking_never_takes_another_units_person(web: Web) -> None:
    # unit ub owns a person 李四 of ext-co; a booking at unit ua naming the same person must not map
    # ua's code to ub's person (that would let ua attribute hours, and move ub's figures: issue 13)
    web.sql("INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES ('p-li-b', '李四', 'ext-co', 'ub')")
    with clock.frozen_at(NOW):
        a = web.as_("mgr-a")
        booking = request(web.client()).json()
        r = a.post(f"/api/v1/bookings/{booking['id']}/approve")
        assert r.status_code == 200, r.text
        user = r.json()["user_id"]
    assert user != "p-li-b"
    assert web.sql("SELECT owner_unit_id, org_id FROM platform_users WHERE id = %s", (user,)) == [("ua", "ext-co")]
    assert {u for (u,) in web.sql("SELECT user_id FROM identity_map WHERE unit_id = 'ua' AND method = 'booking'")} \
        == {user}
