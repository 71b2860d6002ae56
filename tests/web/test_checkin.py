"""Phone check-in by QR code (issue 19) at the API: label codes and their scope, the login's return
to the phone page, check-in only as oneself, pending people refused, and the manual (unverified)
session kept when no agent is online, counted only after an evaluator accepts it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from protocols.signing import generate, public_to_b64, save_private
from tests.web.conftest import REAL_NAME, Web
from tests.web.ssohelp import Cas, Idp, cas_login, idp_login


def link(web: Web, login: str, person: str, org: str = "org-b", pending: bool = False) -> None:
    """The staff account `login` names the person; `pending`: a self-registration not yet confirmed
    (the one notion of pending, person_registrations.status of migration 033)."""
    web.sql("INSERT INTO platform_users (id, name, org_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (person, "李四", org))
    if pending:
        web.sql("INSERT INTO person_registrations (provider, subject, user_id, phone, created_at)"
                " VALUES ('uni', %s, %s, '13800000000', now())", (person, person))
    web.sql("UPDATE web_accounts SET person_id = %s WHERE login = %s", (person, login))


def label_code(web: Web, login: str = "mgr-a", instrument: str = "ua-xrd") -> str:
    """The label's code as the label page shows it; made with the page's button (the API's POST)
    when there is none yet: the page's GET writes nothing."""
    r = web.as_(login).get(f"/instruments/{instrument}/label")
    assert r.status_code == 200, r.text
    if 'id="label-none"' in r.text:
        assert "生成登记码" in r.text
        assert web.as_(login).post(f"/api/v1/instruments/{instrument}/checkin-code").status_code == 200
        r = web.as_(login).get(f"/instruments/{instrument}/label")
    m = re.search(r'id="label-code">([2-9A-HJ-NP-Z]{8})<', r.text)
    assert m is not None and "扫码登记使用" in r.text and "/c/" + m.group(1) in r.text
    return m.group(1)


def test_label_code_made_once_and_regenerated_only_by_its_unit(web: Web) -> None:
    code = label_code(web)
    assert label_code(web, "ops") == code  # the same label for everyone
    mgr_b, eva = web.as_("mgr-b"), web.as_("eva")
    assert mgr_b.post("/api/v1/instruments/ua-xrd/checkin-code").status_code == 404  # another unit's
    assert eva.post("/api/v1/instruments/ua-xrd/checkin-code").status_code == 403
    r = web.as_("mgr-a").post("/api/v1/instruments/ua-xrd/checkin-code")
    assert r.status_code == 200 and r.json()["code"] != code and r.json()["url"].endswith("/c/" + r.json()["code"])
    assert web.sql("SELECT code FROM checkin_codes WHERE instrument_id = 'ua-xrd'") == [(r.json()["code"],)]
    assert web.sql("SELECT count(*) FROM audit_log WHERE table_name = 'checkin_codes'")[0][0] == 2
    # the old label is void
    link(web, "mgr-b", "p-li")
    assert web.as_("mgr-b").post(f"/api/v1/checkin/{code}", json={"action": "checkin"}).status_code == 404


def test_phone_page_needs_login_and_returns_after_it(web: Web) -> None:
    code = label_code(web)
    c = web.client()
    r = c.get(f"/c/{code}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/c/{code}"
    r = c.post("/login", data={"login": "mgr-b", "password": "correct-horse-battery", "next": f"/c/{code}"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/c/{code}"
    page = c.get(f"/c/{code}")
    assert page.status_code == 200 and "X射线衍射仪" in page.text
    assert "未关联平台用户" in page.text  # mgr-b is nobody yet: no buttons
    link(web, "mgr-b", "p-li")
    page = c.get(f"/c/{code}")
    assert 'id="checkin-in"' in page.text and "李四" in page.text and "乙研究所" in page.text
    assert 'id="checkin-offline"' in page.text and 'id="checkin-offline" hidden' not in page.text  # no agent
    assert "离线" in page.text
    r = c.get(f"/api/v1/checkin/{code}/status")
    assert r.json() == {"instrument_id": "ua-xrd", "status": "unknown", "agent_online": False}  # never heard


def test_only_as_oneself_and_never_pending(web: Web) -> None:
    code = label_code(web)
    ops = web.as_("ops")  # an account that is no person
    r = ops.post(f"/api/v1/checkin/{code}", json={"action": "checkin"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "no_person"
    link(web, "mgr-b", "p-pending", pending=True)
    r = web.as_("mgr-b").post(f"/api/v1/checkin/{code}", json={"action": "checkin"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "person_pending"
    # a competitor's manager cannot name someone else: the body has no person, extra members are refused
    web.sql("UPDATE person_registrations SET status = 'confirmed', decided_at = now(), decided_by = 'account:ops'"
            " WHERE user_id = 'p-pending'")
    mgr_b = web.as_("mgr-b")
    r = mgr_b.post(f"/api/v1/checkin/{code}", json={"action": "checkin", "person_id": "p-zhang"})
    assert r.status_code == 422
    assert mgr_b.post(f"/api/v1/checkin/{code}", json={"action": "checkin"}).status_code == 201
    assert web.sql("SELECT person_id FROM checkin_requests") == [("p-pending",)]
    # nor end another person's session
    link(web, "mgr-a", "p-a", org="org-a")
    r = web.as_("mgr-a").post(f"/api/v1/checkin/{code}", json={"action": "checkout"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_checked_in"
    # nor read another person's request
    [(rid,)] = web.sql("SELECT id FROM checkin_requests")
    assert web.as_("mgr-a").get(f"/api/v1/checkin/requests/{rid}").status_code == 404


def test_agent_offline_keeps_an_unverified_manual_session(web: Web) -> None:
    code = label_code(web)
    link(web, "mgr-b", "p-li")
    phone = web.as_("mgr-b")
    r = phone.post(f"/api/v1/checkin/{code}", json={"action": "checkin"})
    assert r.status_code == 201 and r.json()["kind"] == "manual" and r.json()["status"] == "manual"
    rid = r.json()["id"]
    eva = web.as_("eva")
    assert phone.get(f"/api/v1/checkin/requests/{rid}").json()["status"] == "manual"
    assert phone.post(f"/api/v1/checkin/{code}", json={"action": "checkin"}).status_code == 409  # already in
    assert "未核实/手动" in phone.get(f"/c/{code}").text
    # open: nobody decides yet
    assert eva.post(f"/api/v1/checkin/requests/{rid}/decision",
                               json={"decision": "accepted"}).status_code == 409
    assert phone.post(f"/api/v1/checkin/{code}", json={"action": "checkout"}).status_code == 201
    page = eva.get("/instruments/ua-xrd")
    assert 'id="manual-sessions"' in page.text and f'data-request="{rid}"' in page.text
    assert "李四" not in page.text  # evaluators see no names (art. 17)
    assert web.sql("SELECT count(*) FROM manual_usage") == [(0,)]  # not counted before a decision
    assert web.as_("mgr-a").post(f"/api/v1/checkin/requests/{rid}/decision",
                                 json={"decision": "accepted"}).status_code == 403
    r = eva.post(f"/api/v1/checkin/requests/{rid}/decision", json={"decision": "accepted"})
    assert r.status_code == 200 and r.json()["manual_usage_id"] is not None
    assert web.sql("SELECT user_type, entered_by FROM manual_usage") == [(130, "account:eva")]
    assert eva.post(f"/api/v1/checkin/requests/{rid}/decision",
                               json={"decision": "rejected"}).status_code == 409
    assert web.sql("SELECT count(*) FROM audit_log WHERE table_name = 'checkin_requests'")[0][0] >= 3


def test_enrolment_gives_the_agent_the_servers_command_key(make_web: Callable[..., Web], tmp_path: Path) -> None:
    key = generate()
    save_private(key, tmp_path / "command.key")
    web = make_web(command_key_file=str(tmp_path / "command.key"))
    issued = web.as_("ops").post("/api/v1/instruments/ua-nmr/enrolment-tokens", json={}).json()
    assert f'server_key = "{public_to_b64(key)}"' in issued["config"]
    agent_key = generate()
    r = web.client().post("/api/v1/enrol", json={"agent": issued["agent_id"], "public_key": public_to_b64(agent_key)},
                          headers={"Authorization": f"Bearer {issued['token']}"})
    assert r.status_code == 201 and r.json()["server_key"] == public_to_b64(key)


def test_a_booking_of_today_is_offered_and_checked_in_with_its_code(web: Web) -> None:
    code = label_code(web)
    link(web, "mgr-b", "p-li")
    link(web, "mgr-a", "p-a", org="org-a")
    for person, booking in (("p-li", "LIBOOK01"), ("p-a", "ABOOK001")):
        web.sql("INSERT INTO bookings (unit_id, instrument_id, code, status, start_at, end_at, applicant_name,"
                " user_type, user_id, requested_at) VALUES ('ua', 'ua-xrd', %s, 'approved', now() - interval '1 hour',"
                " now() + interval '1 hour', '李四', 130, %s, now())", (booking, person))
    [(mine,)] = web.sql("SELECT id FROM bookings WHERE code = 'LIBOOK01'")
    [(theirs,)] = web.sql("SELECT id FROM bookings WHERE code = 'ABOOK001'")
    phone = web.as_("mgr-b")
    page = phone.get(f"/c/{code}").text
    assert "LIBOOK01" in page and "ABOOK001" not in page  # only the person's own bookings
    assert phone.post(f"/api/v1/checkin/{code}", json={"action": "checkin", "booking_id": theirs}).status_code == 404
    assert phone.post(f"/api/v1/checkin/{code}", json={"action": "checkin", "booking_id": mine}).status_code == 201
    assert web.sql("SELECT method, identifier, booking_id FROM checkin_requests") == [("booking", "LIBOOK01", mine)]


def _csrf(page: str) -> str:
    m = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert m is not None, page[:300]
    return m.group(1)


def test_university_login_checks_in_by_phone_and_pending_is_refused(make_web: Callable[..., Web],
                                                                     oidc_idp: Idp, cas_idp: Cas) -> None:
    web = make_web(login_providers=[oidc_idp.provider(), cas_idp.provider()])
    code = label_code(web)  # ua-xrd of unit ua (org-a)
    assert web.as_("mgr-a").put("/api/v1/units/ua/identities", json={
        "method": "login", "identifier": "uni:zhang", "user_id": "p-zhang"}).status_code == 200
    phone = web.client()
    r = phone.get(f"/c/{code}", follow_redirects=False)  # the label's URL, anonymous: the login first
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/c/{code}"
    assert f'href="/login/sso/uni?next=/c/{code}"' in phone.get(r.headers["location"]).text
    r, _ = idp_login(phone, f"/login/sso/uni?next=/c/{code}", "zhang")  # the real provider's form
    assert r.status_code == 303 and r.headers["location"] == f"/c/{code}"
    page = phone.get(f"/c/{code}").text
    assert 'id="checkin-in"' in page and REAL_NAME in page and "丙科技有限公司" in page
    assert 'id="phone-logout"' in page and 'action="/me/logout"' in page
    csrf = _csrf(page)  # the person session's token
    assert phone.post(f"/api/v1/checkin/{code}", json={"action": "checkin"}).status_code == 403  # no CSRF header
    r = phone.post(f"/api/v1/checkin/{code}", json={"action": "checkin"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201 and r.json()["kind"] == "manual", r.text  # no agent online here
    rid = r.json()["id"]
    assert web.sql("SELECT person_id, account_id, login FROM checkin_requests") == [("p-zhang", None, "uni:zhang")]
    assert phone.get(f"/api/v1/checkin/requests/{rid}").json()["status"] == "manual"
    assert phone.get(f"/api/v1/checkin/{code}/status").json()["agent_online"] is False
    # the person is no staff principal, and a staff account that is not this person reads nothing of it
    assert phone.post("/api/v1/instruments/ua-xrd/checkin-code", headers={"X-CSRF-Token": csrf}).status_code == 401
    assert web.as_("mgr-a").get(f"/api/v1/checkin/requests/{rid}").status_code == 404
    r = phone.post(f"/api/v1/checkin/{code}", json={"action": "checkout"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    # every page's header names the person (and logs out) instead of offering the login
    catalog = phone.get("/catalog").text
    assert 'id="nav-person"' in catalog and REAL_NAME in catalog and 'href="/login"' not in catalog

    # a staff account that is nobody is offered the university login back to this label
    assert f'href="/login/sso/uni?next=/c/{code}"' in web.as_("mgr-a").get(f"/c/{code}").text

    # a self-registered person is refused until confirmed, and when declined
    newbie = web.client()
    r, _ = idp_login(newbie, f"/login/sso/uni?next=/c/{code}", "newbie")
    assert r.headers["location"] == "/register"
    r = newbie.post("/register", data={"name": "李四", "phone": "13800000000", "email": "", "org_id": "org-b"},
                    follow_redirects=False)
    assert r.headers["location"] == f"/c/{code}"
    page = newbie.get(f"/c/{code}").text
    assert 'id="checkin-problem"' in page and 'id="checkin-in"' not in page and "尚未通过确认" in page
    assert "李四 · 待确认" in newbie.get("/me").text  # the header says so too
    r = newbie.post(f"/api/v1/checkin/{code}", json={"action": "checkin"}, headers={"X-CSRF-Token": _csrf(page)})
    assert r.status_code == 403 and r.json()["error"]["code"] == "person_pending"
    [(reg,)] = web.sql("SELECT id FROM person_registrations WHERE subject = 'newbie'")
    assert web.as_("mgr-b").post(f"/api/v1/registrations/{reg}/decline").status_code == 200
    r = newbie.post(f"/api/v1/checkin/{code}", json={"action": "checkin"}, headers={"X-CSRF-Token": _csrf(page)})
    assert r.status_code == 403 and r.json()["error"]["code"] == "person_pending"
    assert web.sql("SELECT count(*) FROM checkin_requests WHERE login = 'uni:newbie'") == [(0,)]

    # CAS (统一身份认证 of most universities) comes back to the label's page the same way
    web.sql("INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES ('p-zhao', '赵五', 'org-b', 'ub')")
    assert web.as_("mgr-b").put("/api/v1/units/ub/identities", json={
        "method": "login", "identifier": "cas:zhao", "user_id": "p-zhao"}).status_code == 200
    zhao = web.client()
    r, _ = cas_login(zhao, f"/login/sso/cas?next=/c/{code}", "zhao")
    assert r.status_code == 303 and r.headers["location"] == f"/c/{code}"
    page = zhao.get(f"/c/{code}").text
    assert "登记人：赵五（乙研究所）" in page and 'id="checkin-in"' in page
