"""Registry listings of a unit that the spreadsheet import fills: non-opening exemptions (art. 13),
typical service cases, and the import batches with their results. The listings are the CLI's
`jishi registry list` (server/registry/queries.LISTINGS), so the API, the pages and the CLI show the
same rows. One exemption or case can also be entered here (the import's upsert: the same exemption
document or the same case date + title updates the row), with the import's checks, each naming its
field; every change is audited.

Operators and evaluators read every unit, unit managers their own (other units answer 404);
operators and the unit's manager write. None of these rows names a platform user.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from server.registry import proposals, queries
from server.store.conn import Conn
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.db import rows
from server.web.deps import Db, Who
from server.web.errors import field_error
from server.web.services.registry import listing

router = APIRouter(prefix="/api/v1", tags=["registry"])

Listing = Literal["exemptions", "cases", "imports"]

EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "exemptions": [{"instrument_id": "ua-nmr", "instrument_name": "核磁共振波谱仪", "reason": "涉密科研任务专用",
                    "approved_by": "自治区科技厅", "approval_ref": "内科发〔2025〕12号", "approved_on": "2025-02-10",
                    "valid_from": "2025-01-01", "valid_to": "2025-12-31", "revoked_on": None}],
    "cases": [{"occurred_on": "2025-06-18", "instrument_id": "ua-xrd", "title": "为企业完成新型催化剂物相分析",
               "kind": "企业成果", "beneficiary": "丙科技有限公司", "evidence": "检测报告 BG-2025-031"}],
    "imports": [{"id": 7, "kind": "services", "file_name": "2025服务记录.xlsx", "status": "committed",
                 "rows_total": 120, "rows_accepted": 120, "rows_rejected": 0,
                 "created_at": "2026-01-08T10:12:03+08:00"}],
}


def _route(what: Listing, summary: str) -> None:
    def handler(unit_id: str, who: Who, db: Db) -> list[dict[str, Any]]:
        with db.read() as conn:
            scope.unit(conn, who, unit_id)
            return listing(conn, what, unit_id)

    handler.__name__ = f"list_{what}"
    router.add_api_route(f"/units/{{unit_id}}/{what}", handler, methods=["GET"], summary=summary,
                         responses={200: {"content": {"application/json": {"example": EXAMPLES[what]}}}})


_route("exemptions", "A unit's non-opening exemptions and requests (art. 13; changed by the `exemptions` import)")
_route("cases", "A unit's typical service cases (changed by the `cases` import)")
_route("imports", "A unit's last 50 spreadsheet import batches with their results")


# -- single entries ---------------------------------------------------------------------------------

IdStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["ua-nmr"])]


class ExemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instrument_id: IdStr
    reason: str = Field(min_length=1, max_length=2000, examples=["涉密科研任务专用"])
    requested_on: date | None = Field(default=None, examples=["2025-01-10"])
    approved_by: str = Field(default="", max_length=200, examples=["自治区科技厅"])
    approval_ref: str = Field(default="", max_length=200, examples=["内科发〔2025〕12号"])
    approved_on: date | None = Field(default=None, examples=["2025-02-10"])
    filed_on: date | None = None
    valid_from: date | None = Field(default=None, examples=["2025-01-01"])
    valid_to: date | None = Field(default=None, examples=["2025-12-31"])
    revoked_on: date | None = None


class CaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    occurred_on: date = Field(examples=["2025-06-18"])
    title: str = Field(min_length=1, max_length=200, examples=["为企业完成新型催化剂物相分析"])
    kind: Literal["论文", "专利", "企业成果", "标准", "其他"] = "其他"
    beneficiary: str = Field(default="", max_length=200, examples=["丙科技有限公司"])
    evidence: str = Field(min_length=1, max_length=2000, examples=["检测报告 BG-2025-031"])
    description: str = Field(default="", max_length=2000)
    instrument_id: IdStr | None = None


def _own_instrument(conn: Conn, unit_id: str, instrument_id: str) -> None:
    row = rows(conn, "SELECT unit_id FROM instruments WHERE id = %s", (instrument_id,))
    if not row or row[0]["unit_id"] != unit_id:
        raise field_error("instrument_id", f"not an instrument of unit {unit_id} / 不是本单位的仪器")


def _writable(conn: Conn, who: Principal, unit_id: str) -> None:
    require_role(who, "operator", "unit_manager")
    scope.unit(conn, who, unit_id)
    scope.writable_unit(who, unit_id)


def check_exemption(body: ExemptionIn) -> None:
    """The import's rules (server/registry/import_exemptions.py), each naming its field."""
    if not body.reason.strip():
        raise field_error("reason", "required (art. 13: a proper reason) / 缺少不开放理由")
    if body.approved_on is not None:
        for f in ("approved_by", "approval_ref"):
            if not getattr(body, f).strip():
                raise field_error(f, "an approval needs the approver and the document"
                                     " / 有批准日期，须填审批部门和批准文号")
    elif body.approved_by.strip() or body.approval_ref.strip():
        raise field_error("approved_on", "the approval date is missing / 有审批部门或批准文号，但缺少批准日期")
    if body.valid_from and body.valid_to and body.valid_to < body.valid_from:
        raise field_error("valid_to", "before valid_from / 有效期至早于有效期起")
    if body.approved_on and body.requested_on and body.approved_on < body.requested_on:
        raise field_error("approved_on", "before the request / 批准日期早于申请日期")


