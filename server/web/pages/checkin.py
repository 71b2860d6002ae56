"""Phone check-in pages: `/c/<code>` (what the label's QR code opens; phone-first) and the printable
label of an instrument (`/instruments/<id>/label`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from server.web import scope
from server.web.auth import Person, Principal
from server.web.deps import Db, MaybeSomeone, MaybeWho, Settings
from server.web.errors import ApiError
from server.web.services import checkin
from server.web.templating import need, render

router = APIRouter(include_in_schema=False)


@router.get("/c/{code}", response_class=HTMLResponse)
def phone_page(code: str, request: Request, someone: MaybeSomeone, db: Db, settings: Settings) -> Response:
    """After the login (`/login?next=/c/<code>` returns here, from the university login too): the
    instrument, its live status, the person's bookings of today, and 上机登记 / 下机登记."""
    if someone is None:
        raise ApiError(401, "unauthenticated", "err.unauthenticated")  # pages: to /login?next=/c/<code>
    with db.read() as conn:
        inst = checkin.instrument_by_code(conn, code)
        agent, status = checkin.agent_status(conn, inst["id"], settings.live_stale_s)
        person = problem = None
        try:
            person = checkin.person_of(conn, someone)
        except ApiError as exc:  # nobody, or pending: said on the page, not as an error page
            problem = exc.key
        bookings = checkin.todays_bookings(conn, person["id"], inst["id"]) if person else []
        current = checkin.open_session(conn, inst["id"], person["id"]) if person else None
    staff = someone if isinstance(someone, Principal) else None
    return render(request, "checkin.html", staff, inst=inst, agent_state=status, person=person, problem=problem,
                  bookings=bookings, current=current, online=agent is not None, csrf=someone.csrf_token,
                  signed_person=someone if isinstance(someone, Person) else None,
                  providers=settings.login_providers)  # a staff account that is nobody: the university login


@router.get("/instruments/{instrument_id}/label", response_class=HTMLResponse)
def label_page(instrument_id: str, request: Request, who: MaybeWho, db: Db, settings: Settings) -> Response:
    """The printable label (A6/A7). A GET changes nothing: without a code, whoever may change the
    unit makes one with the page's button (the API's POST, audited)."""
    p = need(who)
    with db.read() as conn:
        inst = scope.instrument(conn, p, instrument_id)
        code = checkin.code_of(conn, instrument_id)
        unit = scope.unit(conn, p, inst["unit_id"])
    writable = p.can_write_unit(inst["unit_id"])
    url = checkin.label_url(settings.public_url or str(request.base_url), code) if code else None
    return render(request, "label.html", p, inst=inst, unit=unit, code=code, url=url, writable=writable,
                  qr=checkin.qr_svg_data_url(url) if url else None)
