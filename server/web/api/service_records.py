"""Self-reported service records (服务记录) of a unit. Models from the registry schema, writes
through the data layer; evaluators see applicants as pseudonyms (art. 17)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from server.registry import queries, schema
from server.store.times import TZ
from server.web import scope
from server.web.auth import Principal
from server.web.db import one, rows
from server.web.deps import Db, Who
from server.web.errors import field_error, not_found

router = APIRouter(prefix="/api/v1", tags=["registry"])

if TYPE_CHECKING:
    ServiceRecordIn = schema.Model
    ServiceRecordPatch = schema.Model
else:
    ServiceRecordIn = schema.api_model("ServiceRecordIn", schema.SERVICE_RECORD, "create")
    ServiceRecordPatch = schema.api_model("ServiceRecordPatch", schema.SERVICE_RECORD, "patch")

_SR_COLS = ("id, unit_id, instrument_id, record_no, start_at, end_at, service_hours, amount, content, way,"
            " user_type, direction, applicant_user_id, applicant_name, applicant_org_id, applicant_org_name,"
            " satisfaction, contract_no, sample_count, import_batch_id, created_at")


def _sr_view(p: Principal, pseudo: Any, r: dict[str, Any]) -> dict[str, Any]:
    if p.sees_names:
        return r
    out = dict(r)
    out["applicant_user_id"] = pseudo.person(r["applicant_user_id"], None, None) or None
    out["applicant_name"] = None
    return out


@router.get("/service-records", summary="Self-reported service records (pseudonymous for evaluators)")
def list_service_records(
    who: Who,
    db: Db,
    unit_id: Annotated[str | None, Query(max_length=64)] = None,
    instrument_id: Annotated[str | None, Query(max_length=64)] = None,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict[str, Any]]:
    with db.read() as conn:
        if unit_id is not None:
            scope.unit(conn, who, unit_id)
        if instrument_id is not None:
            scope.instrument(conn, who, instrument_id)
        found = rows(
            conn,
            f"SELECT {_SR_COLS} FROM service_records WHERE (%(s)s::text[] IS NULL OR unit_id = ANY(%(s)s::text[]))"
            " AND (%(u)s::text IS NULL OR unit_id = %(u)s) AND (%(i)s::text IS NULL OR instrument_id = %(i)s)"
            " AND (%(y)s::int IS NULL OR start_at >= make_timestamptz(%(y)s, 1, 1, 0, 0, 0, 'Asia/Shanghai')"
            "      AND start_at < make_timestamptz(%(y)s + 1, 1, 1, 0, 0, 0, 'Asia/Shanghai'))"
            " ORDER BY start_at, id LIMIT %(l)s OFFSET %(o)s",
            {"s": who.unit_scope(), "u": unit_id, "i": instrument_id, "y": year, "l": limit, "o": offset},
        )
        pseudo = scope.pseudonymizer(conn) if not who.sees_names else None
        return [_sr_view(who, pseudo, r) for r in found]


def _aware(t: datetime) -> datetime:
    """A time without zone is Asia/Shanghai local time (as people type it)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=TZ)


@router.post("/service-records", status_code=201, summary="Add a service record (own unit)")
def create_service_record(body: ServiceRecordIn, who: Who, db: Db) -> dict[str, Any]:
    values = body.model_dump()
    values["start_at"], values["end_at"] = _aware(values["start_at"]), _aware(values["end_at"])
    if values["end_at"] <= values["start_at"]:
        raise field_error("end_at", "must be after start_at / 结束时间须晚于开始时间")
    with db.write(who.actor) as conn:
        inst = scope.instrument(conn, who, values["instrument_id"], write=True)
        scope.writable_unit(who, inst["unit_id"])
        _applicant(conn, who, values)
        got = queries.insert_row(conn, schema.SERVICE_RECORD, {**values, "unit_id": inst["unit_id"]},
                                 returning=_SR_COLS)
    assert got is not None
    return got


def _applicant(conn: Any, who: Principal, values: dict[str, Any]) -> None:
    """A unit names as applicant only a person it may see already (not another unit's, by id)."""
    uid = values.get("applicant_user_id")
    if uid is not None and not queries.person_visible(conn, uid, who.unit_scope()):
        raise field_error("applicant_user_id", "no such person / 用户不存在")


def _record(conn: Any, who: Principal, record_id: int) -> dict[str, Any]:
    row = one(conn, "SELECT unit_id, start_at, end_at FROM service_records WHERE id = %s", (record_id,))
    if row is None or not who.can_read_unit(row["unit_id"]):
        raise not_found("what.service_record", record_id)
    scope.writable_unit(who, row["unit_id"])
    return row


@router.delete("/service-records/{record_id}", status_code=204, summary="Remove a service record (own unit)")
def delete_service_record(record_id: int, who: Who, db: Db) -> None:
    with db.write(who.actor) as conn:
        _record(conn, who, record_id)
        queries.delete_row(conn, schema.SERVICE_RECORD, "id", record_id)


@router.patch("/service-records/{record_id}", summary="Change a service record (own unit)")
def patch_service_record(record_id: int, body: ServiceRecordPatch, who: Who, db: Db) -> dict[str, Any]:
    changes = schema.with_changes(schema.SERVICE_RECORD, body)
    with db.write(who.actor) as conn:
        row = _record(conn, who, record_id)
        _applicant(conn, who, changes)
        if "instrument_id" in changes:
            inst = scope.instrument(conn, who, changes["instrument_id"], write=True)
            if inst["unit_id"] != row["unit_id"]:
                raise field_error("instrument_id", "an instrument of the record's unit / 须为本单位仪器")
        for k in ("start_at", "end_at"):
            if k in changes:
                changes[k] = _aware(changes[k])
        start, end = changes.get("start_at", row["start_at"]), changes.get("end_at", row["end_at"])
        if end <= start:
            raise field_error("end_at", "must be after start_at / 结束时间须晚于开始时间")
        queries.update_row(conn, schema.SERVICE_RECORD, "id", record_id, changes)
        got = one(conn, f"SELECT {_SR_COLS} FROM service_records WHERE id = %s", (record_id,))
    assert got is not None
    return got
