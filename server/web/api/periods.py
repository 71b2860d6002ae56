"""Closed evaluation periods (server/evaluation/closing.py): the operator closes and reopens a
period; operators and evaluators read its state and download the signed snapshot, which
`jishi period verify FILE --public-key KEY` checks offline. Unit managers do neither: the graded
unit never freezes or thaws its own figures, and a snapshot holds every unit's report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from server.evaluation import snapshot
from server.exports import closing
from server.web.auth import require_role
from server.web.deps import Db, Derive, Settings, Who
from server.web.errors import ApiError, field_error
from server.web.scope import pseudonymizer
from server.web.services import evaluation

router = APIRouter(prefix="/api/v1/evaluation", tags=["closed periods"])
PeriodPath = Annotated[str, "YYYY or YYYY-MM-DD..YYYY-MM-DD"]

_SNAPSHOT_EXAMPLE = {
    "period": "2025",
    "version": 1,
    "closed_at": "2026-02-01T09:00:00+08:00",
    "closed_by": "OPS (ops)",
    "payload_sha256": "3b1f0c9e5d2a4f6b8c7d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
    "public_key": "mJ0c3s8m6yQ0m7Lr0sRj3bq0w5V0mQm0G4v6l8cQ1xk=",
    "reopened_at": None,
    "reopened_by": None,
    "reopen_reason": None,
}


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirm: bool = Field(True, examples=[True], description="must be true: closing freezes the period's figures")


class ReopenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, examples=["补传数据到达，经评价组同意重新结账"])


def _state_error(e: closing.PeriodStateError, period: str) -> ApiError:
    if e.code == "already_closed":
        return ApiError(409, "period_closed", "err.period_closed", period=period)
    if e.code == "reason_required":
        return field_error("reason", "a reason / 请填写原因")
    return ApiError(409, "period_not_closed", "err.period_not_closed", period=period)


@router.get(
    "/{period}/closing",
    summary="Whether the period is closed, and every closing and reopening of it (operators, evaluators)",
    responses={200: {"content": {"application/json": {"example": {
        "period": "2025", "closed": True, "current": _SNAPSHOT_EXAMPLE, "history": [_SNAPSHOT_EXAMPLE]}}}}},
)  # fmt: skip
def closing_state(period: PeriodPath, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    with db.read() as conn:
        snap = closing.current(conn, p.label, with_payload=False)
        return {
            "period": p.label,
            "closed": snap is not None,
            "current": snap.as_dict() if snap else None,
            "history": [s.as_dict() for s in closing.history(conn, p.label)],
        }


@router.post(
    "/{period}/close",
    status_code=201,
    summary="Close the period: store its figures, grades and evidence manifests as a signed snapshot (operator)",
    description="From then on the period's reports (API, pages, workbooks) are read from the snapshot; records "
    "that arrive later are shown beside it as an amendment. 409 when the period is closed already.",
    responses={201: {"content": {"application/json": {"example": _SNAPSHOT_EXAMPLE}}}},
)
def close_period(period: PeriodPath, body: CloseIn, who: Who, db: Db, settings: Settings,
                 derive: Derive) -> dict[str, Any]:
    require_role(who, "operator")
    p = evaluation.period_of(period)
    if not body.confirm:
        raise field_error("confirm", "must be true / 须为 true")
    if not settings.snapshot_key_file:
        raise ApiError(409, "no_snapshot_key", "err.no_snapshot_key")
    key = snapshot.load_key(Path(settings.snapshot_key_file))
    with db.write(who.actor) as conn:
        try:
            snap = closing.close(conn, p, evaluation.rubric_of(settings), pseudonymizer(conn), derive, key,
                                 who.actor)
        except closing.PeriodStateError as e:
            raise _state_error(e, p.label) from None
        return snap.as_dict()


@router.post(
    "/{period}/reopen",
    summary="Reopen a closed period (operator; audited with the reason). The snapshot stays stored and verifiable",
    responses={200: {"content": {"application/json": {"example": {
        **_SNAPSHOT_EXAMPLE, "reopened_at": "2026-02-10T10:00:00+08:00", "reopened_by": "OPS (ops)",
        "reopen_reason": "补传数据到达，经评价组同意重新结账"}}}}},
)  # fmt: skip
def reopen_period(period: PeriodPath, body: ReopenIn, who: Who, db: Db) -> dict[str, Any]:
    require_role(who, "operator")
    p = evaluation.period_of(period)
    with db.write(who.actor) as conn:
        try:
            return closing.reopen(conn, p.label, who.actor, body.reason).as_dict()
        except closing.PeriodStateError as e:
            raise _state_error(e, p.label) from None


@router.get(
    "/{period}/snapshot.json",
    summary="The signed snapshot in force (operators, evaluators), for `jishi period verify FILE --public-key KEY`",
    responses={200: {"content": {"application/json": {"example": {
        "format": "jishi-period-snapshot", "version": 1, "payload": "{\"audit\":{\"audit_last_id\":42},...}",
        "signature": "base64…", "public_key": "mJ0c3s8m6yQ0m7Lr0sRj3bq0w5V0mQm0G4v6l8cQ1xk=",
        "parts": {"unit/ua": "{\"doc\":{...},\"summary_kinds\":{...}}"}}}}}},
)  # fmt: skip
def snapshot_file(period: PeriodPath, who: Who, db: Db) -> Response:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    with db.read() as conn:
        snap = closing.current(conn, p.label)
        if snap is None:
            raise ApiError(404, "period_not_closed", "err.period_not_closed", period=p.label)
        doc = snap.export(conn)
    name = f"jishi-snapshot-{p.label.replace('..', '_')}-v{snap.version}.json"
    return Response(json.dumps(doc, ensure_ascii=False), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip
