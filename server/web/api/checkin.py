"""Phone check-in by QR code (issue 19): the label code, the phone's check-in / check-out, its
result, and the evaluators' decision on unverified manual sessions (server/web/services/checkin.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from server.web import scope
from server.web.deps import Db, Settings, Someone, Who
from server.web.services import checkin

router = APIRouter(prefix="/api/v1", tags=["checkin"])
RequestId = Annotated[int, Path(ge=1, le=2**62)]
Code = Annotated[str, Path(max_length=32)]


class CheckinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["checkin", "checkout"] = Field(examples=["checkin"])
    booking_id: int | None = Field(default=None, ge=1, le=2**62,
                                   description="one of the person's approved bookings of today")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["accepted", "rejected"] = Field(examples=["accepted"])


def label(settings: Any, request: Request, code: str) -> dict[str, Any]:
    url = checkin.label_url(settings.public_url or str(request.base_url), code)
    return {"code": code, "url": url, "qr": checkin.qr_svg_data_url(url)}


@router.post("/instruments/{instrument_id}/checkin-code", summary="Give the instrument a new label code "
             "(its unit's manager or the operator; the printed label stops working)")
def regenerate_code(instrument_id: str, request: Request, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    with db.write(who.actor) as conn:
        inst = scope.instrument(conn, who, instrument_id, write=True)
        scope.writable_unit(who, inst["unit_id"])
        code = checkin.set_code(conn, instrument_id, who.actor)
    return {"instrument_id": instrument_id, **label(settings, request, code)}


@router.post("/checkin/{code}", status_code=201, summary="Check in or out at the instrument of a label code, "
             "as the person logged in (university login, or a staff account that names its person; a pending or "
             "declined registrant: 403 person_pending); the signed command goes to its agent (SPEC §9.5), or, "
             "with no agent online, the request is kept as an unverified manual session")
def phone_checkin(code: Code, body: CheckinIn, who: Someone, db: Db, settings: Settings) -> dict[str, Any]:
    with db.write(who.actor) as conn:
        made, out = checkin.request(conn, settings, who, code, body.action, body.booking_id)
    if out is not None and not checkin.publish(settings, out):
        made["status"] = "no_answer"  # the broker is away: the page offers to try again
    return made


@router.get("/checkin/{code}/status", summary="The live status of a label code's instrument (what the public "
            "catalog shows too) and whether its agent can take a check-in now")
def code_status(code: Code, who: Someone, db: Db, settings: Settings) -> dict[str, Any]:
    with db.read() as conn:
        inst = checkin.instrument_by_code(conn, code)
        agent, status = checkin.agent_status(conn, inst["id"], settings.live_stale_s)
    return {"instrument_id": inst["id"], "status": status, "agent_online": agent is not None}


@router.get("/checkin/requests/{request_id}", summary="The result of a phone check-in: sent, done (the agent's "
            "signed session record is stored), no_answer or manual")
def checkin_result(request_id: RequestId, who: Someone, db: Db) -> dict[str, Any]:
    with db.read() as conn:
        return checkin.result(conn, who, request_id)


@router.post("/checkin/requests/{request_id}/decision", summary="Accept or reject an unverified manual phone "
             "session (evaluator or operator); accepted, it counts as manual (logbook) use")
def decide(request_id: RequestId, body: DecisionIn, who: Who, db: Db) -> dict[str, Any]:
    with db.write(who.actor) as conn:
        return checkin.decide(conn, who, request_id, body.decision)
