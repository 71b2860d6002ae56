"""Proposals: a unit manager's changes that move the figures (issue 13), waiting for the operator
(or an evaluator, when `evaluators_decide_proposals` is set). Unit managers see their own unit's;
operators and evaluators every unit's. The unit's figures both ways, and the accepted changes
with their effect on each indicator, are here too (and on the unit report page)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from server.registry import proposals
from server.registry.schema import Model
from server.web import evaluation, figures, scope
from server.web.auth import Principal, require_role
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError, not_found
from server.web.settings import WebSettings

router = APIRouter(prefix="/api/v1", tags=["registry"])

Status = Literal["pending", "accepted", "declined", "superseded"]


class Decision(Model):
    note: str = Field(default="", max_length=2000, examples=["验收报告核实"])


@router.get("/proposals", summary="Proposed registry changes (own unit for unit managers)")
def list_proposals(who: Who, db: Db, unit_id: Annotated[str | None, Query(max_length=64)] = None,
                   status: Status | None = "pending") -> list[dict[str, Any]]:
    with db.read() as conn:
        if unit_id is not None:
            scope.unit(conn, who, unit_id)
        units = [unit_id] if unit_id is not None else who.unit_scope()
        return proposals.listing(conn, units, status)


def may_decide(who: Principal, settings: WebSettings) -> bool:
    return who.role == "operator" or (who.role == "evaluator" and settings.evaluators_decide_proposals)


def _decide(proposal_id: int, accept: bool, body: Decision | None, who: Principal, db: Any,
            settings: WebSettings) -> dict[str, Any]:
    if not may_decide(who, settings):
        raise ApiError(403, "forbidden", "err.forbidden_role", role=who.role)
    with db.write(who.actor) as conn:
        found = proposals.listing(conn, None, None, proposal_id)
        if not found:
            raise not_found("what.proposal", proposal_id)
        if found[0]["status"] != "pending":
            raise ApiError(409, "conflict", "err.conflict", detail=found[0]["status"])
        proposals.decide(conn, found[0], accept, who.actor, body.note if body else "")
        return proposals.listing(conn, None, None, proposal_id)[0]


@router.post("/proposals/{proposal_id}/accept", summary="Accept a proposal: the change is written (operator)")
def accept_proposal(proposal_id: int, who: Who, db: Db, settings: Settings,
                    body: Decision | None = None) -> dict[str, Any]:
    return _decide(proposal_id, True, body, who, db, settings)


@router.post("/proposals/{proposal_id}/decline", summary="Decline a proposal: the registry stays (operator)")
def decline_proposal(proposal_id: int, who: Who, db: Db, settings: Settings,
                     body: Decision | None = None) -> dict[str, Any]:
    return _decide(proposal_id, False, body, who, db, settings)


@router.get("/evaluation/{period}/units/{unit_id}/proposed",
            summary="The unit's indicators as accepted and as they would be with its open proposals")
def figures_both_ways(period: str, unit_id: str, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return figures.both_ways(conn, settings, p, unit_id)


@router.get("/evaluation/{period}/units/{unit_id}/changes",
            summary="Accepted registry changes of the unit: who, when, before -> after, effect on each indicator")
def accepted_changes(period: str, unit_id: str, who: Who, db: Db, settings: Settings) -> list[dict[str, Any]]:
    require_role(who, "operator", "evaluator", "unit_manager")
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return figures.accepted_effects(conn, settings, p, unit_id)
