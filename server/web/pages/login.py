"""People's university login pages (issue 19): the redirect to CAS / OIDC and back, the
self-registration form of an unknown login, the person's own page, and the page where unit
managers and the operator confirm registrants. services/login.py does the work."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.config import WebSettings
from server.web import auth, sso
from server.web.deps import Db, MaybePerson, MaybeWho, Settings
from server.web.errors import ApiError
from server.web.i18n import request_lang, t
from server.web.params import safe_next
from server.web.services import login
from server.web.templating import need, render

router = APIRouter(include_in_schema=False)
PERSON_HOME = "/me"
_FLOW_PATH = "/login/sso/"


def _base(request: Request, settings: WebSettings) -> str:
    """The site's external URL: configured (behind a proxy), else the request's own."""
    return settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")


def _person_cookie(resp: Response, settings: WebSettings, token: str) -> None:
    resp.set_cookie(auth.PERSON_COOKIE, token, max_age=settings.session_ttl_s, httponly=True,
                    secure=settings.cookie_secure, samesite="lax", path="/")


def _failed(request: Request, settings: WebSettings, exc: ApiError, next_path: str = "") -> Response:
    msg = t(request_lang(request), exc.key, **exc.params)
    resp = render(request, "login.html", None, status=exc.status, next=next_path, error=msg,
                  providers=settings.login_providers)
    resp.delete_cookie(login.FLOW_COOKIE, path=_FLOW_PATH)
    return resp


@router.get("/login/sso/{provider_id}")
def sso_start(provider_id: str, request: Request, db: Db, settings: Settings, next: str | None = None) -> Response:
    p = login.provider_of(settings, provider_id)
    try:
        state, url = login.start(db, settings, p, _base(request, settings), safe_next(next) or PERSON_HOME)
    except sso.SsoError:
        return _failed(request, settings, ApiError(502, "sso_unreachable", "err.sso_unreachable"),
                       safe_next(next) or "")
    resp = RedirectResponse(url, status_code=303)
    resp.set_cookie(login.FLOW_COOKIE, state, max_age=int(login.FLOW_TTL.total_seconds()), httponly=True,
                    secure=settings.cookie_secure, samesite="lax", path=_FLOW_PATH)
    return resp


@router.get("/login/sso/{provider_id}/callback")
def sso_callback(provider_id: str, request: Request, db: Db, settings: Settings, state: str = "", code: str = "",
                 ticket: str = "", error: str = "") -> Response:
    p = login.provider_of(settings, provider_id)
    if error:  # the provider said no (the person cancelled, or the client is refused)
        return _failed(request, settings, ApiError(401, "sso_refused", "err.sso_refused"))
    try:
        out = login.finish(db, settings, p, _base(request, settings), state=state,
                           cookie=request.cookies.get(login.FLOW_COOKIE), code=code, ticket=ticket)
    except ApiError as exc:
        return _failed(request, settings, exc)
    if out.session is None:
        resp = RedirectResponse("/register", status_code=303)
        resp.set_cookie(login.REGISTER_COOKIE, out.register_token or "", max_age=settings.registration_ttl_s,
                        httponly=True, secure=settings.cookie_secure, samesite="lax", path="/register")
    else:
        resp = RedirectResponse(safe_next(out.next_path) or PERSON_HOME, status_code=303)
        _person_cookie(resp, settings, out.session[0])
    resp.delete_cookie(login.FLOW_COOKIE, path=_FLOW_PATH)
    return resp


@router.get("/register", response_class=HTMLResponse)
def register_page(request: Request, db: Db) -> Response:
    with db.read() as conn:
        tk = login.ticket(conn, request.cookies.get(login.REGISTER_COOKIE))
        orgs = login.organisations(conn)
    return render(request, "register.html", None, ticket=tk, orgs=orgs, kinds=login.ORG_KINDS, error=None,
                  values={"name": tk.name, "email": tk.email})


@router.post("/register", response_class=HTMLResponse)
def register_submit(request: Request, db: Db, settings: Settings,
                    name: Annotated[str, Form(max_length=100)] = "",
                    phone: Annotated[str, Form(max_length=32)] = "",
                    email: Annotated[str, Form(max_length=254)] = "",
                    org_id: Annotated[str, Form(max_length=100)] = "",
                    org_name: Annotated[str, Form(max_length=100)] = "",
                    org_kind: Annotated[str, Form(max_length=20)] = "other") -> Response:
    form = login.RegistrationIn(name, phone, email, org_id, org_name, org_kind)
    token = request.cookies.get(login.REGISTER_COOKIE)
    try:
        tk, _, (session, _) = login.register(db, settings, token, form)
    except ApiError as exc:
        if exc.status == 401:
            raise
        with db.read() as conn:
            tk = login.ticket(conn, token)
            orgs = login.organisations(conn)
        msg = t(request_lang(request), exc.key, **exc.params)
        return render(request, "register.html", None, status=exc.status, ticket=tk, orgs=orgs,
                      kinds=login.ORG_KINDS, error=msg, values=form.__dict__)
    resp = RedirectResponse(safe_next(tk.next_path) or PERSON_HOME, status_code=303)
    _person_cookie(resp, settings, session)
    resp.delete_cookie(login.REGISTER_COOKIE, path="/register")
    return resp


@router.get("/me", response_class=HTMLResponse)
def person_page(request: Request, person: MaybePerson) -> Response:
    if person is None:
        return RedirectResponse("/login?next=/me", status_code=303)
    return render(request, "me.html", None, person=person)


@router.post("/me/logout")
async def person_logout(request: Request, db: Db) -> Response:
    form = await request.form()
    sent = form.get("csrf_token")
    login.close_session(db, request.cookies.get(auth.PERSON_COOKIE), sent if isinstance(sent, str) else "")
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(auth.PERSON_COOKIE, path="/")
    return resp


@router.get("/registry/registrations", response_class=HTMLResponse)
def registrations_page(request: Request, who: MaybeWho, db: Db, status: str = "pending") -> Response:
    p = need(who)
    with db.read() as conn:
        regs = login.registrations(conn, p, status if status in ("pending", "confirmed", "declined") else None)
    return render(request, "registrations.html", p, regs=regs, shown=status)
