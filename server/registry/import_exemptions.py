"""Kind `exemptions`: instruments kept off the platform (art. 13) with the reason and the approval.

An exemption counts for the open rate only once approved (approver, document reference, date);
a row without approval is recorded as a request. A row that names an approver or a document but no
approval date (or the reverse) is rejected: half an approval is neither a request nor an approval.
Re-importing updates: an exemption is the same when its instrument and approval document are (or,
for a request, its instrument and reason). A unit manager's approval (a new one or a change of one)
is a proposal the operator accepts (issue 13); requests are recorded at once.
"""

from __future__ import annotations

from typing import Any

from server.registry import proposals, queries
from server.registry.queries import InstrumentRef
from server.registry.sheet import FieldSpec, ImportOptions, KindSpec, Row, instrument_of
from server.store.conn import Conn

FIELDS = [
    FieldSpec(
        "instrument", ("平台仪器编号", "所在单位仪器编号", "仪器编号", "单位内部编号", "资产编号"), required=True
    ),
    FieldSpec("name", ("仪器名称", "名称")),
    FieldSpec(
        "reason", ("不开放理由", "不纳入平台理由", "不开放原因", "申请理由", "理由", "原因", "说明"), required=True
    ),
    FieldSpec("requested_on", ("申请日期", "申请时间")),
    FieldSpec("approved_by", ("审批部门", "批准部门", "主管部门", "审批单位", "批准单位", "审核部门")),
    FieldSpec("approval_ref", ("批准文号", "审批文号", "批准文件", "审批文件", "文号")),
    FieldSpec("approved_on", ("批准日期", "审批日期", "审核日期", "批准时间")),
    FieldSpec("filed_on", ("备案日期", "科技厅备案日期", "报备日期")),
    FieldSpec("valid_from", ("有效期起", "有效期自", "开始日期", "起始日期", "生效日期")),
    FieldSpec("valid_to", ("有效期至", "有效期止", "截止日期", "结束日期", "到期日期")),
    FieldSpec("revoked_on", ("撤销日期",)),
]


Ctx = tuple[dict[str, InstrumentRef], str, ImportOptions]


def _load(conn: Conn, unit_id: str, options: ImportOptions) -> Ctx:
    return queries.unit_instruments(conn, unit_id), unit_id, options


def _check(row: Row, ctx: Ctx) -> tuple[dict[str, Any], list[str], str]:
    instruments = ctx[0]
    instrument_of(row, "instrument", instruments)
    row.texts("reason", "approved_by", "approval_ref")
    for key, label in (
        ("requested_on", "申请日期"),
        ("approved_on", "批准日期"),
        ("filed_on", "备案日期"),
        ("valid_from", "有效期起"),
        ("valid_to", "有效期至"),
        ("revoked_on", "撤销日期"),
    ):
        row.date(key, label)
    rec, errors = row.rec, row.errors
    if not rec.get("reason"):
        errors.append("缺少不开放理由（第十三条：应有正当理由）")
    has_approver = bool(rec.get("approved_by") or rec.get("approval_ref"))
    if rec.get("approved_on") and not (rec.get("approved_by") and rec.get("approval_ref")):
        errors.append("有批准日期，但缺少审批部门或批准文号")
    elif has_approver and "approved_on" not in rec and not any(e.startswith("批准日期") for e in errors):
        errors.append("有审批部门或批准文号，但缺少批准日期")
    if rec.get("valid_from") and rec.get("valid_to") and rec["valid_to"] < rec["valid_from"]:
        errors.append("有效期至早于有效期起")
    if rec.get("approved_on") and rec.get("requested_on") and rec["approved_on"] < rec["requested_on"]:
        errors.append("批准日期早于申请日期")
    ref = rec.get("approval_ref") or rec.get("reason", "")
    key = f"{rec.get('instrument_id', '')}:{ref}"
    return rec, errors, key


def _write(conn: Conn, rec: dict[str, Any], batch_id: int, ctx: Ctx) -> None:
    _, unit_id, options = ctx
    proposals.exemption(conn, unit_id, rec, options.operator, options.actor, batch_id)


KIND = KindSpec(
    "exemptions",
    "不开放申请",
    "经批准不纳入平台（不开放）的仪器：仪器编号、理由、审批部门、批准文号、批准日期、有效期（第十三条）",
    FIELDS,
    _load,
    _check,
    _write,
)
