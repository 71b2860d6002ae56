"""The real login providers for the university-login tests, and a person going through them.

- `oidc_idp` (session): node `oidc-provider` (sim/oidc) with client `jishi`; its redirect URIs are
  the test client's (`http://testserver/...`) and one of a port reserved for the browser test.
- `cas_idp` (session): Django + django-mama-cas (sim/cas_server) accepting services on 127.0.0.1
  and testserver.
`idp_login` / `cas_login` play the person's browser at the provider: its real login form (the
OIDC provider's own page, CAS's Django form with its CSRF token), then back to the app.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from sim.cas_server import CasServer
from sim.devstack import free_port
from sim.oidc_provider import OidcProvider, available

PROVIDER_PASSWORD = "idp-pass-123"
OIDC_USERS: dict[str, dict[str, Any]] = {
    "zhang": {"password": PROVIDER_PASSWORD, "claims": {"name": "张三", "email": "zhang@example.com"}},
    "newbie": {"password": PROVIDER_PASSWORD, "claims": {"name": "李四", "email": "lisi@example.com"}},
    "wu": {"password": PROVIDER_PASSWORD, "claims": {"name": "吴六", "email": "wu@example.com"}},
}
CAS_USERS: dict[str, dict[str, Any]] = {
    "zhang": {"password": PROVIDER_PASSWORD, "first_name": "张三", "email": "zhang@example.com"},
    "zhao": {"password": PROVIDER_PASSWORD, "first_name": "赵五", "email": "zhao@example.com"},
}
APP = "http://testserver"


@dataclass
class Idp:
    oidc: OidcProvider
    browser_port: int  # the browser test serves the app here (registered as a redirect URI)
    started_s: float

    def provider(self, **kw: Any) -> dict[str, Any]:
        return {"id": "uni", "kind": "oidc", "label_zh": "统一身份认证登录", "label_en": "University login",
                "issuer": self.oidc.issuer, "client_id": "jishi", "client_secret": "jishi-secret",
                "subject_claim": "preferred_username", **kw}


@pytest.fixture(scope="session")
def oidc_idp() -> Iterator[Idp]:
    why = available()
    if why:
        pytest.skip(why)
    port = free_port()
    t0 = time.monotonic()
    with OidcProvider("jishi", "jishi-secret",
                      [f"{APP}/login/sso/uni/callback", f"http://127.0.0.1:{port}/login/sso/uni/callback"],
                      OIDC_USERS) as p:
        yield Idp(p, port, time.monotonic() - t0)


@dataclass
class Cas:
    server: CasServer
    started_s: float

    def provider(self, **kw: Any) -> dict[str, Any]:
        return {"id": "cas", "kind": "cas", "cas_url": self.server.url, "cas_version": 3,
                "name_claim": "full_name", **kw}


@pytest.fixture(scope="session")
def cas_idp() -> Iterator[Cas]:
    t0 = time.monotonic()
    with CasServer(CAS_USERS, service_pattern=r"^http://(127\.0\.0\.1:\d+|testserver)/") as c:
        yield Cas(c, time.monotonic() - t0)


def _to_app(location: str) -> str:
    """The app-relative path of a redirect back to the test app."""
    parts = urlsplit(location)
    return parts.path + ("?" + parts.query if parts.query else "")


def idp_login(app: TestClient, start: str, login: str, password: str = PROVIDER_PASSWORD,
              before_callback: Callable[[], object] | None = None) -> tuple[httpx.Response, str]:
    """Start the app's OIDC login at `start`, fill the provider's login form, and return (the
    app's answer to the callback, the callback path it was given); `before_callback` runs when
    the provider has answered, before the browser reaches the app."""
    r = app.get(start, follow_redirects=False)
    assert r.status_code == 303, r.text
    with httpx.Client(follow_redirects=False, timeout=10) as idp:
        resp = idp.get(r.headers["location"])
        for _ in range(10):  # to the interaction page
            if resp.status_code not in (302, 303):
                break
            resp = idp.get(urljoin(str(resp.url), resp.headers["location"]))
        m = re.search(r'<form method="post" action="([^"]+)"', resp.text)
        assert m, resp.text[:500]
        resp = idp.post(urljoin(str(resp.url), m.group(1)), data={"login": login, "password": password})
        for _ in range(10):  # through the provider's resume to the app's callback
            location = resp.headers.get("location", "")
            if location.startswith(APP):
                break
            assert resp.status_code in (302, 303), resp.text[:500]
            resp = idp.get(urljoin(str(resp.url), location))
    callback = _to_app(location)
    if before_callback is not None:
        before_callback()
    return app.get(callback, follow_redirects=False), callback


def cas_login(app: TestClient, start: str, login: str, password: str = PROVIDER_PASSWORD) -> tuple[httpx.Response,
                                                                                                    str]:
    """The same through the CAS server's Django login form."""
    r = app.get(start, follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    with httpx.Client(follow_redirects=False, timeout=10) as idp:
        page = idp.get(url)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        resp = idp.post(url, data={"csrfmiddlewaretoken": token.group(1), "username": login, "password": password},
                        headers={"Referer": url})
        assert resp.status_code == 302, resp.text[:500]
    callback = _to_app(resp.headers["location"])
    return app.get(callback, follow_redirects=False), callback
