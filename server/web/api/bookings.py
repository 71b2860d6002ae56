"""Bookings (预约): anyone requests a slot of a published instrument from the catalog (no login;
the booking code returned is both the check-in identity and the key to the applicant's own view);
the unit's manager approves or declines under the instrument's rules, sees booked vs measured after
the slot, and confirms the drafted service record of an outside user. Operators reach every unit,
unit managers their own (another unit's booking answers 404), evaluators nothing (names, art. 17).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from server import clock
from server.bookings import queries, service
from server.store.conn import Conn
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, not_found
from server.web.i18n import t
from server.web.services.bookings import by_code, published

router = APIRouter(prefix="/api/v1", tags=["bookings"])

PUBLIC_REQUESTS_PER_HOUR = 20  # per client address: the form needs no login, so it needs a brake


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ex(example: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """An answer's example for the OpenAPI description (the shape of a real answer)."""
    return {status: {"content": {"application/json": {"example": example}}}}


RULES_EXAMPLE = service.Rules(service_terms="按校外价收费，开具发票", ip_terms="测试数据及成果归用户所有",
                              confidentiality="样品与数据保密").as_dict()
PUBLIC_EXAMPLE = {"id": 12, "instrument_id": "ua-xrd", "instrument": "X射线衍射仪", "code": "K7M2Q9XH4P",
                  "status": "approved", "start_at": "2026-06-18T01:00:00Z", "end_at": "2026-06-18T04:00:00Z",
                  "applicant_name": "李四", "applicant_org_name": "丙科技有限公司", "user_type": 130,
                  "content": "粉末衍射 5 个样品",
                  "terms": {k: RULES_EXAMPLE[k] for k in ("service_terms", "ip_terms", "confidentiality")},
                  "requested_at": "2026-06-15T02:30:00Z", "decided_at": "2026-06-15T03:00:00Z",
                  "decision_note": "", "outcome": "overrun", "measured_hours": "2.50", "draft_amount": "375.00",
                  "draft_price_item": "常规测试"}
BOOKING_EXAMPLE = PUBLIC_EXAMPLE | {
    "unit_id": "ua", "applicant_org_id": "ext-co", "applicant_email": "lisi@example.com", "applicant_phone": "",
    "user_id": "bk-12", "settled_at": "2026-06-18T05:00:00Z", "used_from": "2026-06-18T01:05:00Z",
    "used_to": "2026-06-18T04:20:00Z", "service_record_id": None}


class BookingIn(Model):
    instrument_id: str = Field(max_length=64, examples=["ua-xrd"])
    start_at: AwareDatetime = Field(examples=["2026-12-08T09:00:00+08:00"])
    end_at: AwareDatetime = Field(examples=["2026-12-08T12:00:00+08:00"])
    applicant_name: str = Field(min_length=1, max_length=100, examples=["张三"])
    applicant_org_id: str | None = Field(default=None, max_length=64, description="a registered organisation")
    applicant_org_name: str = Field(default="", max_length=200, description="if not registered")
    applicant_email: str = Field(default="", max_length=200)
    applicant_phone: str = Field(default="", max_length=50)
    content: str = Field(default="", max_length=2000, description="what is to be measured")


class Decision(Model):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"note": "请提前 10 分钟到"}]})

    note: str = Field(default="", max_length=1000)


class ConfirmIn(Model):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"service_hours": 2.5, "amount": 375}]})

    service_hours: Decimal | None = Field(default=None, ge=0, le=10_000)
    amount: Decimal | None = Field(default=None, ge=0, le=100_000_000)


class RulesIn(Model):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [RULES_EXAMPLE]})

    who: Literal["all", "internal", "none"] = "all"
    max_days_ahead: int = Field(default=30, ge=1, le=366)
    min_notice_hours: int = Field(default=2, ge=0, le=24 * 60)
    max_hours: int = Field(default=8, ge=1, le=24 * 14)
    internal_needs_approval: bool = True
    external_needs_approval: bool = True
    service_terms: str = Field(default="", max_length=4000)
    ip_terms: str = Field(default="", max_length=4000)
    confidentiality: str = Field(default="", max_length=4000)


@contextmanager
def refusals() -> Iterator[None]:
    """A broken booking rule as the API's error: 409 for a taken slot or a state, else 422."""
    try:
        yield
    except service.BookingRefused as exc:
        status = 409 if exc.key in ("booking.err.taken", "booking.err.state", "booking.err.confirmed") else 422
        fields = [{"field": exc.field, "in": "body", "message": t("en", exc.key, **exc.params)}] if exc.field else None
        err = ApiError(status, "booking_refused", exc.key, fields=fields)
        err.params = dict(exc.params)
        raise err from None


