"""Kind `services`: self-reported service records (national platform layout) with the contract
terms of art. 14. record_no is the unit's own number, or a hash of the row, so a re-import updates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from server.registry import parse, schema
from server.registry.queries import InstrumentRef, lookup_people, unit_instruments, upsert_service_record
from server.registry.sheet import FEN, TENTH, FieldSpec, ImportOptions, KindSpec, Row
from server.store.conn import Conn

# The service record sheet's columns: the instrument (by platform id or the unit's number), the
# registry schema's fields with import headers (server/registry/schema.py), and the contract terms
# the sheet may carry beyond them.
_REQUIRED = ("start_at", "end_at", "service_hours", "user_type")
SERVICE_FIELDS = [
    FieldSpec(
        "instrument", ("平台仪器编号", "所在单位仪器编号", "仪器编号", "单位内部编号", "资产编号"), required=True
    ),
    *(FieldSpec(f.name, f.headers, required=f.name in _REQUIRED) for f in schema.SERVICE_RECORD.fields if f.headers),
    FieldSpec("ip_terms", ("知识产权归属", "知识产权")),
    FieldSpec("confidentiality", ("保密要求", "保密")),
    FieldSpec("liability", ("损害赔偿", "违约责任")),
    FieldSpec("dispute_resolution", ("争议处理",)),
]


WAYS = {k: k for k in schema.WAY} | {"机时": "占用", "送样": "委托"}
USER_TYPES = {str(k): str(k) for k in schema.USER_TYPE} | {
    "内部": "120",
    "校内": "120",
    "对内": "120",
    "本单位": "120",
    "外部": "130",
    "校外": "130",
    "对外": "130",
    "外单位": "130",
}
DIRECTIONS = {str(k): str(k) for k in schema.DIRECTION} | {
    "科学研究": "135",
    "科研": "135",
    "技术开发": "136",
    "研发": "136",
    "教学": "137",
    "其他": "138",
}
SATISFACTION = {
    "非常满意": "5",
    "满意": "4",
    "基本满意": "3",
    "一般": "3",
    "不满意": "2",
    "非常不满意": "1",
    "5": "5",
    "4": "4",
    "3": "3",
    "2": "2",
    "1": "1",
}


def _get(row: list[Any], cols: dict[str, int], key: str) -> Any:
    j = cols.get(key)
    return row[j] if j is not None and j < len(row) else None


def service_row(
    row: list[Any],
    cols: dict[str, int],
    unit_id: str,
    instruments: dict[str, InstrumentRef],
    people: Callable[[str, str], tuple[str | None, str | None]],
) -> tuple[dict[str, Any], list[str]]:
    rec: dict[str, Any] = {"unit_id": unit_id}
    errors: list[str] = []

    def take(key: str, fn: Callable[[Any], Any], label: str, default: Any = None) -> None:
        v = _get(row, cols, key)
        if parse.is_blank(v):
            if default is not None:
                rec[key] = default
            return
        try:
            rec[key] = fn(v)
        except ValueError as e:
            errors.append(f"{label}：{e}")

    ref = parse.text(_get(row, cols, "instrument"))
    inst = instruments.get(ref) or next((r for r in instruments.values() if r.internal_no == ref and ref), None)
    if not ref:
        errors.append("缺少仪器编号")
    elif inst is None:
        errors.append(f"本单位没有编号为“{ref}”的仪器")
    else:
        rec["instrument_id"] = inst.id
    take("start_at", parse.parse_datetime, "开始时间")
    take("end_at", parse.parse_datetime, "结束时间")
    take("service_hours", lambda v: parse.parse_decimal(v, what="服务机时").quantize(TENTH, ROUND_HALF_UP), "服务机时")
    take("amount", lambda v: parse.parse_decimal(v, what="金额").quantize(FEN, ROUND_HALF_UP), "金额", Decimal("0.00"))
    take("sample_count", lambda v: parse.parse_count(v, "样品数"), "样品数")
    take("way", lambda v: parse.parse_choice(v, WAYS, "服务方式"), "服务方式", "其他")
    take("user_type", lambda v: int(parse.parse_choice(v, USER_TYPES, "用户类型")), "用户类型")
    take("direction", lambda v: int(parse.parse_choice(v, DIRECTIONS, "服务方向")), "服务方向", 135)
    take("satisfaction", lambda v: int(parse.parse_choice(v, SATISFACTION, "满意度")), "满意度")
    for key in (
        "content",
        "applicant_name",
        "applicant_org_name",
        "contract_no",
        "ip_terms",
        "confidentiality",
        "liability",
        "dispute_resolution",
        "record_no",
    ):
        take(key, parse.text, key, "")
    for key, label in (
        ("start_at", "开始时间"),
        ("end_at", "结束时间"),
        ("service_hours", "服务机时"),
        ("user_type", "用户类型"),
    ):
        if key not in rec and not any(e.startswith(label) for e in errors):
            errors.append(f"缺少{label}")
    if "start_at" in rec and "end_at" in rec:
        span = (rec["end_at"] - rec["start_at"]).total_seconds() / 3600
        if span <= 0:
            errors.append("结束时间不晚于开始时间")
        elif "service_hours" in rec and float(rec["service_hours"]) > span + 0.05:
            errors.append(f"服务机时 {rec['service_hours']} 超过起止时间跨度 {span:.1f} 小时")
    if not errors:
        user_id, org_id = people(rec["applicant_name"], rec["applicant_org_name"])
        rec["applicant_user_id"], rec["applicant_org_id"] = user_id, org_id
        if not rec["record_no"]:
            basis = "|".join(str(rec[k]) for k in ("instrument_id", "start_at", "end_at", "applicant_name", "amount"))
            rec["record_no"] = "H" + hashlib.sha256(basis.encode()).hexdigest()[:16]
    return rec, errors


People = Callable[[str, str], tuple[str | None, str | None]]


def _load(conn: Conn, unit_id: str, options: ImportOptions) -> tuple[str, dict[str, InstrumentRef], People]:
    return unit_id, unit_instruments(conn, unit_id), lookup_people(conn, None if options.operator else [unit_id])


def _check(row: Row, ctx: tuple[str, dict[str, InstrumentRef], People]) -> tuple[dict[str, Any], list[str], str]:
    rec, errors = service_row(row.cells, row.cols, *ctx)
    return rec, errors, rec.get("record_no", "")


def _write(conn: Conn, rec: dict[str, Any], batch_id: int, ctx: object) -> None:
    upsert_service_record(conn, rec, batch_id)


KIND = KindSpec(
    "services",
    "服务记录",
    "服务记录（合同）：仪器编号、起止时间、服务机时、金额、用户类型（内部 120 / 外部 130）、申请人及单位、合同条款",
    SERVICE_FIELDS,
    _load,
    _check,
    _write,
)
