"""Kind `prices`: the published price list (开放共享服务价格目录, art. 12) per instrument.

A row is one charged item of one instrument from a date on: per hour (元/小时, 元/机时), per sample
(元/样) or per item (元/次, 元/项), with the internal rate (own and affiliated units' users) and the
external rate. Rates are typed as people do: 200, ¥200.00, 200元/小时; the basis may come from its
own column, from the rate cell or from the header (校外价格（元/小时）), and must agree where given
twice. Re-importing updates by (instrument, item, valid from); a newer row of the same item ends
the older one where applied (server/evaluation/prices.py).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from server.registry import parse, queries, schema
from server.registry.queries import InstrumentRef
from server.registry.sheet import FEN, FieldSpec, ImportOptions, KindSpec, Row, instrument_of
from server.store.conn import Conn

FIELDS = [
    FieldSpec(
        "instrument", ("平台仪器编号", "所在单位仪器编号", "仪器编号", "单位内部编号", "资产编号"), required=True
    ),
    FieldSpec("name", ("仪器名称", "名称")),
    FieldSpec("item", ("收费项目", "服务项目", "测试项目", "收费内容", "项目名称", "项目")),
    FieldSpec("basis", ("计价单位", "计费单位", "计费方式", "计价方式", "收费单位", "收费方式")),
    FieldSpec(
        "internal_price",
        (
            "校内价格",
            "校内收费",
            "校内收费标准",
            "内部价格",
            "内部收费",
            "内部收费标准",
            "对内收费",
            "对内价格",
            "校内",
        ),
    ),
    FieldSpec(
        "external_price",
        (
            "校外价格",
            "校外收费",
            "校外收费标准",
            "外部价格",
            "外部收费",
            "外部收费标准",
            "对外收费",
            "对外价格",
            "校外",
        ),
    ),
    FieldSpec("valid_from", ("执行日期", "生效日期", "执行时间", "启用日期", "有效期起", "起始日期"), required=True),
    FieldSpec("valid_to", ("截止日期", "失效日期", "有效期至", "停止日期")),
    FieldSpec("published_on", ("发布日期", "公布日期")),
    FieldSpec("note", ("备注", "说明")),
]

# Spellings of the charging basis, in any order: parse.parse_choice tries exact, then contained.
BASES = {k: k for k in schema.PRICE_BASIS} | {
    "机时": "per_hour",
    "小时": "per_hour",
    "时": "per_hour",
    "h": "per_hour",
    "样品": "per_sample",
    "样": "per_sample",
    "个": "per_sample",
    "份": "per_sample",
    "次": "per_item",
    "项": "per_item",
    "件": "per_item",
    "批": "per_item",
}
BASIS_LABELS = {"per_hour": "元/小时", "per_sample": "元/样", "per_item": "元/次"}
DEFAULT_ITEMS = {"per_hour": "机时费", "per_sample": "样品测试费", "per_item": "测试费"}
_RATE_RE = re.compile(r"^(.*?)(?:/|每)(.+)$")


def parse_rate(value: Any, what: str) -> tuple[Decimal, str | None]:
    """A rate cell: the amount and, when the cell says it (200元/小时), the basis."""
    s = parse.text(value) if not isinstance(value, int | float | Decimal) else value
    basis = None
    if isinstance(s, str):
        m = _RATE_RE.match(s.replace(" ", ""))
        if m:
            s, basis = m.group(1), parse.parse_choice(m.group(2), BASES, f"{what}的计价单位")
    return parse.parse_decimal(s, what=what).quantize(FEN, ROUND_HALF_UP), basis


def _header_basis(header: str) -> str | None:
    """The basis a header states in brackets: 校外价格（元/小时）."""
    m = re.search(r"[（(]\s*元?\s*/\s*([^）)]+)[）)]", header)
    if not m:
        return None
    try:
        return parse.parse_choice(m.group(1), BASES, "计价单位")
    except ValueError:
        return None


def _load(conn: Conn, unit_id: str, options: ImportOptions) -> dict[str, InstrumentRef]:
    return queries.unit_instruments(conn, unit_id)


def _check(row: Row, instruments: dict[str, InstrumentRef]) -> tuple[dict[str, Any], list[str], str]:
    rec, errors = row.rec, row.errors
    instrument_of(row, "instrument", instruments)
    row.texts("item", "note")
    row.take("basis", lambda v: parse.parse_choice(v, BASES, "计价单位"), "计价单位")
    row.date("valid_from", "执行日期")
    row.date("valid_to", "截止日期")
    row.date("published_on", "发布日期")
    stated: dict[str, str] = {}
    if "basis" in rec:
        stated["计价单位"] = rec["basis"]
    for key, label in (("internal_price", "校内价格"), ("external_price", "校外价格")):
        v = row.get(key)
        if parse.is_blank(v):
            continue
        try:
            rec[key], basis = parse_rate(v, label)
        except ValueError as e:
            errors.append(f"{label}：{e}")
            continue
        basis = basis or _header_basis(row.headers.get(key, ""))
        if basis:
            stated[label] = basis
    if len(set(stated.values())) > 1:
        errors.append("计价单位不一致：" + "，".join(f"{k} {BASIS_LABELS[v]}" for k, v in stated.items()))
    elif stated:
        rec["basis"] = next(iter(stated.values()))
    elif not any(e.startswith("计价单位") for e in errors):
        errors.append("缺少计价单位（元/小时、元/样或元/次）")
    if "internal_price" not in rec and "external_price" not in rec and not any("价格" in e for e in errors):
        errors.append("校内价格和校外价格至少填一项")
    row.require("valid_from", "执行日期")
    if rec.get("valid_from") and rec.get("valid_to") and rec["valid_to"] < rec["valid_from"]:
        errors.append("截止日期早于执行日期")
    if not rec.get("item") and rec.get("basis") in DEFAULT_ITEMS:
        rec["item"] = DEFAULT_ITEMS[rec["basis"]]
    rec.setdefault("internal_price", None)
    rec.setdefault("external_price", None)
    key = f"{rec.get('instrument_id', '')}:{rec.get('item', '')}:{rec.get('valid_from', '')}"
    return rec, errors, key


def _write(conn: Conn, rec: dict[str, Any], batch_id: int, ctx: object) -> None:
    queries.upsert_price(conn, rec, batch_id)


KIND = KindSpec(
    "prices",
    "收费标准",
    "开放共享服务价格目录：仪器编号、收费项目、计价单位（元/小时、元/样、元/次）、校内价格、校外价格、执行日期（第十二条）",
    FIELDS,
    _load,
    _check,
    _write,
    one_of=((("internal_price", "external_price"), "校内价格或校外价格"),),
)
