"""Indicators, reconciliation, compliance, grades and subsidies (server/evaluation), and the
XLSX workbook (server/exports). Users appear only as pseudonyms in all of these."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from server.evaluation import report as report_mod
from server.evaluation import review
from server.exports.workbook import write_xlsx
from server.web import evaluation, scope
from server.web.auth import require_role
from server.web.deps import Db, Settings, Who
from server.web.errors import field_error

router = APIRouter(prefix="/api/v1/evaluation", tags=["evaluation"])
PeriodPath = Annotated[str, "YYYY or YYYY-MM-DD..YYYY-MM-DD"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _xlsx(rep: report_mod.Report, name: str) -> Response:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "report.xlsx"
        write_xlsx(rep, path)
        data = path.read_bytes()
    return Response(data, media_type=XLSX,
                    headers={"Content-Disposition": f"attachment; filename=\"{name}.xlsx\""})


@router.get("/{period}/units/{unit_id}", summary="A unit's evaluation report (indicators, reconciliation, grade)")
def unit_report(period: PeriodPath, unit_id: str, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return evaluation.unit_report(conn, settings, p, unit_id).as_dict()


@router.get("/{period}/units/{unit_id}/workbook.xlsx", summary="The unit's report as an XLSX workbook",
            response_class=Response, responses={200: {"content": {XLSX: {}}}})
def unit_workbook(period: PeriodPath, unit_id: str, who: Who, db: Db, settings: Settings) -> Response:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        rep = evaluation.unit_report(conn, settings, p, unit_id)
    return _xlsx(rep, f"jishi-{unit_id}-{p.label}")


@router.get("/{period}/region", summary="All units: scores, grades, subsidies, findings, spot-check sample")
def region_report(period: PeriodPath, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    with db.read() as conn:
        return report_mod.region_report(evaluation.region(conn, settings, p)).as_dict()


@router.get("/{period}/region/workbook.xlsx", summary="The region's report as an XLSX workbook",
            response_class=Response, responses={200: {"content": {XLSX: {}}}})
def region_workbook(period: PeriodPath, who: Who, db: Db, settings: Settings) -> Response:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    with db.read() as conn:
        rep = report_mod.region_report(evaluation.region(conn, settings, p))
    return _xlsx(rep, f"jishi-region-{p.label}")


@router.get("/{period}/low-use", summary="Low-use instruments and units (art. 24)")
def low_use(period: PeriodPath, who: Who, db: Db, settings: Settings,
            threshold: Annotated[float | None, Query(gt=0, le=1)] = None) -> dict[str, Any]:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    with db.read() as conn:
        return evaluation.low_use(conn, p, threshold or settings.low_use_threshold)


@router.get("/{period}/duplicates", summary="Duplicate-purchase review: existing instruments of the same kind")
def duplicates(period: PeriodPath, who: Who, db: Db,
               classification_code: Annotated[str, Query(min_length=1, max_length=32, examples=["03040702"])],
               specs: Annotated[str, Query(max_length=500)] = "",
               location: Annotated[str, Query(max_length=100)] = "") -> list[dict[str, Any]]:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    if not classification_code.strip():
        raise field_error("classification_code", "required / 必填")
    with db.read() as conn:
        found = review.duplicate_review(conn, p, classification_code=classification_code, specs=specs,
                                        location=location)
    return [c.as_dict() for c in found]
