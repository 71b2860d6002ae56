"""Indicators, reconciliation, compliance, grades and subsidies (server/evaluation), and the
XLSX workbook (server/exports). Users appear only as pseudonyms in all of these."""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from server.evaluation import compliance, review, rubric
from server.evaluation import report as report_mod
from server.evaluation.indicators import compute
from server.exports import nrii
from server.exports.evidence import write_bundle
from server.exports.workbook import write_xlsx
from server.store.times import TZ
from server.web import scope
from server.web.auth import require_role
from server.web.db import rows
from server.web.deps import Db, Derive, Settings, Who
from server.web.errors import field_error
from server.web.services import evaluation

router = APIRouter(prefix="/api/v1/evaluation", tags=["evaluation"])
PeriodPath = Annotated[str, "YYYY or YYYY-MM-DD..YYYY-MM-DD"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZIP = "application/zip"


def _xlsx(rep: report_mod.Report, name: str) -> Response:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "report.xlsx"
        write_xlsx(rep, path)
        data = path.read_bytes()
    return Response(data, media_type=XLSX,
                    headers={"Content-Disposition": f"attachment; filename=\"{name}.xlsx\""})


@router.get("/{period}/units/{unit_id}", summary="A unit's evaluation report (indicators, reconciliation, grade)",
            description="Every row of every table by default. `rows` (with `offset`) pages the two lists with a "
                        "row per service record (`reconciliation`, `revenue`): those tables then hold `rows` rows "
                        "from the `offset`-th and say `total` and `offset`; every figure and every other table is "
                        "the same. A closed period's report is its snapshot, whole, whatever `rows` says.")
def unit_report(period: PeriodPath, unit_id: str, who: Who, db: Db, settings: Settings,
                rows: Annotated[int | None, Query(ge=0, le=10000, description="rows of each per-record list")] = None,
                offset: Annotated[int, Query(ge=0, le=10_000_000, description="the first row's index")] = 0,
                ) -> dict[str, Any]:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return evaluation.unit_report(conn, settings, p, unit_id, rows=rows, offset=offset).as_dict()


@router.get("/{period}/units/{unit_id}/workbook.xlsx", summary="The unit's report as an XLSX workbook",
            response_class=Response, responses={200: {"content": {XLSX: {}}}})
def unit_workbook(period: PeriodPath, unit_id: str, who: Who, db: Db, settings: Settings) -> Response:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        rep = evaluation.unit_report(conn, settings, p, unit_id)
    return _xlsx(rep, f"jishi-{unit_id}-{p.label}")


@router.get("/{period}/units/{unit_id}/evidence.zip",
            summary="The unit's evidence bundle (signed records, signed heads, keys; `jishi verify` checks it)",
            description="The same bundle `jishi evidence` writes. Operators, the unit's manager and evaluators. "
                        "It holds no registry names: people are pseudonyms in the manifest; the identifiers the "
                        "agents saw (OS logins, check-in accounts, keyed card hashes) are inside the signed "
                        "records and cannot be removed without breaking the signatures the bundle exists to prove.",
            response_class=Response, responses={200: {"content": {ZIP: {}}}})
def unit_evidence(period: PeriodPath, unit_id: str, who: Who, db: Db, derive: Derive) -> Response:
    require_role(who, "operator", "unit_manager", "evaluator")
    p = evaluation.period_of(period)
    d = tempfile.mkdtemp(prefix="jishi-evidence-")
    try:
        with db.read() as conn:
            scope.unit(conn, who, unit_id)
            path = Path(d) / "bundle.zip"
            write_bundle(conn, p, unit_id, path, scope.pseudonymizer(conn), derive)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    name = f"jishi-evidence-{unit_id}-{p.label.replace('..', '_')}.zip"
    # a year of envelopes can be large: streamed from the file, removed once sent
    return FileResponse(path, media_type=ZIP, filename=name,
                        background=BackgroundTask(shutil.rmtree, d, ignore_errors=True))


class ExpertScoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    criterion: str = Field(min_length=1, max_length=64, examples=["atmosphere"],
                           description="a criterion key of the rubric (the unit report's score sheet lists them)")
    points: float = Field(ge=0, le=1000, examples=[5])
    note: str = Field(min_length=1, max_length=2000, examples=["现场检查：开放共享制度健全，预约记录完整"])


@router.get("/{period}/units/{unit_id}/expert-scores",
            summary="The experts' scores of a unit for the period, newest first (history; the newest counts)",
            responses={200: {"content": {"application/json": {"example": [
                {"id": 4, "criterion": "atmosphere", "points": "5.00", "note": "现场检查：开放共享制度健全",
                 "expert": "专家甲 (eva)", "created_at": "2026-01-12T10:00:00+08:00"}]}}}})
def list_expert_scores(period: PeriodPath, unit_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        return rows(conn, "SELECT id, criterion, points, note, expert, created_at FROM expert_scores"
                          " WHERE unit_id = %s AND period = %s ORDER BY created_at DESC, id DESC", (unit_id, p.label))


@router.post("/{period}/units/{unit_id}/expert-scores", status_code=201,
             summary="An expert's score for a criterion, with the note saying why (evaluators, operators)",
             description="Overrides the computed points of an indicator criterion, or scores an expert criterion. "
                         "Earlier scores stay in the history; the newest counts. The expert is the account.",
             responses={201: {"content": {"application/json": {"example": {
                 "unit_id": "ua", "period": "2025", "criterion": "atmosphere", "points": 5.0,
                 "note": "现场检查：开放共享制度健全", "expert": "专家甲 (eva)", "grade": "良好", "total": 78.5}}}}})
def create_expert_score(period: PeriodPath, unit_id: str, body: ExpertScoreIn, who: Who, db: Db,
                        settings: Settings) -> dict[str, Any]:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    rb = evaluation.rubric_of(settings)
    crit = next((c for c in rb.criteria if c.key == body.criterion), None)
    if crit is None:
        raise field_error("criterion", f"one of {', '.join(c.key for c in rb.criteria)}"
                                       f" / 可选：{'、'.join(c.key for c in rb.criteria)}")
    if body.points > crit.max_points:
        raise field_error("points", f"0..{crit.max_points:g}")
    expert = f"{who.display_name} ({who.login})" if who.display_name else who.login
    with db.write(who.actor) as conn:
        scope.unit(conn, who, unit_id)
        evaluation.require_open(conn, p)
        rubric.record_expert_score(conn, rb, unit_id, p.label, body.criterion, body.points, body.note.strip(),
                                   expert)
    with db.read() as conn:  # the score sheet only: no list's rows
        rep = evaluation.unit_report(conn, settings, p, unit_id, rows=0)
    sheet = rep.data["score_sheet"]
    return {"unit_id": unit_id, "period": p.label, "criterion": body.criterion, "points": body.points,
            "note": body.note.strip(), "expert": expert, "grade": sheet["grade"], "total": sheet["total"]}


SampleSize = Annotated[int, Query(ge=0, le=1000, description="spot-check sample size")]
Seed = Annotated[int | None, Query(ge=0, le=2**31 - 1,
                                   description="sample seed (default: the period's first year); the same seed and "
                                               "data give the same sample")]


@router.get("/{period}/region", summary="All units: scores, grades, subsidies, findings, spot-check sample")
def region_report(period: PeriodPath, who: Who, db: Db, settings: Settings, sample: SampleSize = 50,
                  seed: Seed = None) -> dict[str, Any]:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    with db.read() as conn:
        return evaluation.region_report(conn, settings, p, sample_size=sample, seed=seed).as_dict()


@router.get("/{period}/region/workbook.xlsx", summary="The region's report as an XLSX workbook",
            response_class=Response, responses={200: {"content": {XLSX: {}}}})
def region_workbook(period: PeriodPath, who: Who, db: Db, settings: Settings, sample: SampleSize = 50,
                    seed: Seed = None) -> Response:
    require_role(who, "operator", "evaluator")
    p = evaluation.period_of(period)
    with db.read() as conn:
        rep = evaluation.region_report(conn, settings, p, sample_size=sample, seed=seed)
    return _xlsx(rep, f"jishi-region-{p.label}")


@router.get("/{period}/nrii.zip",
            summary="The NRII-layout export (instruments and service records: two CSV and one JSON), as `jishi export "
                    "nrii` writes it",
            description="Operators and evaluators: every unit, or the `unit` given (repeatable); unit managers: their "
                        "own unit. Applicants appear as pseudonyms (art. 17); `jishi export nrii --include-names` on "
                        "the server is the only way to real names.",
            response_class=Response, responses={200: {"content": {ZIP: {}}}})
def nrii_export(period: PeriodPath, who: Who, db: Db,
                unit: Annotated[list[str] | None, Query(max_length=200, examples=[["ua"]])] = None) -> Response:
    p = evaluation.period_of(period)
    units = [who.unit_id] if who.role == "unit_manager" and who.unit_id else (unit or None)
    with tempfile.TemporaryDirectory() as d, db.read() as conn:
        for u in units or []:
            scope.unit(conn, who, u)
        files = nrii.export(conn, p, Path(d), scope.pseudonymizer(conn), units)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in (files.instruments_csv, files.services_csv, files.json):
                z.write(f, f.name)
    name = f"nrii-{p.label.replace('..', '_')}.zip"
    return Response(buf.getvalue(), media_type=ZIP, headers={"Content-Disposition": f"attachment; filename=\"{name}\""})


@router.get("/{period}/indicators",
            summary="The indicators for any period: per instrument, per unit and for the region, verified and "
                    "including unverified data",
            description="`period` is a year (the evaluation year by default in the pages) or any range "
                        "`YYYY-MM-DD..YYYY-MM-DD` (end exclusive, Asia/Shanghai days); rated hours are pro-rated to "
                        "the days of the range. Operators and evaluators: every unit, or the `unit`s given; unit "
                        "managers: their own unit. `instrument` narrows the instrument list.",
            responses={200: {"content": {"application/json": {"example": {
                "period": "2025-03-01..2025-04-01", "units": {"ua": {
                    "name": "甲大学", "cases": 0, "indicators": {
                        "instruments": 2, "in_scope": 2, "exempted": 0, "evaluated": 2, "open": 2, "open_rate": 1.0,
                        "rated_hours": 237.8082,
                        "running_hours": {"live": 2.0, "spool": 0.0, "unverified": 0.0, "verified": 2.0, "total": 2.0},
                        "utilization": {"verified": 0.00841, "including_unverified": 0.00841},
                        "sharing": {"verified": 1.0, "including_unverified": 1.0}, "revenue": "450.00"}}},
                "region": {"instruments": 3, "open_rate": 1.0, "rated_hours": 305.7534},
                "instruments": [{"id": "ua-xrd", "unit_id": "ua", "name": "X射线衍射仪", "rated_hours": 118.9041,
                                 "running_hours": {"live": 2.0, "spool": 0.0, "unverified": 0.0, "verified": 2.0,
                                                   "total": 2.0},
                                 "utilization": {"verified": 0.01682, "including_unverified": 0.01682}}]}}}}})
def indicators(period: PeriodPath, who: Who, db: Db,
               unit: Annotated[list[str] | None, Query(max_length=200, examples=[["ua"]])] = None,
               instrument: Annotated[list[str] | None, Query(max_length=1000, examples=[["ua-xrd"]])] = None,
               ) -> dict[str, Any]:
    p = evaluation.period_of(period)
    units = [who.unit_id] if who.role == "unit_manager" and who.unit_id else (unit or None)
    with db.read() as conn:
        for u in units or []:
            scope.unit(conn, who, u)
        ev = compute(conn, p, units)
    wanted = set(instrument) if instrument else None
    return {
        "period": p.label,
        "units": {u.id: {"name": u.name, "cases": u.cases, "indicators": u.figures.as_dict()}
                  for u in ev.units.values()},
        "region": ev.region.as_dict() if units is None else None,
        "instruments": [f.as_dict() for f in ev.instruments.values() if wanted is None or f.id in wanted],
    }


@router.get("/{period}/compliance",
            summary="Compliance findings: late registration (30 working days), not open and not exempted, "
                    "unapproved exemptions, instruments without an agent, silent agents",
            description="Operators and evaluators: every unit, or the `unit` given (repeatable); unit managers: their "
                        "own unit. Deadlines and silence are judged at `as_of` (default: the period's end; a time "
                        "without zone is Asia/Shanghai). Working days follow the official calendar "
                        "(chinese-calendar); a year it does not cover falls back to Monday–Friday, and "
                        "`calendar_note` says so.",
            responses={200: {"content": {"application/json": {"example": {
                "period": "2025", "as_of": "2026-01-01T00:00:00+08:00", "silent_days": 7, "calendar_note": "",
                "findings": [{"unit_id": "ua", "instrument_id": "ua-xrd", "agent_id": "ua-xrd-a1",
                              "rule": "agent_silent", "rule_label": "采集终端长时间无数据", "article": "第十六条",
                              "detail": "采集终端 ua-xrd-a1：最后在线 2025-03-03T13:00:00+08:00，超过 7 天",
                              "days": 303, "calendar_note": ""}]}}}}})
def compliance_findings(period: PeriodPath, who: Who, db: Db,
                        unit: Annotated[list[str] | None, Query(max_length=200, examples=[["ua"]])] = None,
                        as_of: Annotated[datetime | None, Query(examples=["2026-01-10T00:00:00+08:00"])] = None,
                        silent_days: Annotated[int, Query(ge=1, le=366)] = compliance.DEFAULT_SILENT_DAYS,
                        ) -> dict[str, Any]:
    p = evaluation.period_of(period)
    units = [who.unit_id] if who.role == "unit_manager" and who.unit_id else (unit or None)
    at = None if as_of is None else (as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=TZ))
    with db.read() as conn:
        for u in units or []:
            scope.unit(conn, who, u)
        found, cal = compliance.check(conn, p, units, as_of=at, silent_days=silent_days)
    return {"period": p.label, "as_of": compliance.judged_at(p, at).astimezone(TZ).isoformat(),
            "silent_days": silent_days,
            "calendar_note": cal.note(),
            "findings": [{**f.as_dict(), "rule_label": compliance.RULE_LABELS.get(f.rule, f.rule)} for f in found]}


@router.get("/{period}/units/{unit_id}/reconciliation",
            summary="Reconciliation of the unit's service records with the running time attributed to the "
                    "claimant (attributed / may support / own unit / other / unwatched hours per record), and "
                    "external use without a record (the same as in the unit report)",
            responses={200: {"content": {"application/json": {"example": {
                "period": "2025", "unit_id": "ua",
                "summary": {"unit_id": "ua", "records": 1, "claimed_hours": 3.0, "overclaimed_records": 1,
                            "contradicted_hours": 1.0, "unverifiable_hours": 0.0, "type_mismatches": 0,
                            "uncovered_verified": 0.0, "uncovered_unverified": 0.0, "unverifiable_records": 0,
                            "own_unit_in_external_windows": 1.0, "may_support_used": 0.0},
                "records": [{"record_no": "SR-1", "instrument_id": "ua-xrd", "start_at": "2025-03-03T09:00:00+08:00",
                             "end_at": "2025-03-03T12:00:00+08:00", "user_type": "外部", "applicant": "U-fd09862c4f76",
                             "claimed_hours": 3.0, "attributed_hours": 2.0, "may_support_hours": 0.0,
                             "own_unit_hours": 1.0, "other_hours": 0.0, "may_support_used": 0.0,
                             "measured_verified": 3.0, "measured_unverified": 0.0,
                             "sessions": 2, "applicant_seen": True, "unwatched_hours": 0.0,
                             "unverifiable": 0.0, "contradicted": 1.0, "type_mismatch": False, "status": "多报"}],
                "uncovered": [{"instrument_id": "ua-xrd", "external_verified": 2.0, "external_unverified": 0.0,
                               "uncovered_verified": 0.0, "uncovered_unverified": 0.0}],
                "uncovered_sessions": []}}}}})
def unit_reconciliation(period: PeriodPath, unit_id: str, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    p = evaluation.period_of(period)
    with db.read() as conn:
        scope.unit(conn, who, unit_id)
        rep = evaluation.unit_report(conn, settings, p, unit_id).as_dict()
    tables = rep["tables"]
    return {"period": p.label, "unit_id": unit_id, "summary": rep["reconciliation"],
            "records": tables.get("reconciliation", {}).get("rows", []),
            "uncovered": tables.get("uncovered", {}).get("rows", []),
            "uncovered_sessions": tables.get("uncovered_sessions", {}).get("rows", [])}


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
