"""Plausibility flags of an instrument over a range (server/evaluation/plausibility.py): patterns in
verified data that deserve a person's look. Unit managers: own unit only; evaluators and operators:
every instrument."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.web import scope
from server.web.deps import Db, Who
from server.web.params import FromQuery, ToQuery, aware, check_range
from server.web.services.plausibility import MAX_SPAN, flags

router = APIRouter(prefix="/api/v1", tags=["intervals"])

EXAMPLE = {
    "instrument": "ua-xrd",
    "from": "2025-04-01T00:00:00+08:00",
    "to": "2025-04-11T00:00:00+08:00",
    "flags": [{
        "check": "continuous_running",
        "detail": "running >= 22 h on each of 8 consecutive days (2025-04-01 to 2025-04-08) with no idle, off or "
                  "fault time",
        "start": "2025-04-01T00:00:00+08:00",
        "end": "2025-04-09T00:00:00+08:00",
        "value": 8.0,
        "args": {"hours": "22", "days": 8, "first": "2025-04-01", "last": "2025-04-08"},
    }],
}


@router.get("/instruments/{instrument_id}/plausibility",
            summary="Plausibility flags of an instrument over a range (patterns worth a person's look)",
            description="Runs the plausibility checks of the evaluation over [from, to): continuous running "
                        "without rest, late (spooled) share, synthetic heartbeats, agent clock ahead. A flag is "
                        f"no proof of fraud. At most {MAX_SPAN.days} days. Times without a zone are Asia/Shanghai.",
            responses={200: {"content": {"application/json": {"example": EXAMPLE}}}})
def get_plausibility(
    instrument_id: str,
    who: Who,
    db: Db,
    start: FromQuery,
    end: ToQuery,
) -> dict[str, Any]:
    t0, t1 = aware(start), aware(end)
    check_range(t0, t1, max_span=MAX_SPAN)
    with db.read() as conn:
        scope.instrument(conn, who, instrument_id)
        found = flags(conn, instrument_id, t0, t1)
    return {"instrument": instrument_id, "from": t0, "to": t1, "flags": found}
