"""Intervals and sessions of an instrument (pseudonymous for evaluators)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.web import scope
from server.web.deps import Db, Who
from server.web.services.timeline import timeline

router = APIRouter(prefix="/api/v1", tags=["intervals"])


@router.get("/instruments/{instrument_id}/timeline",
            summary="State segments, user sessions, coverage (with gaps) and daily running hours")
def get_timeline(
    instrument_id: str,
    who: Who,
    db: Db,
    start: Annotated[date, Query(description="first local day (Asia/Shanghai)", examples=["2025-03-01"])],
    days: Annotated[int, Query(ge=1, le=92)] = 1,
) -> dict[str, Any]:
    with db.read() as conn:
        scope.instrument(conn, who, instrument_id)
        return timeline(conn, who, instrument_id, start, days)
