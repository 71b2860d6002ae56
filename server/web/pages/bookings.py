"""Booking pages: the public request form of a catalog instrument (`/catalog/{id}/book`), the
applicant's page by booking code (`/booking/{code}`), and the managers' list with approvals,
booked vs measured and drafted service records (`/bookings`), plus each instrument's rules form.
Everything goes through the bookings API (static/bookings.js, static/forms.js)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from server import clock
from server.bookings import queries, service
from server.store.times import TZ
from server.web import auth, scope
from server.web.db import rows
from server.web.deps import Db, MaybeWho, Settings
from server.web.errors import not_found
from server.web.i18n import request_lang, t
from server.web.pages import forms
from server.web.services.bookings import by_code, published
from server.web.templating import need, render

router = APIRouter(include_in_schema=False)

RULE_FIELDS = [
    forms.F("who", "谁可预约", "Who may book", "select", required=True,
            options=(("all", "所有用户 All"), ("internal", "仅校内 Internal only"), ("none", "暂停预约 Closed")),
            options_en=(("all", "Everyone"), ("internal", "Internal users only"), ("none", "Closed for bookings"))),
    forms.F("max_days_ahead", "最多提前（天）", "At most ahead (days)", "number", "int", required=True),
    forms.F("min_notice_hours", "至少提前（小时）", "Minimum notice (hours)", "number", "int", required=True),
    forms.F("max_hours", "单次最长（小时）", "Longest booking (hours)", "number", "int", required=True),
    forms.F("internal_needs_approval", "校内预约需审批", "Internal bookings need approval", "bool", "bool"),
    forms.F("external_needs_approval", "校外预约需审批", "External bookings need approval", "bool", "bool"),
    forms.F("service_terms", "服务内容与收费条款", "Service and fee terms", "textarea"),
    forms.F("ip_terms", "知识产权条款", "Intellectual property terms", "textarea"),
    forms.F("confidentiality", "保密条款", "Confidentiality terms", "textarea"),
]


@router.get("/catalog/{instrument_id}/book", response_class=HTMLResponse)
def book_page(request: Request, who: MaybeWho, db: Db, settings: Settings, instrument_id: str) -> Response:
    with db.read() as conn:
        inst = published(conn, instrument_id, settings)
        rules = service.rules_of(conn, instrument_id)
        # registered institutions only: an 'individual' organisation is a person (art. 17)
        orgs = rows(conn, "SELECT id, name FROM organisations WHERE kind <> 'individual' ORDER BY name")
    start = (clock.now() + timedelta(days=1)).astimezone(TZ).replace(hour=9, minute=0, second=0,
                                                                               microsecond=0)
    return render(request, "booking_request.html", who, item=inst, rules=rules, orgs=orgs,
                  start=start.strftime("%Y-%m-%dT%H:%M"), end=(start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))


@router.get("/booking/{code}", response_class=HTMLResponse)
def booking_page(request: Request, who: MaybeWho, db: Db, code: str) -> Response:
    with db.read() as conn:
        b = by_code(conn, code)
    return render(request, "booking.html", who, b=b)


@router.get("/bookings", response_class=HTMLResponse)
def bookings_page(request: Request, who: MaybeWho, db: Db) -> Response:
    p = need(who)
    auth.require_role(p, "operator", "unit_manager")
    units = [p.unit_id or ""] if p.role == "unit_manager" else None
    now = clock.now()
    with db.read() as conn:
        found = queries.list_bookings(conn, units, limit=300)
        unbooked = queries.unbooked_running(conn, units, now - timedelta(days=7), now)
        instruments = rows(conn, "SELECT id, name, unit_id FROM instruments WHERE %(u)s::text[] IS NULL"
                                 " OR unit_id = ANY(%(u)s) ORDER BY unit_id, id", {"u": units})
    return render(request, "bookings.html", p, items=found, unbooked=unbooked, instruments=instruments, now=now)


@router.get("/bookings/rules/{instrument_id}", response_class=HTMLResponse)
def rules_page(request: Request, who: MaybeWho, db: Db, instrument_id: str) -> Response:
    p = need(who)
    lang = request_lang(request)
    with db.read() as conn:
        inst = scope.instrument(conn, p, instrument_id, write=True)
        values = service.rules_of(conn, instrument_id).as_dict()
    if not p.can_write_unit(inst["unit_id"]):
        raise not_found("what.instrument", instrument_id)
    shown = forms.shown(RULE_FIELDS, lang, values, editing=False)
    return render(request, "form.html", p, title=f"{inst['name']} · {t(lang, 'booking.rules')}", fields=shown,
                  api=f"/api/v1/instruments/{instrument_id}/booking-rules", method="PUT", next="/bookings",
                  back="/bookings")