@router.post("/units/{unit_id}/exemptions", status_code=201,
             summary="File an exemption request, or record its approval (art. 13; the same document updates it)",
             description="A unit manager's approval is a proposal (202, the proposal) until the operator accepts it.",
             responses={201: {"content": {"application/json": {"example": EXAMPLES["exemptions"][0]}}},
                        202: {"content": {"application/json": {"example": {
                            "id": 14, "unit_id": "ua", "target": "instrument_exemptions", "row_key": "ua-nmr",
                            "field": "内科发〔2025〕12号", "before": None, "after": {"instrument_id": "ua-nmr"},
                            "status": "pending", "proposed_by": "account:mgr-a"}}}}})
def create_exemption(unit_id: str, body: ExemptionIn, who: Who, db: Db) -> Any:
    check_exemption(body)
    rec = body.model_dump()
    rec["reason"] = rec["reason"].strip()
    with db.write(who.actor) as conn:
        _writable(conn, who, unit_id)
        _own_instrument(conn, unit_id, body.instrument_id)
        pid = proposals.exemption(conn, unit_id, rec, who.role == "operator", who.actor)
        if pid is not None:
            return JSONResponse(jsonable_encoder(proposals.listing(conn, None, None, pid)[0]), status_code=202)
        found = [r for r in listing(conn, "exemptions", unit_id) if r["instrument_id"] == body.instrument_id
                 and r["approval_ref"] == rec["approval_ref"] and (rec["approval_ref"] or r["reason"] == rec["reason"])]
    return found[0]


@router.post("/units/{unit_id}/cases", status_code=201,
             summary="Record a typical service case (the same date and title updates it)",
             responses={201: {"content": {"application/json": {"example": EXAMPLES["cases"][0]}}}})
def create_case(unit_id: str, body: CaseIn, who: Who, db: Db) -> dict[str, Any]:
    if not body.title.strip():
        raise field_error("title", "required / 必填")
    if not body.evidence.strip():
        raise field_error("evidence", "required: DOI, patent number, report... / 须有佐证材料")
    rec = body.model_dump() | {"unit_id": unit_id, "title": body.title.strip()}
    with db.write(who.actor) as conn:
        _writable(conn, who, unit_id)
        if body.instrument_id is not None:
            _own_instrument(conn, unit_id, body.instrument_id)
        queries.upsert_case(conn, rec, None)
        found = [r for r in listing(conn, "cases", unit_id) if r["title"] == rec["title"]
                 and r["occurred_on"] == body.occurred_on]
    return found[0]