def public_view(b: dict[str, Any]) -> dict[str, Any]:
    """What the applicant (who holds the code) sees of their booking."""
    keys = ("id", "instrument_id", "instrument", "code", "status", "start_at", "end_at", "applicant_name",
            "applicant_org_name", "user_type", "content", "terms", "requested_at", "decided_at", "decision_note",
            "outcome", "measured_hours", "draft_amount", "draft_price_item")
    return {k: b[k] for k in keys}


def _own(conn: Conn, who: Principal, booking_id: int) -> dict[str, Any]:
    require_role(who, "operator", "unit_manager")
    b = queries.booking(conn, booking_id)
    if b is None or not who.can_write_unit(b["unit_id"]):
        raise not_found("what.booking", booking_id)
    return b


# -- public: the catalog's visitors ----------------------------------------------------------------


@router.get("/public/instruments/{instrument_id}/booking-rules", tags=["public catalog"], responses=_ex(RULES_EXAMPLE),
            summary="A published instrument's booking rules and service terms (no login)")
def public_rules(instrument_id: str, db: Db, settings: Settings) -> dict[str, Any]:
    with db.read() as conn:
        published(conn, instrument_id, settings)
        return service.rules_of(conn, instrument_id).as_dict()


@router.post("/public/bookings", status_code=201, tags=["public catalog"], responses=_ex(PUBLIC_EXAMPLE, 201),
             summary="Request a slot (no login); the answer's code is the check-in identity")
def request_booking(body: BookingIn, db: Db, settings: Settings, request: Request) -> dict[str, Any]:
    client = request.client.host if request.client else "unknown"
    actor = f"public:{client}"
    with db.read() as conn:
        inst = published(conn, body.instrument_id, settings)
        if queries.recent_requests_by(conn, actor) >= PUBLIC_REQUESTS_PER_HOUR:
            raise ApiError(429, "rate_limited", "booking.err.too_many", headers={"Retry-After": "3600"})
    with refusals(), db.write(actor) as conn:
        b = service.request(conn, inst, body.start_at, body.end_at, body.model_dump(exclude={"instrument_id"}))
    return public_view(b)


@router.get("/public/bookings/{code}", tags=["public catalog"],
            responses=_ex(PUBLIC_EXAMPLE),
            summary="The applicant's booking, by its code")
def public_booking(code: str, db: Db) -> dict[str, Any]:
    with db.read() as conn:
        return public_view(by_code(conn, code))


@router.post("/public/bookings/{code}/cancel", tags=["public catalog"],
             responses=_ex(PUBLIC_EXAMPLE),
             summary="The applicant cancels")
def public_cancel(code: str, db: Db, request: Request) -> dict[str, Any]:
    with db.read() as conn:
        b = by_code(conn, code)
    client = request.client.host if request.client else "unknown"
    with refusals(), db.write(f"public:{client}") as conn:
        service.decide(conn, b, "cancel", "")
        got = queries.booking(conn, b["id"])
    assert got is not None
    return public_view(got)


