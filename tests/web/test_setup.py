"""First run (issue 18): organisation and unit pages, the enrolment page's token with its one command
and QR code, and the checklist of what is missing before the first evaluation. Operator only: a unit
manager (the graded unit) gets none of these."""

from __future__ import annotations

import base64
import re

from tests.web.conftest import Web


def _count(html: str, key: str) -> int:
    m = re.search(rf'id="gap-{key}".*?data-count="(\d+)"', html, re.S)
    assert m is not None, key
    return int(m.group(1))


def test_unit_and_organisation_pages_post_to_the_api(web: Web) -> None:
    ops = web.as_("ops")
    r = ops.get("/registry/organisations/new")
    assert r.status_code == 200 and 'data-api="/api/v1/organisations"' in r.text and "科研院所" in r.text
    r = ops.get("/registry/units/new")
    assert r.status_code == 200 and 'data-api="/api/v1/units"' in r.text and "甲大学（org-a）" in r.text
    assert ops.post("/api/v1/organisations", json={"id": "org-c", "name": "丙学院", "kind": "university"}
                    ).status_code == 201
    assert ops.post("/api/v1/units", json={"id": "uc", "org_id": "org-c", "name": "丙学院"}).status_code == 201
    assert "丙学院" in ops.get("/registry/units").text and "丙学院" in ops.get("/registry/organisations").text
    r = ops.get("/registry/units/uc/edit")
    assert r.status_code == 200 and 'data-method="PATCH"' in r.text
    assert ops.get("/registry/organisations/org-c/edit?lang=en").text.count("University") >= 1


def test_only_the_operator_sets_up(web: Web) -> None:
    mgr = web.as_("mgr-a")
    for path in ("/setup", "/registry/units", "/registry/units/new", "/registry/organisations/new",
                 "/registry/accounts/new", "/registry/units/ua/edit", "/instruments/ua-nmr/enrol"):
        assert mgr.get(path).status_code == 403, path
    r = mgr.post("/api/v1/instruments/ua-nmr/enrolment-tokens", json={})
    assert r.status_code == 403
    assert web.sql("SELECT count(*) FROM enrolment_tokens") == [(0,)]
    assert 'id="enrol-link"' not in mgr.get("/instruments/ua-nmr").text


def test_enrolment_page_and_token_with_command_and_qr(web: Web) -> None:
    ops = web.as_("ops")
    assert 'href="/instruments/ua-nmr/enrol"' in ops.get("/instruments/ua-nmr").text
    page = ops.get("/instruments/ua-nmr/enrol")
    assert page.status_code == 200 and 'data-instrument="ua-nmr"' in page.text and "/static/enrol.js" in page.text
    r = ops.post("/api/v1/instruments/ua-nmr/enrolment-tokens", json={})
    assert r.status_code == 201, r.text
    j = r.json()
    assert j["command"].startswith("jishi-agent keygen --config agent.toml && jishi-agent enroll")
    assert j["token"] in j["command"] and j["enrol_url"] in j["command"]
    head, _, b64 = j["qr"].partition(",")
    assert head == "data:image/svg+xml;base64"
    svg = base64.b64decode(b64).decode()
    assert svg.startswith("<svg") and "<path" in svg
    # the token is listed afterwards, never shown again
    again = ops.get("/instruments/ua-nmr/enrol").text
    assert "ua-nmr-a1" in again and j["token"] not in again


def test_checklist_shows_what_is_missing(web: Web) -> None:
    ops = web.as_("ops")
    html = ops.get("/setup").text
    # seeded agents have no keys: no instrument is enrolled; nothing has a price
    assert _count(html, "instruments_without_agent") == 3
    assert _count(html, "instruments_without_price") == 3
    assert _count(html, "units_without_manager") == 0
    assert _count(html, "people_without_organisation") == 0
    assert 'href="/instruments/ua-nmr/enrol"' in html
    ops.post("/api/v1/organisations", json={"id": "org-x", "name": "某单位", "kind": "other"})
    ops.post("/api/v1/units", json={"id": "ux", "org_id": "org-x", "name": "某单位"})
    web.sql("INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES ('p-li', '李四', 'org-x', 'ua')")
    r = ops.post("/api/v1/instruments/ua-nmr/prices", json={"item": "测试", "basis": "per_hour",
                                                             "internal_price": "80", "valid_from": "2000-01-01"})
    assert r.status_code == 201, r.text
    html = ops.get("/setup").text
    assert _count(html, "units_without_manager") == 1 and "ux" in html
    assert _count(html, "people_without_organisation") == 1 and "李四" in html
    assert _count(html, "instruments_without_price") == 2
    en = ops.get("/setup?lang=en").text
    assert "Units without a manager" in en and "没有管理员的单位" not in en


def test_the_account_form_posts_to_the_accounts_api(web: Web) -> None:
    ops = web.as_("ops")
    html = ops.get("/registry/accounts/new?unit=ub").text
    assert 'data-api="/api/v1/accounts"' in html and 'type="password"' in html
    assert '<option value="ub" selected>' in html
    web.sql("UPDATE web_accounts SET disabled_at = now() WHERE login = 'mgr-b'")
    setup = ops.get("/setup").text
    assert _count(setup, "units_without_manager") == 1  # a disabled manager manages nothing
    assert 'href="/registry/accounts/new?unit=ub"' in setup
    r = ops.post("/api/v1/accounts", json={"login": "mgr-b2", "role": "unit_manager", "unit_id": "ub",
                                           "password": "another-long-password"})
    assert r.status_code == 201, r.text
    assert _count(ops.get("/setup").text, "units_without_manager") == 0
