"""University login against real providers (issue 19): node `oidc-provider` and a Django CAS
server (django-mama-cas), started once per session; never a mock of the protocol.

Seed (tests/web/conftest.py): units ua (org-a) and ub (org-b), person p-zhang of ext-co owned by ua.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.config import LoginProvider
from server.evaluation.sql import IDENTITY_CLASS
from server.web import sso
from server.web.params import safe_next
from tests.web.conftest import Web
from tests.web.ssohelp import Cas, Idp, cas_login, idp_login


def _person(c: object, web: Web) -> dict[str, object]:
    r = c.get("/api/v1/auth/person")  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def test_oidc_login_maps_to_the_person_and_keeps_next(make_web: Callable[..., Web], oidc_idp: Idp) -> None:
    web = make_web(login_providers=[oidc_idp.provider()])
    mgr = web.as_("mgr-a")
    r = mgr.put("/api/v1/units/ua/identities", json={"method": "login", "identifier": "uni:zhang",
                                                      "user_id": "p-zhang"})
    assert r.status_code == 200, r.text
    phone = web.client()
    assert "统一身份认证登录" in phone.get("/login?next=/c/AB12CD").text
    r, _ = idp_login(phone, "/login/sso/uni?next=/c/AB12CD", "zhang")
    assert r.status_code == 303 and r.headers["location"] == "/c/AB12CD"
    me = _person(phone, web)
    assert (me["user_id"], me["unit_id"], me["org_id"], me["status"]) == ("p-zhang", "ua", "ext-co", "confirmed")
    # a login identity is no agent's: it never reaches the evaluation's identity classes (bundles, reports)
    classes = web.sql(f"SELECT method FROM ({IDENTITY_CLASS}) c WHERE c.user_id = 'p-zhang'")
    assert classes == [("os",)]
    # a person is never a staff principal: staff routes do not see the person's cookie
    assert phone.get("/api/v1/auth/me").status_code == 401
    assert phone.get("/api/v1/registrations").status_code == 401
    assert web.sql("SELECT count(*) FROM audit_log WHERE table_name = 'person_sessions' AND actor LIKE"
                   " 'person:p-zhang%%'")[0][0] == 1
    # logging out needs the session's CSRF token
    assert phone.post("/me/logout", data={"csrf_token": "forged"}).status_code == 403
    r = phone.post("/me/logout", data={"csrf_token": str(me["csrf_token"])}, follow_redirects=False)
    assert r.status_code == 303 and phone.get("/api/v1/auth/person").status_code == 401


def test_unknown_login_registers_and_only_its_unit_manager_confirms(make_web: Callable[..., Web],
                                                                    oidc_idp: Idp) -> None:
    web = make_web(login_providers=[oidc_idp.provider()])
    phone = web.client()
    r, _ = idp_login(phone, "/login/sso/uni?next=/c/XY34", "newbie")
    assert r.status_code == 303 and r.headers["location"] == "/register"
    page = phone.get("/register")
    assert page.status_code == 200 and "李四" in page.text and "乙研究所" in page.text
    r = phone.post("/register", data={"name": "李四", "phone": "13800000000", "email": "", "org_id": "org-b"},
                   follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/c/XY34", r.text
    me = _person(phone, web)
    assert (me["status"], me["unit_id"], me["org_id"]) == ("pending", "ub", "org-b")
    assert "待确认" in phone.get("/me").text
    reg_id = web.sql("SELECT id FROM person_registrations WHERE subject = 'newbie'")[0][0]
    # the adversary: another unit's manager neither sees nor confirms it
    mgr_a = web.as_("mgr-a")
    assert mgr_a.get("/api/v1/registrations").json() == []
    assert mgr_a.post(f"/api/v1/registrations/{reg_id}/confirm").status_code == 404
    assert web.as_("eva").post(f"/api/v1/registrations/{reg_id}/confirm").status_code == 403
    mgr_b = web.as_("mgr-b")
    assert [x["id"] for x in mgr_b.get("/api/v1/registrations").json()] == [reg_id]
    assert "李四" in mgr_b.get("/registry/registrations").text
    r = mgr_b.post(f"/api/v1/registrations/{reg_id}/confirm", json={"note": "已核实"})
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text
    assert mgr_b.post(f"/api/v1/registrations/{reg_id}/decline").status_code == 409
    assert _person(phone, web)["status"] == "confirmed"
    # audited: the registration by the registrant, the confirmation by the manager
    actors = web.sql("SELECT action, actor FROM audit_log WHERE table_name = 'person_registrations' ORDER BY id")
    assert [a for a, _ in actors] == ["INSERT", "UPDATE"]
    assert actors[0][1].startswith("registrant (uni:newbie)") and actors[1][1] == "account:mgr-b"
    # next time the login maps straight to the person
    again = web.client()
    r, _ = idp_login(again, "/login/sso/uni", "newbie")
    assert r.status_code == 303 and r.headers["location"] == "/me"
    assert _person(again, web)["user_id"] == me["user_id"]


def test_new_outside_organisation_is_the_operators_to_confirm(make_web: Callable[..., Web], oidc_idp: Idp) -> None:
    web = make_web(login_providers=[oidc_idp.provider()])
    phone = web.client()
    idp_login(phone, "/login/sso/uni", "wu")
    r = phone.post("/register", data={"name": "吴六", "email": "wu@example.com", "org_name": "丁检测有限公司",
                                      "org_kind": "enterprise"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    me = _person(phone, web)
    assert me["status"] == "pending" and me["unit_id"] is None and me["org_name"] == "丁检测有限公司"
    reg_id = web.sql("SELECT id FROM person_registrations WHERE subject = 'wu'")[0][0]
    for mgr in ("mgr-a", "mgr-b"):
        assert web.as_(mgr).post(f"/api/v1/registrations/{reg_id}/decline").status_code == 404
    assert web.as_("ops").post(f"/api/v1/registrations/{reg_id}/decline").json()["status"] == "declined"
    assert _person(phone, web)["status"] == "declined"


def test_registration_form_errors_and_one_use(make_web: Callable[..., Web], oidc_idp: Idp) -> None:
    web = make_web(login_providers=[oidc_idp.provider()])
    phone = web.client()
    idp_login(phone, "/login/sso/uni", "wu")
    r = phone.post("/register", data={"name": "吴六", "org_id": "org-a", "org_name": "又一个"})
    assert r.status_code == 422 and "register-error" in r.text  # both an organisation and a new one; no contact
    assert web.sql("SELECT count(*) FROM person_registrations")[0][0] == 0
    r = phone.post("/register", data={"name": "吴六", "phone": "13900000000", "org_id": "org-a"},
                   follow_redirects=False)
    assert r.status_code == 303
    # the ticket is gone: a second registration from the same cookie is refused
    stale = web.client()
    stale.cookies.set("jishi_register", "forged-or-used", path="/register")
    r = stale.get("/register", follow_redirects=False)
    assert r.status_code in (303, 307) and r.headers["location"].startswith("/login"), r.text


def test_tampered_or_foreign_state_is_refused(make_web: Callable[..., Web], oidc_idp: Idp) -> None:
    web = make_web(login_providers=[oidc_idp.provider()])
    web.sql("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES ('ua', 'login', 'uni:zhang',"
            " 'p-zhang')")
    phone = web.client()
    # the provider's answer with a changed state: refused, no session
    r = phone.get("/login/sso/uni", follow_redirects=False)
    state = r.headers["location"].split("state=")[1].split("&")[0]
    r = phone.get(f"/login/sso/uni/callback?state={state}x&code=whatever", follow_redirects=False)
    assert r.status_code == 400 and "login-error" in r.text
    # a real callback replayed in another browser (no state cookie): refused
    ok, callback = idp_login(phone, "/login/sso/uni", "zhang")
    assert ok.status_code == 303
    other = web.client()
    assert other.get(callback, follow_redirects=False).status_code == 400
    assert other.get("/api/v1/auth/person").status_code == 401
    # and the same callback again in the first browser: the state was used once
    assert phone.get(callback, follow_redirects=False).status_code == 400
    # an ID token whose nonce is not the one this login sent: refused
    fresh = web.client()
    r, _ = idp_login(fresh, "/login/sso/uni", "zhang",
                     before_callback=lambda: web.sql("UPDATE login_flows SET nonce = 'another-login'"))
    assert r.status_code == 401 and fresh.get("/api/v1/auth/person").status_code == 401


@pytest.mark.parametrize("bad", ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "/\\/evil.example",
                                 "javascript:alert(1)", "/\tevil", "http:/evil.example", ""])
def test_next_accepts_only_this_sites_paths(bad: str) -> None:
    assert safe_next(bad) is None
    assert safe_next("/c/AB12CD?x=1") == "/c/AB12CD?x=1"


def test_open_redirect_through_next_is_refused(make_web: Callable[..., Web], oidc_idp: Idp) -> None:
    web = make_web(login_providers=[oidc_idp.provider()])
    web.sql("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES ('ua', 'login', 'uni:zhang',"
            " 'p-zhang')")
    phone = web.client()
    r, _ = idp_login(phone, "/login/sso/uni?next=//evil.example/steal", "zhang")
    assert r.status_code == 303 and r.headers["location"] == "/me"
    # the staff login page drops it too
    assert 'name="next" value=""' in phone.get("/login?next=/\\evil.example").text


def test_identity_of_another_unit_is_not_used_when_the_provider_names_its_unit(make_web: Callable[..., Web],
                                                                                oidc_idp: Idp) -> None:
    """A unit manager cannot hijack a university login: with the provider bound to ua, ub's
    mapping of the same identity is ignored; unbound, two people for one identity are refused."""
    web = make_web(login_providers=[oidc_idp.provider(unit_id="ua")])
    web.sql("INSERT INTO platform_users (id, name, org_id, owner_unit_id) VALUES ('p-b', '冒名', 'org-b', 'ub')")
    web.sql("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES ('ub', 'login', 'uni:zhang',"
            " 'p-b'), ('ua', 'login', 'uni:zhang', 'p-zhang')")
    phone = web.client()
    idp_login(phone, "/login/sso/uni", "zhang")
    assert _person(phone, web)["user_id"] == "p-zhang"
    loose = make_web(login_providers=[oidc_idp.provider()])
    phone = loose.client()
    r, _ = idp_login(phone, "/login/sso/uni", "zhang")
    assert r.status_code == 409 and phone.get("/api/v1/auth/person").status_code == 401


# -- CAS --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_cas_login_maps_to_the_person(make_web: Callable[..., Web], cas_idp: Cas, version: int) -> None:
    web = make_web(login_providers=[cas_idp.provider(cas_version=version)])
    web.sql("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES ('ua', 'login', 'cas:zhang',"
            " 'p-zhang')")
    phone = web.client()
    r, _ = cas_login(phone, "/login/sso/cas?next=/c/QQ", "zhang")
    assert r.status_code == 303 and r.headers["location"] == "/c/QQ", r.text
    assert _person(phone, web)["user_id"] == "p-zhang"


def test_cas3_attributes_fill_the_registration(make_web: Callable[..., Web], cas_idp: Cas) -> None:
    web = make_web(login_providers=[cas_idp.provider()])
    phone = web.client()
    r, _ = cas_login(phone, "/login/sso/cas", "zhao")
    assert r.headers["location"] == "/register"
    page = phone.get("/register").text
    assert "赵五" in page and "zhao@example.com" in page and "cas:zhao" in page


def test_cas_ticket_reuse_and_wrong_service_are_refused(cas_idp: Cas) -> None:
    """The client's validation against the real server: a ticket counts once, for its service."""
    import re

    import httpx

    p = LoginProvider.model_validate(cas_idp.provider())
    service = "http://testserver/login/sso/cas/callback?state=s1"

    def ticket() -> str:
        with httpx.Client(follow_redirects=False, timeout=10) as c:
            url = sso.cas_login_url(p, service)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', c.get(url).text)
            assert token
            r = c.post(url, data={"csrfmiddlewaretoken": token.group(1), "username": "zhao",
                                  "password": "idp-pass-123"}, headers={"Referer": url})
            return r.headers["location"].split("ticket=")[1]

    t = ticket()
    ident = sso.cas_validate(p, service, t)
    assert (ident.subject, ident.name, ident.claims["email"]) == ("zhao", "赵五", "zhao@example.com")
    with pytest.raises(sso.SsoError) as used:
        sso.cas_validate(p, service, t)
    assert used.value.reason == "cas_refused" and "INVALID_TICKET" in str(used.value)
    with pytest.raises(sso.SsoError) as wrong:
        sso.cas_validate(p, "http://testserver/other", ticket())
    assert wrong.value.reason == "cas_refused"
    p2 = LoginProvider.model_validate(cas_idp.provider(cas_version=2))
    assert sso.cas_validate(p2, service, ticket()).subject == "zhao"


