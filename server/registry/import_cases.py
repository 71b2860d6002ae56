"""Kind `cases`: 典型服务案例, notable results of service to outside units (annex 服务成效).

A case counts only with evidence an expert can check (a DOI, a patent number, a contract or an
enterprise's certificate), so a row without evidence is rejected. The instrument is optional (a case
may draw on several). Re-importing updates by (date, title).
"""

from __future__ import annotations

from typing import Any

from server.registry import parse, queries, schema
from server.registry.queries import InstrumentRef
from server.registry.sheet import FieldSpec, ImportOptions, KindSpec, Row, instrument_of
from server.store.conn import Conn

FIELDS = [
    FieldSpec("title", ("案例名称", "案例标题", "典型案例", "服务案例", "成果名称", "案例", "标题"), required=True),
    FieldSpec("occurred_on", ("日期", "时间", "完成日期", "成果日期", "发表日期", "取得日期"), required=True),
    FieldSpec("instrument", ("平台仪器编号", "所在单位仪器编号", "仪器编号", "单位内部编号", "资产编号")),
    FieldSpec("kind", ("成果类型", "案例类型", "类型", "类别")),
    FieldSpec("beneficiary", ("服务对象", "受益单位", "用户单位", "服务单位", "合作单位")),
    FieldSpec("evidence", ("佐证材料", "证明材料", "支撑材料", "佐证", "证明", "DOI", "专利号"), required=True),
    FieldSpec("description", ("案例简介", "简介", "说明", "成效", "描述", "备注")),
]

CASE_KINDS = {k: k for k in schema.CASE_KIND} | {
    "文章": "论文",
    "期刊": "论文",
    "发明": "专利",
    "实用新型": "专利",
    "企业": "企业成果",
    "产品": "企业成果",
    "技术服务": "企业成果",
    "国家标准": "标准",
    "行业标准": "标准",
}


def _load(conn: Conn, unit_id: str, options: ImportOptions) -> tuple[str, dict[str, InstrumentRef]]:
    return unit_id, queries.unit_instruments(conn, unit_id)


def _check(row: Row, ctx: tuple[str, dict[str, InstrumentRef]]) -> tuple[dict[str, Any], list[str], str]:
    unit_id, instruments = ctx
    rec, errors = row.rec, row.errors
    rec["unit_id"] = unit_id
    instrument_of(row, "instrument", instruments, required=False)
    rec.setdefault("instrument_id", None)
    row.texts("title", "beneficiary", "evidence", "description")
    row.date("occurred_on", "日期")
    row.take("kind", lambda v: parse.parse_choice(v, CASE_KINDS, "成果类型"), "成果类型", "其他")
    if not rec.get("title"):
        errors.append("缺少案例名称")
    row.require("occurred_on", "日期")
    if not rec.get("evidence"):
        errors.append("缺少佐证材料（论文 DOI、专利号、合同编号或企业证明）")
    return rec, errors, f"{rec.get('occurred_on', '')}:{rec.get('title', '')}"


def _write(conn: Conn, rec: dict[str, Any], batch_id: int, ctx: object) -> None:
    queries.upsert_case(conn, rec, batch_id)


KIND = KindSpec(
    "cases",
    "典型服务案例",
    "对外服务典型案例：案例名称、日期、仪器编号（可空）、成果类型（论文/专利/企业成果/标准/其他）、服务对象、佐证材料",
    FIELDS,
    _load,
    _check,
    _write,
)
