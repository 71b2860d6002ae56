"""Proposals: a unit manager's changes that move the figures (issue 13), waiting for the operator
(or an evaluator, when `evaluators_decide_proposals` is set). Unit managers see their own unit's;
operators and evaluators every unit's. The unit's figures both ways, and the accepted changes
with their effect on each indicator, are here too (and on the unit report page)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from server.config import WebSettings
from server.registry import proposals
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, not_found
from server.web.services import evaluation

router = APIRouter(prefix="/api/v1", tags=["registry"])

Status = Literal["pending", "accepted", "declined", "superseded"]

EXAMPLE: dict[str, Any] = {
    "id": 12, "unit_id": "ua", "target": "instruments", "row_key": "ua-xrd", "field": "rated_hours",
    "before": None, "after": "1.0", "status": "pending", "proposed_by": "account:mgr-a",
    "proposed_at": "2026-01-08T10:12:03+08:00", "decided_by": None, "decided_at": None, "note": ""}


def example(value: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"content": {"application/json": {"example": value}}}}


_INDICATORS = {"rated_hours": 1400.0, "running_hours": 1288.0, "utilization": 0.92}


Note = Annotated[str, Query(max_length=2000, examples=["验收报告核实"])]


@router.get("/proposals", summary="Proposed registry changes (own unit for unit managers)",
            responses=example([EXAMPLE]))
def list_proposals(who: Who, db: Db, unit_id: Annotated[str | None, Query(max_length=64)] = None,
                   status: Status | None = "pending") -> list[dict[str, Any]]:
    with db.read() as conn:
        if unit_id is not None:
            scope.unit(conn, who, unit_id)
        units = [unit_id] if unit_id is not None else who.unit_scope()
        return _view(conn, who, proposals.listing(conn, units, status))


def _view(conn: Any, who: Principal, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluators see the person a proposal is about only as a pseudonym (art. 17)."""
    if who.sees_names or not any(r["target"] == "platform_users" for r in found):
        return found
    pseudo = scope.pseudonymizer(conn)
    return [{**r, "row_key": pseudo.user(r["row_key"])} if r["target"] == "platform_users" else r for r in found]


def _decide(proposal_id: int, accept: bool, note: str, who: Principal, db: Any,
            settings: WebSettings) -> dict[str, Any]:
    if not proposals.may_decide(who.role, settings.evaluators_decide_proposals):
        raise ApiError(403, "forbidden", "err.forbidden_role", role=who.role)
    with db.write(who.actor) as conn:
        found = proposals.listing(conn, None, None, proposal_id)
        if not found:
            raise not_found("what.proposal", proposal_id)
        if found[0]["status"] != "pending":
            raise ApiError(409, "conflict", "err.conflict", detail=found[0]["status"])
        proposals.decide(conn, found[0], accept, who.actor, note)
        return proposals.listing(conn, None, None, proposal_id)[0]


@router.post("/proposals/{proposal_id}/accept", summary="Accept a proposal: the change is written (operator)",
             responses=example(EXAMPLE | {"status": "accepted", "decided_by": "account:ops",
                                          "decided_at": "2026-01-09T09:00:00+08:00"}))
def accept_proposal(proposal_id: int, who: Who, db: Db, settings: Settings,
                    note: Note = "") -> dict[str, Any]:
    return _decide(proposal_id, True, note, who, db, settings)


@router.post("/proposals/{proposal_id}/decline", summary="Decline a proposal: the registry stays (operator)",
             responses=example(EXAMPLE | {"status": "declined", "decided_by": "account:ops",
                                          "decided_at": "2026-01-09T09:00:00+08:00"}))
def decline_proposal(proposal_id: int, who: Who, db: Db, settings: Settings,
                     note: Note = "") -> dict[str, Any]:
    return _decide(proposal_id, False, note, who, db, settings)


@router.get("/evaluation/{period}/units/{unit_id}/proposed",
            summary="The unit's indicators as accepted and as they would be with its open proposals",
            responses=example({"as_accepted": _INDICATORS, "as_proposed": _INDICATORS | {"rated_hours": 1.0,
                               "utilization": 1288.0}, "pending": [EXAMPLE]}))
def figures_both_ways(period: str, unit_id: str, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        out = evaluation.figures_both_ways(conn, settings, p, unit_id)
        return {**out, "pending": _view(conn, who, out["pending"])}


@router.get("/evaluation/{period}/units/{unit_id}/changes",
            summary="Accepted registry changes of the unit: who, when, before -> after, effect on each indicator",
            responses=example([EXAMPLE | {"status": "accepted", "after": "1200.0", "decided_by": "account:ops",
                                          "effect": {"rated_hours": -200.0, "utilization": 0.153}}]))
def accepted_changes(period: str, unit_id: str, who: Who, db: Db, settings: Settings) -> list[dict[str, Any]]:
    require_role(who, "operator", "evaluator", "unit_manager")
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return _view(conn, who, evaluation.accepted_changes(conn, settings, p, unit_id))