def test_cas_answers_with_entities_are_refused() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b'<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess>'
            b"<cas:user>&b;</cas:user></cas:authenticationSuccess></cas:serviceResponse>")
    with pytest.raises(sso.SsoError) as e:
        sso.parse_cas_response(bomb)
    assert e.value.reason == "cas_bad_xml"
    with pytest.raises(sso.SsoError):
        sso.parse_cas_response(b"<html>login</html>")


def test_provider_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from server.config import WebSettings, load

    with pytest.raises(ValidationError, match="issuer and client_id"):
        LoginProvider(id="x", kind="oidc")
    with pytest.raises(ValidationError, match="cas_url"):
        LoginProvider(id="x", kind="cas")
    with pytest.raises(ValidationError, match="unique"):
        WebSettings(login_providers=[LoginProvider(id="a", kind="cas", cas_url="https://c/cas")] * 2)
    monkeypatch.setenv("JISHI_WEB__LOGIN_PROVIDERS", '[{"id": "imu", "kind": "cas", "cas_url": "https://cas/cas"}]')
    got = load().web.login_provider("imu")
    assert got is not None and got.cas_version == 3 and got.label_zh == "统一身份认证登录"


def test_only_confirmed_people_pass_the_check_in_gate() -> None:
    from dataclasses import replace

    from server.web.auth import Person, require_confirmed
    from server.web.errors import ApiError

    p = Person(user_id="reg-1", name="李四", org_id="org-b", org_name="乙研究所", unit_id="ub", status="pending",
               provider="uni", subject="newbie", csrf_token="x")
    for status in ("pending", "declined"):
        with pytest.raises(ApiError) as e:
            require_confirmed(replace(p, status=status))
        assert (e.value.status, e.value.code) == (403, "person_pending")
    require_confirmed(replace(p, status="confirmed"))


def test_an_unreachable_provider_is_a_clear_page(make_web: Callable[..., Web]) -> None:
    from sim.devstack import free_port

    web = make_web(login_providers=[{"id": "uni", "kind": "oidc", "issuer": f"http://127.0.0.1:{free_port()}",
                                     "client_id": "jishi", "timeout_s": 2}])
    r = web.client().get("/login/sso/uni?next=/c/AB", follow_redirects=False)
    assert r.status_code == 502 and "暂时无法连接统一身份认证服务" in r.text
    assert web.client().get("/login/sso/nope", follow_redirects=False).status_code == 404
