"""Rendering pages: the Jinja2 templates (server/web/templates) with their filters, the page frame
(language switch, home link) and the error page. Pages and the error handlers use it; it imports no
page and no route.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from server.store.times import TZ
from server.web import auth, timing, vendor
from server.web.auth import Person, Principal
from server.web.errors import ApiError
from server.web.i18n import request_lang, t, t_or

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    return f"{float(v):,.{digits}f}"


def local(v: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            return str(v)
    if isinstance(v, datetime):
        return str(v.astimezone(TZ).strftime(fmt))
    return "" if v is None else str(v)


templates.env.filters["pct"] = pct
templates.env.filters["num"] = num
templates.env.filters["local"] = local
templates.env.globals["plotly_js"] = vendor.plotly_url()
templates.env.globals["static"] = vendor.static_url


def render(request: Request, name: str, who: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    lang = request_lang(request)

    def tr(key: str, **params: object) -> str:
        return t(lang, key, **params)

    def tr_or(key: str, fallback: str) -> str:  # a stored code, translated where the texts know it
        return t_or(lang, key, fallback)

    other = "en" if lang == "zh" else "zh"
    query = dict(request.query_params)
    query["lang"] = other
    switch = request.url.path + "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
    with timing.phase("render"):
        resp = templates.TemplateResponse(request, name, {
            "_": tr, "_or": tr_or, "lang": lang, "who": who, "lang_switch": switch, "home": home_of(who),
            "signed_person": None if who is not None or "signed_person" in ctx else signed_person(request), **ctx,
        }, status_code=status)  # fmt: skip
    if request.query_params.get("lang") in ("zh", "en"):
        resp.set_cookie("lang", lang, max_age=365 * 86400, samesite="lax", path="/")
    return resp


def fragment(lang: str, name: str, **ctx: Any) -> Markup:
    """A template rendered on its own (no request, no principal): a part of a page that is the same
    for everyone who may see it, which a page can then keep and insert (`{{ html }}`) as it is."""
    def tr(key: str, **params: object) -> str:
        return t(lang, key, **params)

    with timing.phase("render"):
        return Markup(templates.env.get_template(name).render(_=tr, lang=lang, **ctx))


def signed_person(request: Request) -> Person | None:
    """The person logged in through the university login, for the page header (name, logout) of a
    page rendered without a staff principal; None without the person cookie or when it cannot be read."""
    if not request.cookies.get(auth.PERSON_COOKIE):
        return None
    try:
        return auth.person_optional(request)
    except (ApiError, psycopg.Error):  # a form POST without the header, or a page about the database itself
        return None


def render_error(request: Request, status: int, message: str) -> Response:
    """An error page (the error handlers call it through `app.state.render_error`)."""
    return render(request, "error.html", None, status=status, status_code=status, message=message)


def home_of(who: Principal | None) -> str:
    if who is None:
        return "/catalog"
    if who.role == "unit_manager":
        return f"/units/{who.unit_id}/board"
    if who.role == "evaluator":
        return "/overview"
    return "/registry"


def need(who: Principal | None) -> Principal:
    """The person logged in; anyone else is sent to the login page (the 401 handler redirects)."""
    if who is None:
        raise ApiError(401, "unauthenticated", "err.unauthenticated")
    return who
