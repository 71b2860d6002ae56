"""Kind `instruments`: the unit's instrument ledger (仪器台账) with the national platform's fields.

Instruments are matched by platform id, else by the unit's own number, so a ledger imported again
updates the registry; a column the ledger lacks never blanks what the registry knows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from server.registry import parse, proposals, queries, schema
from server.registry.queries import InstrumentRef, unit_instruments, upsert_instrument
from server.registry.sheet import FEN, TENTH, FieldSpec, ImportOptions, KindSpec, Row
from server.registry.urls import http_url
from server.store.conn import Conn

# The ledger's columns: the registry schema's fields with import headers (server/registry/schema.py).
_REQUIRED = ("name", "original_value")
INSTRUMENT_FIELDS = [FieldSpec(f.name, f.headers, required=f.name in _REQUIRED)
                     for f in schema.INSTRUMENT.fields if f.headers]


SOURCES = {k: k for k in schema.SOURCE} | {"自研": "研制", "捐赠": "赠送", "采购": "购置"}
CATEGORIES = {k: k for k in schema.CATEGORY}
STATUSES = {k: k for k in schema.RUNNING_STATUS} | {"良好": "正常", "完好": "正常"}
SHARING = {k: k for k in schema.SHARING_MODE} | {
    "对外共享": "外部共享",
    "对外开放": "外部共享",
    "内部": "内部共享",
}
FUNDING = {k: k for k in schema.FUNDING} | {"自治区财政": "地方财政", "自筹": "单位自有"}


def _get(row: list[Any], cols: dict[str, int], key: str) -> Any:
    j = cols.get(key)
    return row[j] if j is not None and j < len(row) else None


def _instrument_id(unit_id: str, internal_no: str) -> str:
    candidate = f"{unit_id}-{internal_no}"
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", candidate):
        return candidate
    return f"{unit_id}-{hashlib.sha256(internal_no.encode()).hexdigest()[:12]}"[:64]


def instrument_row(
    row: list[Any], cols: dict[str, int], headers: dict[str, str], unit_id: str, existing: dict[str, InstrumentRef]
) -> tuple[dict[str, Any], list[str]]:
    """The columns to write for one ledger row, or the reasons it cannot be."""
    rec: dict[str, Any] = {}
    errors: list[str] = []

    def take(key: str, fn: Callable[[Any], Any], label: str) -> None:
        v = _get(row, cols, key)
        if key not in cols or parse.is_blank(v):
            return
        try:
            rec[key] = fn(v)
        except ValueError as e:
            errors.append(f"{label}：{e}")

    for key in (
        "name",
        "name_en",
        "classification_code",
        "location",
        "model",
        "manufacturer",
        "country",
        "fee_standard",
        "service_content",
        "main_functions",
        "specs",
        "contact_name",
        "contact_phone",
        "contact_email",
        "internal_no",
    ):
        take(key, parse.text, key)
    take("booking_url", lambda v: http_url(parse.text(v)), "预约服务网址")
    scale = Decimal(10000) if "万" in headers.get("original_value", "") else Decimal(1)
    take(
        "original_value",
        lambda v: parse.parse_decimal(v, scale=scale, what="原值").quantize(FEN, ROUND_HALF_UP),
        "原值",
    )
    take("source", lambda v: parse.parse_choice(v, SOURCES, "仪器来源"), "仪器来源")
    take("category", lambda v: parse.parse_choice(v, CATEGORIES, "仪器类别"), "仪器类别")
    take("running_status", lambda v: parse.parse_choice(v, STATUSES, "运行状态"), "运行状态")
    take("sharing_mode", lambda v: parse.parse_choice(v, SHARING, "共享模式"), "共享模式")
    take("funding_source", lambda v: parse.parse_choice(v, FUNDING, "经费来源"), "经费来源")
    for key, label in (
        ("booked_on", "建账日期"),
        ("accepted_on", "验收日期"),
        ("registered_on", "纳入平台日期"),
        ("retired_on", "报废日期"),
    ):
        take(key, parse.parse_date, label)
    take("rated_hours", lambda v: parse.parse_decimal(v, what="额定机时").quantize(TENTH, ROUND_HALF_UP), "额定机时")
    take("is_open", lambda v: parse.parse_bool(v, "是否开放"), "是否开放")
    if not rec.get("name"):
        errors.append("缺少仪器名称")
    if "original_value" not in rec and not any(e.startswith("原值") for e in errors):
        errors.append("缺少原值")
    if rec.get("rated_hours") == 0:
        errors.append("额定机时必须大于 0")
    if rec.get("accepted_on") and rec.get("retired_on") and rec["retired_on"] <= rec["accepted_on"]:
        errors.append("报废日期早于验收日期")
    given_id = parse.text(_get(row, cols, "id"))
    internal_no = rec.get("internal_no", "")
    if given_id:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", given_id):
            errors.append(f"平台仪器编号“{given_id}”只能含字母、数字、-、_")
        rec["id"] = given_id
    elif internal_no:
        match = next((r for r in existing.values() if r.internal_no == internal_no and r.unit_id == unit_id), None)
        rec["id"] = match.id if match else _instrument_id(unit_id, internal_no)
    else:
        errors.append("缺少仪器编号（平台仪器编号或所在单位仪器编号）")
    owner = existing.get(rec.get("id", ""))
    if owner is not None and owner.unit_id != unit_id:
        errors.append(f"仪器编号 {rec['id']} 已被其他单位使用")  # which unit is not this unit's business
    return rec, errors


Ctx = tuple[str, dict[str, InstrumentRef], ImportOptions]


def _load(conn: Conn, unit_id: str, options: ImportOptions) -> Ctx:
    return unit_id, unit_instruments(conn, None), options  # every unit's: an id must not be taken from another unit


def _check(row: Row, ctx: Ctx) -> tuple[dict[str, Any], list[str], str]:
    unit_id, existing, _ = ctx
    rec, errors = instrument_row(row.cells, row.cols, row.headers, unit_id, existing)
    return rec, errors, rec.get("id", "")


def _write(conn: Conn, rec: dict[str, Any], batch_id: int, ctx: Ctx) -> None:
    """Write the row; a unit manager's change of a figure of an existing instrument is a proposal."""
    unit_id, existing, options = ctx
    if not options.operator and rec["id"] in existing:
        current = queries.instrument_values(conn, rec["id"])
        direct, proposed = proposals.split(schema.INSTRUMENT, rec, current)
        for field, value in proposed.items():
            proposals.propose(conn, unit_id, "instruments", rec["id"], field, current[field], value, options.actor)
        rec = {**direct, "id": rec["id"]}
    upsert_instrument(conn, unit_id, rec)


KIND = KindSpec(
    "instruments",
    "仪器台账",
    "大型科研仪器台账：平台仪器编号或单位内部编号、名称、原值、类别、验收与纳入平台日期等国家平台字段",
    INSTRUMENT_FIELDS,
    _load,
    _check,
    _write,
    one_of=((("id", "internal_no"), "仪器编号"),),
)