def _ics_response(body: str, name: str) -> Response:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "calendar"  # a header is latin-1: ids may be anything
    return Response(body, media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{safe}.ics"'})


@router.get("/public/instruments/{instrument_id}/bookings.ics", tags=["public catalog"],
            summary="An instrument's booked slots as iCalendar (no names)", response_class=Response)
def instrument_ics(instrument_id: str, db: Db, settings: Settings) -> Response:
    with db.read() as conn:
        inst = published(conn, instrument_id, settings)
        found = queries.list_bookings(conn, None, instrument_id=instrument_id, status="approved",
                                      since=clock.now() - timedelta(days=30), limit=1000)
    busy = t("zh", "booking.busy") + " / " + t("en", "booking.busy")
    events = [{**b, "summary": f"{inst['name']} · {busy}", "location": inst["location"]} for b in found]
    return _ics_response(service.ics(f"{inst['name']} {instrument_id}", events), instrument_id)


@router.get("/public/bookings/{code}/calendar.ics", tags=["public catalog"],
            summary="The applicant's booking as iCalendar", response_class=Response)
def booking_ics(code: str, db: Db) -> Response:
    with db.read() as conn:
        b = by_code(conn, code)
    events = [] if b["status"] in ("declined", "cancelled") else [
        {**b, "summary": f"{b['instrument']} · {t('zh', 'booking.code')} {b['code']}"}]
    return _ics_response(service.ics(b["instrument"], events), b["code"])


# -- managers ---------------------------------------------------------------------------------------


@router.get("/bookings", responses=_ex([BOOKING_EXAMPLE]), summary="Bookings, requests first (operator, unit manager)")
def list_bookings(who: Who, db: Db, unit_id: Annotated[str | None, Query(max_length=64)] = None,
                  instrument_id: Annotated[str | None, Query(max_length=64)] = None,
                  status: Literal["requested", "approved", "declined", "cancelled"] | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    require_role(who, "operator", "unit_manager")
    if who.role == "unit_manager" and unit_id not in (None, who.unit_id):
        raise ApiError(403, "other_unit", "err.other_unit", unit=who.unit_id)
    units = [who.unit_id or ""] if who.role == "unit_manager" else (None if unit_id is None else [unit_id])
    with db.read() as conn:
        return queries.list_bookings(conn, units, instrument_id=instrument_id, status=status, limit=limit)


@router.post("/bookings/{booking_id}/confirm", status_code=201,
             responses=_ex(BOOKING_EXAMPLE | {"service_record_id": 31}, 201),
             summary="Confirm the drafted service record (hours and fee may be corrected)")
def confirm(who: Who, db: Db, booking_id: int,
            body: Annotated[ConfirmIn | None, Body(examples=[{"service_hours": 2.5, "amount": 375}])] = None,
            ) -> dict[str, Any]:
    with db.read() as conn:
        b = _own(conn, who, booking_id)
    with refusals(), db.write(who.actor) as conn:
        rid = service.confirm_draft(conn, b, body.service_hours if body else None, body.amount if body else None)
        got = queries.booking(conn, booking_id)
    assert got is not None
    return {**got, "service_record_id": rid}


@router.post("/bookings/{booking_id}/{decision}",
             responses=_ex(BOOKING_EXAMPLE),
             summary="Approve, decline or cancel a booking")
def decide(who: Who, db: Db, booking_id: int, decision: Literal["approve", "decline", "cancel"],
           body: Annotated[Decision | None, Body(examples=[{"note": "请提前 10 分钟到"}])] = None) -> dict[str, Any]:
    with db.read() as conn:
        b = _own(conn, who, booking_id)
    with refusals(), db.write(who.actor) as conn:
        service.decide(conn, b, decision, body.note if body else "")
        got = queries.booking(conn, booking_id)
    assert got is not None
    return got


@router.post("/bookings/settle",
             responses=_ex({"settled": 1}),
             summary="Compare booked with measured for every finished slot now (operator)")
def settle_now(who: Who, db: Db) -> dict[str, int]:
    require_role(who, "operator")
    with db.write(who.actor) as conn:
        return {"settled": service.settle_due(conn)}


@router.get("/bookings/unbooked",
            responses=_ex([{"unit_id": "ua", "instrument_id": "ua-xrd", "instrument": "X射线衍射仪", "hours": "1.50"}]),
            summary="Running hours without a booking code, per instrument")
def unbooked(who: Who, db: Db, unit_id: Annotated[str | None, Query(max_length=64)] = None,
             days: Annotated[int, Query(ge=1, le=366)] = 7) -> list[dict[str, Any]]:
    require_role(who, "operator", "unit_manager")
    units = [who.unit_id or ""] if who.role == "unit_manager" else (None if unit_id is None else [unit_id])
    now = clock.now()
    with db.read() as conn:
        return queries.unbooked_running(conn, units, now - timedelta(days=days), now)


@router.get("/instruments/{instrument_id}/booking-rules",
            responses=_ex(RULES_EXAMPLE),
            summary="An instrument's booking rules")
def get_rules(who: Who, db: Db, instrument_id: str) -> dict[str, Any]:
    with db.read() as conn:
        scope.instrument(conn, who, instrument_id)
        return service.rules_of(conn, instrument_id).as_dict()


@router.put("/instruments/{instrument_id}/booking-rules",
            responses=_ex(RULES_EXAMPLE),
            summary="Set an instrument's booking rules")
def put_rules(who: Who, db: Db, instrument_id: str, body: RulesIn) -> dict[str, Any]:
    with db.read() as conn:
        inst = scope.instrument(conn, who, instrument_id, write=True)
    scope.writable_unit(who, inst["unit_id"])
    with db.write(who.actor) as conn:
        queries.upsert_rules(conn, instrument_id, body.model_dump(), clock.now())
        return service.rules_of(conn, instrument_id).as_dict()


@router.get("/people/{user_id}/bookings.ics", summary="A user's bookings as iCalendar (operator, unit manager)",
            response_class=Response)
def person_ics(who: Who, db: Db, user_id: str) -> Response:
    require_role(who, "operator", "unit_manager")
    units = [who.unit_id or ""] if who.role == "unit_manager" else None
    with db.read() as conn:
        found = [b for b in queries.list_bookings(conn, units, user_id=user_id, limit=1000)
                 if b["status"] in ("approved", "requested")]
    events = [{**b, "summary": f"{b['instrument']} · {b['applicant_name']}"} for b in found]
    return _ics_response(service.ics(user_id, events), user_id)
