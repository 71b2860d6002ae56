"""Login, sessions, tokens, CSRF, rate limit, and the role redirects of the pages."""

from __future__ import annotations

from collections.abc import Callable

from tests.web.conftest import PASSWORD, Web


def test_login_returns_account_and_sets_secure_attributes(make_web: Callable[..., Web]) -> None:
    web = make_web(cookie_secure=True)
    c = web.client()
    r = c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD})
    assert r.status_code == 200
    assert r.json()["account"] == {"id": 2, "login": "mgr-a", "display_name": "MGR-A", "role": "unit_manager",
                                   "unit_id": "ua", "via": "session"}
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
    # the stored session is a hash, never the cookie value
    token = r.cookies.get("jishi_session") or cookie.split("jishi_session=")[1].split(";")[0]
    assert not web.sql("SELECT 1 FROM web_sessions WHERE token_hash = %s", (token,))


def test_wrong_password_and_unknown_login_answer_alike(web: Web) -> None:
    c = web.client()
    for login in ("mgr-a", "nobody"):
        r = c.post("/api/v1/auth/login", json={"login": login, "password": "wrong"})
        assert r.status_code == 401
        assert r.json()["error"] == {"code": "bad_credentials", "message": "用户名或密码错误。"}
    r = c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": "wrong"}, headers={"Accept-Language": "en"})
    assert r.json()["error"]["message"] == "Wrong login name or password."


def test_login_is_rate_limited_per_login(web: Web) -> None:
    c = web.client()
    for _ in range(5):
        assert c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": "x"}).status_code == 401
    # past the free five, each failure doubles the wait (server/web/throttle.py): three more, 8 s
    web.sql("INSERT INTO login_failures (login, client) SELECT 'mgr-a', 'testclient' FROM generate_series(1, 3)")
    r = c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["error"]["code"] == "rate_limited"
    assert "秒后再试" in r.json()["error"]["message"]
    # other logins are not locked out by it
    assert c.post("/api/v1/auth/login", json={"login": "mgr-b", "password": PASSWORD}).status_code == 200
    # once the window has passed, the right password works again
    web.sql("UPDATE login_failures SET at = at - interval '1 hour'")
    assert c.post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD}).status_code == 200


def test_session_expiry_and_logout(web: Web) -> None:
    c = web.as_("mgr-a")
    assert c.get("/api/v1/auth/me").status_code == 200
    web.sql("UPDATE web_sessions SET expires_at = now() - interval '1 second'")
    r = c.get("/api/v1/auth/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "session_expired"
    c2 = web.as_("mgr-a")
    assert c2.post("/api/v1/auth/logout").status_code == 204
    assert c2.get("/api/v1/auth/me").status_code == 401


def test_unauthenticated_api_is_401_json(web: Web) -> None:
    r = web.client().get("/api/v1/instruments")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"


def test_changes_need_the_csrf_header_with_a_cookie(web: Web) -> None:
    c = web.as_("ops")
    body = {"id": "org-x", "name": "某公司"}
    r = c.post("/api/v1/organisations", json=body, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "csrf"
    assert c.post("/api/v1/organisations", json=body).status_code == 201


def test_bearer_tokens_for_scripts(web: Web) -> None:
    c = web.as_("mgr-a")
    r = c.post("/api/v1/tokens", json={"name": "nightly", "days": 1})
    assert r.status_code == 201
    token, token_id = r.json()["token"], r.json()["id"]
    script = web.client()
    h = {"Authorization": f"Bearer {token}"}
    assert script.get("/api/v1/auth/me", headers=h).json()["via"] == "token"
    # no CSRF needed for bearer tokens, and the role's scope applies
    assert script.post("/api/v1/organisations", json={"id": "org-y", "name": "Y"}, headers=h).status_code == 201
    assert script.get("/api/v1/units/ub", headers=h).status_code == 404
    assert c.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    r = script.get("/api/v1/auth/me", headers=h)
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_token"
    assert script.get("/api/v1/auth/me", headers={"Authorization": "Bearer jst_nonsense"}).status_code == 401


def test_disabled_account_and_password_change_end_sessions(web: Web) -> None:
    ops = web.as_("ops")
    mgr = web.as_("mgr-b")
    accounts = {a["login"]: a["id"] for a in ops.get("/api/v1/accounts").json()}
    r = ops.patch(f"/api/v1/accounts/{accounts['mgr-b']}", json={"password": "a-new-long-password"})
    assert r.status_code == 200
    assert mgr.get("/api/v1/auth/me").status_code == 401
    mgr = web.as_("mgr-b", "a-new-long-password")
    assert ops.patch(f"/api/v1/accounts/{accounts['mgr-b']}", json={"disabled": True}).status_code == 200
    assert mgr.get("/api/v1/auth/me").status_code == 401
    r = web.client().post("/api/v1/auth/login", json={"login": "mgr-b", "password": "a-new-long-password"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "account_disabled"


def test_account_rules_name_the_field(web: Web) -> None:
    ops = web.as_("ops")
    r = ops.post("/api/v1/accounts", json={"login": "m2", "role": "unit_manager", "password": "long-enough-pw"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "login"  # too short (min 3)
    r = ops.post("/api/v1/accounts", json={"login": "mgr-c", "role": "unit_manager", "password": "long-enough-pw"})
    assert r.status_code == 422
    assert [(f["field"], f["in"]) for f in r.json()["error"]["fields"]] == [("unit_id", "body")]
    r = ops.post("/api/v1/accounts", json={"login": "mgr-c", "role": "unit_manager", "unit_id": "ua",
                                           "password": "long-enough-pw"})
    assert r.status_code == 201
    assert web.as_("mgr-c", "long-enough-pw").get("/api/v1/auth/me").json()["unit_id"] == "ua"


def test_pages_redirect_to_login_and_then_by_role(web: Web) -> None:
    c = web.client()
    r = c.get("/units/ua/board", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/units/ua/board"
    assert "登录" in c.get("/login").text
    homes = {"mgr-a": "/units/ua/board", "eva": "/overview", "ops": "/registry"}
    for login, home in homes.items():
        c = web.client()
        r = c.post("/login", data={"login": login, "password": PASSWORD, "next": ""}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == home, login
        assert c.get("/", follow_redirects=False).headers["location"] == home
    # next= is honoured, but only for local paths
    c = web.client()
    r = c.post("/login", data={"login": "mgr-a", "password": PASSWORD, "next": "/instruments/ua-xrd"},
               follow_redirects=False)
    assert r.headers["location"] == "/instruments/ua-xrd"
    c = web.client()
    r = c.post("/login", data={"login": "mgr-a", "password": PASSWORD, "next": "//evil.example/x"},
               follow_redirects=False)
    assert r.headers["location"] == "/units/ua/board"


def test_login_page_shows_the_error(web: Web) -> None:
    r = web.client().post("/login", data={"login": "mgr-a", "password": "nope"})
    assert r.status_code == 401
    assert "用户名或密码错误" in r.text


def test_role_pages_refuse_other_roles(web: Web) -> None:
    mgr = web.as_("mgr-a")
    r = mgr.get("/overview")
    assert r.status_code == 403 and "管理单位" in r.text
    assert mgr.get("/audit").status_code == 403
    assert mgr.get("/units/ub/board").status_code == 404
