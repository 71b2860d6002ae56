"""University login (issue 19): the configured providers, the logged-in person, and the
self-registrations that unit managers (their unit's) and the operator (outside organisations)
confirm or decline. The login itself is a browser redirect (pages/login.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from server.web.deps import Db, Person, Settings, Who
from server.web.services import login

router = APIRouter(prefix="/api/v1", tags=["auth"])


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=500, examples=["已核实单位信息"])


@router.get("/auth/providers", summary="University logins offered (CAS / OIDC), with their login URLs")
def providers(settings: Settings) -> list[dict[str, Any]]:
    return [{"id": p.id, "kind": p.kind, "label_zh": p.label_zh, "label_en": p.label_en,
             "login_url": f"/login/sso/{p.id}"} for p in settings.login_providers]


@router.get("/auth/person", summary="The person logged in through a university login (status pending: 待确认)")
def person(me: Person) -> dict[str, Any]:
    return {**me.as_dict(), "csrf_token": me.csrf_token}


@router.get("/registrations", summary="Self-registrations to decide (operator: all; unit manager: own unit's)")
def list_registrations(who: Who, db: Db, status: str | None = "pending") -> list[dict[str, Any]]:
    with db.read() as conn:
        return login.registrations(conn, who, status or None)


@router.post("/registrations/{reg_id}/confirm", summary="Confirm a self-registration (the person may then book "
                                                        "and check in)")
def confirm(reg_id: int, who: Who, db: Db, body: DecisionIn | None = None) -> dict[str, Any]:
    return login.decide(db, who, reg_id, "confirmed", body.note if body else "")


@router.post("/registrations/{reg_id}/decline", summary="Decline a self-registration")
def decline(reg_id: int, who: Who, db: Db, body: DecisionIn | None = None) -> dict[str, Any]:
    return login.decide(db, who, reg_id, "declined", body.note if body else "")
