"""Issue 13 item 8, the web's smaller points: proxy headers only from named proxies, login
throttling that slows a guesser without letting a stranger lock the owner out, and logout only
with the CSRF token."""

from __future__ import annotations

from collections.abc import Callable

from server.web.throttle import backoff_s
from tests.web.conftest import PASSWORD, Web


def _fail(web: Web, login: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff else {}
    c = web.client()
    r = c.post("/api/v1/auth/login", json={"login": login, "password": "wrong"}, headers=headers)
    return int(r.status_code)


def test_forwarded_for_is_ignored_unless_the_peer_is_a_named_proxy(make_web: Callable[..., Web]) -> None:
    web = make_web(login_max_failures_client=1000)
    for i in range(5):  # the attacker rotates X-Forwarded-For to look like five clients
        assert _fail(web, "mgr-a", f"203.0.113.{i}") == 401
    assert web.sql("SELECT DISTINCT client FROM login_failures") == [("testclient",)]
    web.sql("DELETE FROM login_failures")

    behind = make_web(trusted_proxies="testclient, 10.0.0.0/8")  # the test client is the reverse proxy
    assert _fail(behind, "mgr-b", "198.51.100.7") == 401
    assert behind.sql("SELECT DISTINCT client FROM login_failures") == [("198.51.100.7",)]


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_s(n, 5, 900) for n in range(4, 10)] == [0, 1, 2, 4, 8, 16]
    assert backoff_s(40, 5, 900) == 900 and backoff_s(10_000, 5, 900) == 900


def _age_failures(web: Web, seconds: int) -> None:
    web.sql("UPDATE login_failures SET at = at - make_interval(secs => %s)", (seconds,))


def test_guessing_is_slowed_per_account_and_client(make_web: Callable[..., Web]) -> None:
    web = make_web(login_max_failures=3, login_max_failures_client=1000, login_max_failures_account=1000)
    for _ in range(3):
        assert _fail(web, "mgr-a") == 401
    web.sql("INSERT INTO login_failures (login, client) SELECT 'mgr-a', 'testclient' FROM generate_series(1, 5)")
    r = web.client().post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 2**5 - 2 <= int(r.headers["retry-after"]) <= 2**5  # 8 failures, 3 free: 2^5 s after the last
    _age_failures(web, 2**5)  # once that has passed, the right password works
    assert web.client().post("/api/v1/auth/login", json={"login": "mgr-a", "password": PASSWORD}).status_code == 200


def test_a_stranger_cannot_lock_the_owner_out(make_web: Callable[..., Web]) -> None:
    web = make_web(login_max_failures=3, login_max_failures_account=5, login_max_failures_client=1000)
    owner = web.client()  # the owner has logged in from this address before
    assert owner.post("/api/v1/auth/login", json={"login": "ops", "password": PASSWORD}).status_code == 200
    # a stranger, from many addresses, fails a hundred times on the operator's account
    web.sql("INSERT INTO login_failures (login, client) SELECT 'ops', '192.0.2.' || (i % 50)"
            " FROM generate_series(1, 100) i")
    assert owner.post("/api/v1/auth/login", json={"login": "ops", "password": PASSWORD}).status_code == 200
    # the stranger's own next guess, from a new address, is slowed by the account-wide count
    behind = make_web(trusted_proxies="testclient", login_max_failures=3, login_max_failures_account=5)
    r = behind.client().post("/api/v1/auth/login", json={"login": "ops", "password": "guess"},
                             headers={"X-Forwarded-For": "192.0.2.200"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 60


def test_logout_needs_the_csrf_token(web: Web) -> None:
    c = web.as_("mgr-a")
    token = c.headers.pop("X-CSRF-Token")
    assert c.post("/api/v1/auth/logout").status_code == 403  # a cross-site form cannot log anyone out
    assert c.get("/api/v1/auth/me").status_code == 200
    assert c.post("/logout", data={"csrf_token": "forged"}, follow_redirects=False).status_code == 403
    assert c.get("/api/v1/auth/me").status_code == 200
    assert c.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert c.get("/api/v1/auth/me").status_code == 401

    c2 = web.as_("mgr-b")
    assert c2.post("/api/v1/auth/logout").status_code == 204  # the header, as the pages' scripts send it
    assert c2.get("/api/v1/auth/me").status_code == 401
