"""The evidence behind an interval (signed records: power, processes, files, transitions, signature
and arrival) and an instrument's utilization trend. Unit managers: own unit only; evaluators: users
as pseudonyms."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from server.exports.evidence import MAX_DISPUTE_DAYS, full_envelopes
from server.web import scope
from server.web.auth import require_role
from server.web.deps import Db, Derive, Who
from server.web.errors import field_error
from server.web.params import FromQuery, ToQuery, aware, check_range
from server.web.services.evidence import interval_evidence
from server.web.services.trend import utilization_trend

router = APIRouter(prefix="/api/v1", tags=["intervals"])
BIN = "application/octet-stream"
EARLIEST, LATEST = date(2020, 1, 1), date(2099, 12, 31)


@router.get("/instruments/{instrument_id}/evidence",
            summary="Evidence behind an interval: power curve, processes, data files, state changes, signatures",
            description="Reads the signed records of [from, to] back from the kept envelopes and checks each "
                        "envelope's signature again. At most 7 days. Times without a zone are Asia/Shanghai. "
                        "Evaluators see users as pseudonyms and no file names.")
def get_evidence(
    instrument_id: str,
    who: Who,
    db: Db,
    derive: Derive,
    start: FromQuery,
    end: ToQuery,
) -> dict[str, Any]:
    t0, t1 = aware(start), aware(end)
    check_range(t0, t1)
    with db.read() as conn:
        inst = scope.instrument(conn, who, instrument_id)
        return interval_evidence(conn, who, inst, t0, t1, derive.live_window_ms)


@router.get("/instruments/{instrument_id}/envelopes.bin",
            summary="An instrument's full signed envelopes of some days, byte for byte, for a dispute",
            description="The evidence bundle keeps every record but only the signatures that close each day; "
                        "this gives every kept envelope (re-sends included) holding a record of the local days "
                        "`from`..`to` (at most 31), as entries `id int64 | received µs int64 | length uint32 | "
                        "bytes` (big-endian, protocols/bundle.py). Operators, the unit's manager and evaluators.",
            response_class=Response, responses={200: {"content": {BIN: {}}}})
def instrument_envelopes(
    instrument_id: str,
    who: Who,
    db: Db,
    start: Annotated[date, Query(alias="from", examples=["2025-03-04"])],
    end: Annotated[date | None, Query(alias="to", description="last day; default: `from`")] = None,
) -> Response:
    require_role(who, "operator", "unit_manager", "evaluator")
    last = end or start
    if last < start or (last - start).days >= MAX_DISPUTE_DAYS:
        raise field_error("to", f"from..to must span 1..{MAX_DISPUTE_DAYS} days")
    if start < EARLIEST or last > LATEST:  # records' times are bounded (SPEC §5): nothing outside
        raise field_error("from", f"days between {EARLIEST} and {LATEST}")
    with db.read() as conn:
        scope.instrument(conn, who, instrument_id)
        body = b"".join(full_envelopes(conn, instrument_id, start, last))
    name = f"jishi-envelopes-{instrument_id}-{start}_{last}.bin"
    return Response(body, media_type=BIN, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/instruments/{instrument_id}/utilization-trend",
            summary="Utilization per month (or week) over the last months, verified and including unverified")
def get_trend(
    instrument_id: str,
    who: Who,
    db: Db,
    months: Annotated[int, Query(ge=1, le=36, examples=[12])] = 12,
    bucket: Annotated[Literal["month", "week"] | None, Query(
        description="month or week; by default weeks when the instrument is in service for < 3 months")] = None,
) -> dict[str, Any]:
    with db.read() as conn:
        inst = scope.instrument(conn, who, instrument_id)
        return utilization_trend(conn, inst, months=months, bucket=bucket)
