"""The session cookie a login sets, the same for the API login and the login page."""

from __future__ import annotations

from fastapi import Response

from server.config import WebSettings
from server.web import auth


def set_session_cookie(response: Response, settings: WebSettings, result: auth.LoginResult) -> None:
    response.set_cookie(
        auth.SESSION_COOKIE, result.session_token, max_age=settings.session_ttl_s, httponly=True,
        secure=settings.cookie_secure, samesite="lax", path="/",
    )  # fmt: skip
