"""Assemble what evaluators read: a unit's report and the region's score sheet, as tables.

A report is a list of tables (Chinese titles and headers, typed columns) plus a summary; the XLSX
workbook and the JSON file are two renderings of the same object, so they cannot disagree.
Users appear only as pseudonyms (art. 17).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from server import clock
from server.evaluation import compliance, prices, reconciliation, rubric, sampling
from server.evaluation.indicators import (
    CLASSES,
    Evaluation,
    HourSplit,
    InstrumentFigures,
    Ratio,
    compute,
    tune,
)
from server.evaluation.period import Period, local_iso
from server.evaluation.privacy import Pseudonymizer
from server.evaluation.subsidy import Subsidy, post_subsidy
from server.store.conn import Conn

Kind = Literal["text", "int", "hours", "ratio", "money", "date", "datetime", "bool"]

CLASS_LABELS = {"live": "实时核验", "spool": "补传核验", "unverified": "未核验"}
WAYS = {"占用": "占用", "技术": "技术", "委托": "委托", "远程": "远程", "其他": "其他"}
DIRECTIONS = {135: "科学研究", 136: "技术开发", 137: "教学", 138: "其他"}
USER_TYPES = {120: "内部", 130: "外部"}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"


@dataclass
class Table:
    key: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # a report built for a page (unit_report(rows=N, offset=K)): `rows` holds N rows of a longer list
    # of `total` rows, from the K-th (`offset`; total None: `rows` is the whole list)
    total: int | None = None
    offset: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "title": self.title,
            "columns": [{"key": c.key, "label": c.label, "kind": c.kind} for c in self.columns],
            "rows": [{c.key: _json(row.get(c.key)) for c in self.columns} for row in self.rows],
            "notes": self.notes,
        }
        if self.total is not None:  # built for a page: says which of `total` rows `rows` are
            out["total"], out["offset"] = self.total, self.offset
        return out


@dataclass
class Report:
    title: str
    period: Period
    generated_at: datetime
    summary: list[tuple[str, str, Any, Kind]]  # key, label, value, kind
    tables: list[Table]
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable extras for the JSON

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "period": self.period.label,
            "period_start": self.period.start.isoformat(),
            "period_end_exclusive": self.period.end.isoformat(),
            "timezone": "Asia/Shanghai",
            "generated_at": local_iso(self.generated_at),
            "summary": {k: {"label": label, "value": _json(v)} for k, label, v, _ in self.summary},
            "tables": {t.key: t.as_dict() for t in self.tables},
            **self.data,
        }


def _json(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return local_iso(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, float):
        return round(v, 6)
    return v


def _split_columns(prefix: str, label: str) -> list[Column]:
    return [Column(f"{prefix}_{c}", f"{label}（{CLASS_LABELS[c]}）", "hours") for c in CLASSES] + [
        Column(f"{prefix}_verified", f"{label}（核验合计）", "hours"),
        Column(f"{prefix}_total", f"{label}（含未核验）", "hours"),
    ]


def _split_values(prefix: str, h: HourSplit) -> dict[str, float]:
    return {
        f"{prefix}_live": h.live,
        f"{prefix}_spool": h.spool,
        f"{prefix}_unverified": h.unverified,
        f"{prefix}_verified": h.verified,
        f"{prefix}_total": h.total,
    }


def _ratio_values(prefix: str, r: Ratio) -> dict[str, float | None]:
    return {f"{prefix}_verified": r.verified, f"{prefix}_all": r.including_unverified}


def _ratio_columns(prefix: str, label: str) -> list[Column]:
    return [
        Column(f"{prefix}_verified", f"{label}（仅核验数据）", "ratio"),
        Column(f"{prefix}_all", f"{label}（含未核验数据）", "ratio"),
    ]


# -- tables -------------------------------------------------------------------------------------

_ID_COLS = [Column("id", "仪器编号"), Column("name", "仪器名称")]


def open_rate_table(figures: Sequence[InstrumentFigures]) -> Table:
    t = Table(
        "open_rate",
        "开放率",
        [
            *_ID_COLS,
            Column("original_value", "原值（元）", "money"),
            Column("registered_on", "纳入平台日期", "date"),
            Column("sharing_mode", "共享方式"),
            Column("open", "已开放", "bool"),
            Column("exempted", "经批准不开放", "bool"),
            Column("counted", "计入应开放总量", "bool"),
        ],
        notes=[
            "开放率 = 纳入平台且开放（外部共享）的应开放仪器数 / 应开放仪器数；应开放 = 原值 30 万元及以上、"
            "评价期内在用、且无经批准的不开放申请（第十三条）"
        ],
    )
    for f in figures:
        if f.in_scope:
            t.rows.append(
                {
                    "id": f.id,
                    "name": f.name,
                    "original_value": f.original_value,
                    "registered_on": f.registered_on,
                    "sharing_mode": f.sharing_mode,
                    "open": f.open,
                    "exempted": f.exempted,
                    "counted": f.evaluated,
                }
            )
    return t


def utilization_table(figures: Sequence[InstrumentFigures]) -> Table:
    t = Table(
        "utilization",
        "利用率",
        [
            *_ID_COLS,
            Column("category", "类别"),
            Column("service_days", "在用天数", "int"),
            Column("rated_hours", "额定机时", "hours"),
            *_split_columns("running", "运行机时"),
            *_ratio_columns("utilization", "利用率"),
        ],
        notes=[
            "利用率 = 运行机时 / 额定机时；额定机时默认通用 1400 小时/年、专用 800 小时/年，按在用天数折算",
            "实时核验：记录及时到达；补传核验：断网后由终端补传且签名链完整；未核验：终端未在线期间或手工登记",
        ],
    )
    for f in figures:
        if f.evaluated:
            t.rows.append(
                {
                    "id": f.id,
                    "name": f.name,
                    "category": f.category,
                    "service_days": f.service_days,
                    "rated_hours": f.rated_hours,
                    **_split_values("running", f.running),
                    **_ratio_values("utilization", f.utilization),
                }
            )
    return t


def sharing_table(figures: Sequence[InstrumentFigures]) -> Table:
    t = Table(
        "sharing",
        "共享率",
        [
            *_ID_COLS,
            *_split_columns("external", "对外服务机时"),
            Column("internal_total", "内部使用机时", "hours"),
            Column("unattributed_total", "未能归属用户的机时", "hours"),
            Column("running_total", "运行机时（含未核验）", "hours"),
            *_ratio_columns("sharing", "共享率"),
        ],
        notes=[
            "共享率 = 对外服务机时 / 运行机时；对外 = 使用者所属单位既非本单位也非关联单位；"
            "未登录或身份未映射的机时不计为对外"
        ],
    )
    for f in figures:
        if f.evaluated:
            t.rows.append(
                {
                    "id": f.id,
                    "name": f.name,
                    **_split_values("external", f.external),
                    "internal_total": f.internal.total,
                    "unattributed_total": f.unattributed.total,
                    "running_total": f.running.total,
                    **_ratio_values("sharing", f.sharing),
                }
            )
    return t


def revenue_table(
    conn: Conn, period: Period, unit_id: str, pseudonyms: Pseudonymizer, limit: int | None = None, offset: int = 0
) -> Table:
    """The unit's external records of the period; `limit`: only that many from the `offset`-th, with
    the count of all."""
    t = Table(
        "revenue",
        "服务收入",
        [
            Column("record_no", "服务记录编号"),
            Column("instrument_id", "仪器编号"),
            Column("start_at", "开始时间", "datetime"),
            Column("end_at", "结束时间", "datetime"),
            Column("service_hours", "服务机时（自报）", "hours"),
            Column("amount", "金额（元）", "money"),
            Column("way", "服务方式"),
            Column("direction", "服务方向"),
            Column("applicant", "申请人（假名）"),
            Column("applicant_org", "申请人单位"),
            Column("contract_no", "合同编号"),
        ],
        notes=["服务收入 = 评价期内用户类型为 130（外部）的服务记录金额合计"],
    )
    where = " FROM service_records WHERE unit_id = %s AND user_type = 130 AND start_at >= %s AND start_at < %s"
    args = (unit_id, period.t0, period.t1)
    rows = conn.execute(
        "SELECT record_no, instrument_id, start_at, end_at, service_hours, amount, way, direction,"
        " applicant_user_id, applicant_name, applicant_org_name, contract_no" + where + " ORDER BY start_at, id"
        " LIMIT %s OFFSET %s",
        (*args, limit, offset if limit is not None else 0),
    ).fetchall()
    if limit is not None:
        t.offset = offset
        # two statements: the page from the (unit, start) index, the count from it (a count over
        # the page's statement would read and sort every row: 13 ms against 5 for the unit of 9,296)
        t.total = conn.execute("SELECT count(*)" + where, args).fetchone()[0]  # type: ignore[index]
    for no, inst, a, b, hours, amount, way, direction, user, name, org, contract in rows:
        t.rows.append(
            {
                "record_no": no,
                "instrument_id": inst,
                "start_at": a,
                "end_at": b,
                "service_hours": hours,
                "amount": amount,
                "way": way,
                "direction": DIRECTIONS.get(direction, str(direction)),
                "applicant": applicant_pseudonym(pseudonyms, user, name),
                "applicant_org": org,
                "contract_no": contract,
            }
        )
    return t


def applicant_pseudonym(pseudonyms: Pseudonymizer, user_id: str | None, name: str) -> str:
    if user_id:
        return pseudonyms.user(user_id)
    return pseudonyms.identity("name", name) if name else ""


def cases_table(conn: Conn, period: Period, unit_id: str) -> Table:
    t = Table(
        "cases",
        "对外服务案例",
        [
            Column("occurred_on", "日期", "date"),
            Column("instrument_id", "仪器编号"),
            Column("title", "案例"),
            Column("kind", "类型"),
            Column("beneficiary", "服务对象"),
            Column("evidence", "佐证材料"),
            Column("description", "说明"),
        ],
    )
    for row in conn.execute(
        "SELECT occurred_on, instrument_id, title, kind, beneficiary, evidence, description FROM service_cases"
        " WHERE unit_id = %s AND occurred_on >= %s AND occurred_on < %s ORDER BY occurred_on, id",
        (unit_id, period.start, period.end),
    ):
        t.rows.append(dict(zip([c.key for c in t.columns], row, strict=True)))
    return t


def reconciliation_tables(rc: reconciliation.Reconciliation, unit_id: str) -> list[Table]:
    may = reconciliation.MAY_SUPPORT_LABEL
    recs = Table(
        "reconciliation",
        "服务记录核对（差异）",
        [
            Column("record_no", "服务记录编号"),
            Column("instrument_id", "仪器编号"),
            Column("start_at", "开始时间", "datetime"),
            Column("end_at", "结束时间", "datetime"),
            Column("user_type", "用户类型"),
            Column("applicant", "申请人（假名）"),
            Column("claimed_hours", "自报机时", "hours"),
            Column("attributed_hours", "归属申请方的运行机时", "hours"),
            Column("may_support_hours", f"未能归属用户的运行机时（{may}）", "hours"),
            Column("own_unit_hours", "本单位/关联单位用户运行机时（不支持对外记录）", "hours"),
            Column("other_hours", "其他用户运行机时", "hours"),
            Column("unwatched_hours", "时段内终端离线时长", "hours"),
            Column("may_support_used", f"仅由“{may}”机时支持的自报机时", "hours"),
            Column("measured_verified", "实测运行机时（核验）", "hours"),
            Column("measured_unverified", "实测运行机时（未核验）", "hours"),
            Column("sessions", "时段内登录次数", "int"),
            Column("applicant_seen", "申请人登录", "bool"),
            Column("unverifiable", "无法核实机时", "hours"),
            Column("contradicted", "多报机时", "hours"),
            Column("type_mismatch", "申请单位实为本单位/关联单位", "bool"),
            Column("status", "结论"),
        ],
        notes=[
            "按使用者归属核对：对外（130）服务记录只由申请单位用户的运行机时支持；内部（120）服务记录只由本单位及"
            f"关联单位用户的运行机时支持；未登录或身份未映射的运行机时单列为“{may}”；本单位及关联单位用户的运行机时"
            "在任何情况下都不支持对外服务记录",
            f"多报机时 = 自报机时超出“归属申请方 + {may}”机时、且终端在线可证实的部分；"
            f"差额不超过 {rc.tolerance_h} 小时视为一致",
            "无法核实机时 = 自报机时超出上述机时、但在时段内终端离线时长之内的部分",
        ],
    )
    consistent = 0
    for r in rc.records:
        if r.unit_id != unit_id:
            continue
        if r.status == "ok" and not r.type_mismatch and r.may_support_used <= rc.tolerance_h:
            consistent += 1
            continue
        status = reconciliation.STATUS_LABELS[r.status]
        if r.status == "ok" and r.may_support_used > rc.tolerance_h:
            status += f"（依赖{may}机时）"
        recs.rows.append(
            {
                **r.fields(r.start_at, r.end_at),
                "user_type": USER_TYPES.get(r.user_type, str(r.user_type)),
                "status": status,
            }
        )
    if rc.listed is not None and rc.consistent is not None:  # built for a page: some rows only
        recs.total, recs.offset, consistent = rc.listed, rc.offset, rc.consistent
    recs.notes.insert(
        0, f"列出结论不是“一致”、依赖“{may}”机时或用户类型存疑的记录；其余 {consistent} 条服务记录与归属机时一致"
    )
    inst = Table(
        "uncovered",
        "无服务记录的对外使用",
        [
            Column("instrument_id", "仪器编号"),
            Column("external_verified", "对外运行机时（核验）", "hours"),
            Column("external_unverified", "对外运行机时（未核验）", "hours"),
            Column("uncovered_verified", "无服务记录（核验）", "hours"),
            Column("uncovered_unverified", "无服务记录（未核验）", "hours"),
        ],
        notes=[
            "对外用户的运行机时中，不在任何外部（130）服务记录时段内的部分（同一仪器服务记录时段相互重叠时按重叠计，"
            "差额只会偏小）；未核验部分含手工登记"
        ],
    )
    inst.rows = [i.as_dict() for i in rc.instruments if i.unit_id == unit_id]
    sess = Table(
        "uncovered_sessions",
        "无服务记录的对外使用明细",
        [
            Column("instrument_id", "仪器编号"),
            Column("session_id", "登录编号"),
            Column("user", "用户（假名）"),
            Column("start_at", "开始时间", "datetime"),
            Column("external_verified", "对外运行机时（核验）", "hours"),
            Column("uncovered_verified", "无服务记录（核验）", "hours"),
            Column("uncovered_unverified", "无服务记录（未核验）", "hours"),
        ],
    )
    sess.rows = [{**s.as_dict(), "start_at": s.start_at} for s in rc.sessions if s.unit_id == unit_id]
    return [recs, inst, sess]


def fee_table(fees: prices.FeeChecks | None, unit_id: str) -> Table:
    """Service records whose fee differs from the price list in force on their date (art. 12)."""
    t = Table(
        "fees",
        "收费核对",
        [
            Column("record_no", "服务记录编号"),
            Column("instrument_id", "仪器编号"),
            Column("start_at", "开始时间", "datetime"),
            Column("user_type", "用户类型"),
            Column("item", "收费项目"),
            Column("basis", "计价单位"),
            Column("rate", "公布单价（元）", "money"),
            Column("quantity", "计费数量（机时或样品数）", "hours"),
            Column("expected", "按收费标准应收（元）", "money"),
            Column("amount", "登记金额（元）", "money"),
            Column("difference", "差额（元）", "money"),
            Column("finding", "结论"),
        ],
    )
    if fees is None:
        return t
    u = fees.units.get(unit_id, prices.UnitFees(unit_id))
    t.notes = [
        "应收 = 服务日期当天执行的收费标准 × 服务记录的机时（元/小时）或样品数（元/样、元/次）；"
        "内部用户（120）按校内价格，外部用户（130）按校外价格；有多个收费项目时取最接近的一项",
        f"差额 = 登记金额 − 应收，绝对值不超过 {fees.tolerance} 元视为一致；差额为正：高于公布价格，为负：低于公布价格",
        f"共核对 {u.checked} 条服务记录，{u.differing} 条与收费标准不符；"
        f"{u.without_price} 条无适用的收费标准（未核对）",
    ]
    for r in fees.records:
        if r.unit_id != unit_id:
            continue
        t.rows.append(
            {
                "record_no": r.record_no,
                "instrument_id": r.instrument_id,
                "start_at": r.start_at,
                "user_type": USER_TYPES.get(r.user_type, str(r.user_type)),
                "item": r.item,
                "basis": prices.BASIS_LABELS.get(r.basis, r.basis),
                "rate": r.rate,
                "quantity": float(r.quantity),
                "expected": r.expected,
                "amount": r.amount,
                "difference": r.difference,
                "finding": "收费与公布的收费标准不符",
            }
        )
    return t


def revenue_at_risk_table(items: Sequence[prices.RevenueAtRisk]) -> Table:
    """Evidence beside 服务收入: what measured external use without a record would have cost."""
    t = Table(
        "revenue_at_risk",
        "按收费标准估算的未登记服务收入",
        [
            Column("instrument_id", "仪器编号"),
            Column("uncovered_verified", "无服务记录的对外机时（核验）", "hours"),
            Column("uncovered_unverified", "无服务记录的对外机时（未核验）", "hours"),
            Column("rate", "校外机时单价（元/小时）", "money"),
            Column("estimate_verified", "按收费标准估算的未登记服务收入（核验）", "money"),
            Column("estimate_all", "按收费标准估算的未登记服务收入（含未核验）", "money"),
            Column("note", "说明"),
        ],
        notes=[
            "估算 = 无服务记录的对外运行机时 × 评价期内执行的校外机时单价（期内调价时取最低价，估算只会偏小）",
            "仅为佐证：服务收入指标仍按外部（130）服务记录的金额合计计算",
        ],
    )
    for i in items:
        note = "无公布的校外机时收费标准" if i.rate is None else ("期内调价，按最低价估算" if i.rate_changed else "")
        t.rows.append(
            {
                "instrument_id": i.instrument_id,
                "uncovered_verified": i.uncovered_verified,
                "uncovered_unverified": i.uncovered_unverified,
                "rate": i.rate,
                "estimate_verified": i.estimate_verified,
                "estimate_all": i.estimate_all,
                "note": note,
            }
        )
    return t


def compliance_table(findings: Sequence[compliance.Finding], cal: compliance.WorkdayCalendar) -> Table:
    t = Table(
        "compliance",
        "合规检查",
        [
            Column("rule", "问题"),
            Column("article", "依据"),
            Column("instrument_id", "仪器编号"),
            Column("agent_id", "采集终端"),
            Column("detail", "说明"),
            Column("days", "天数", "int"),
            Column("calendar_note", "工作日口径"),
        ],
    )
    for f in findings:
        t.rows.append({**f.as_dict(), "rule": compliance.RULE_LABELS[f.rule]})
    if cal.note():
        t.notes.append(cal.note())
    return t


def score_table(sheet: rubric.ScoreSheet) -> Table:
    t = Table(
        "score",
        "评分",
        [
            Column("group", "一级指标"),
            Column("label", "二级指标"),
            Column("value", "指标值"),
            Column("max_points", "满分", "hours"),
            Column("computed", "计算得分", "hours"),
            Column("override", "专家评分", "hours"),
            Column("points", "得分", "hours"),
            Column("note", "专家意见"),
            Column("expert", "专家"),
        ],
        notes=[f"评分细则：{sheet.rubric}；指标口径：{'仅核验数据' if sheet.basis == 'verified' else '含未核验数据'}"],
    )
    for line in sheet.lines:
        t.rows.append(line.as_dict())
    t.rows.append(
        {
            "group": "合计",
            "points": sheet.total,
            "label": sheet.grade if sheet.complete else f"{sheet.grade}（待专家评分）",
        }
    )
    return t


def instruments_table(conn: Conn, figures: Sequence[InstrumentFigures]) -> Table:
    cols = [
        ("id", "仪器编号", "text"),
        ("name", "中文名称", "text"),
        ("name_en", "英文名称", "text"),
        ("internal_no", "单位内部编号", "text"),
        ("classification_code", "分类编码", "text"),
        ("location", "安放地址", "text"),
        ("original_value", "原值（元）", "money"),
        ("source", "仪器来源", "text"),
        ("category", "类别", "text"),
        ("running_status", "运行状态", "text"),
        ("sharing_mode", "共享方式", "text"),
        ("model", "规格型号", "text"),
        ("manufacturer", "生产制造商", "text"),
        ("country", "产地国别", "text"),
        ("booked_on", "建账日期", "date"),
        ("accepted_on", "验收日期", "date"),
        ("registered_on", "纳入平台日期", "date"),
        ("retired_on", "报废日期", "date"),
        ("funding_source", "主要购置经费来源", "text"),
        ("fee_standard", "收费标准", "text"),
        ("service_content", "服务内容", "text"),
        ("booking_url", "预约网址", "text"),
        ("contact_name", "联系人", "text"),
        ("contact_phone", "联系电话", "text"),
    ]
    t = Table(
        "instruments",
        "仪器明细",
        [Column(k, label, kind) for k, label, kind in cols]  # type: ignore[arg-type]
        + [
            Column("rated_hours", "额定机时", "hours"),
            Column("running_total", "年运行机时（含未核验）", "hours"),
            Column("running_verified", "年运行机时（核验）", "hours"),
            Column("external_verified", "年对外服务机时（核验）", "hours"),
            Column("has_agent", "采集终端", "bool"),
        ],
    )
    ids = [f.id for f in figures]
    by_id = {f.id: f for f in figures}
    names = [k for k, _, _ in cols]
    for row in conn.execute(f"SELECT {', '.join(names)} FROM instruments WHERE id = ANY (%s) ORDER BY id", (ids,)):
        rec = dict(zip(names, row, strict=True))
        f = by_id[rec["id"]]
        rec.update(
            rated_hours=f.rated_hours,
            running_total=f.running.total,
            running_verified=f.running.verified,
            external_verified=f.external.verified,
            has_agent=f.has_agent,
        )
        t.rows.append(rec)
    return t


# -- the reports --------------------------------------------------------------------------------


def unit_subsidy(
    conn: Conn, rb: rubric.Rubric, unit_id: str, sheet: rubric.ScoreSheet, revenue: Decimal, period: Period
) -> Subsidy:
    row = conn.execute(
        "SELECT reason FROM unit_sanctions WHERE unit_id = %s AND %s BETWEEN from_year AND to_year LIMIT 1",
        (unit_id, period.end.year),
    ).fetchone()
    return post_subsidy(
        sheet.grade, revenue, coefficients=rb.coefficients, cap=rb.cap, sanction=row[0] if row else None
    )


def unit_report(
    conn: Conn,
    period: Period,
    unit_id: str,
    rb: rubric.Rubric,
    pseudonyms: Pseudonymizer,
    *,
    as_of: datetime | None = None,
    silent_days: int = compliance.DEFAULT_SILENT_DAYS,
    tolerance_h: float = reconciliation.DEFAULT_TOLERANCE_H,
    now: datetime | None = None,
    precomputed: bool = True,
    rows: int | None = None,
    offset: int = 0,
) -> Report:
    """The unit's report. `rows`: for a page, the long per-record lists (service records checked,
    revenue) hold only `rows` rows from the `offset`-th, each with its `total`; every figure, note
    and other table is the same as the full report's (the XLSX, JSON and evidence use the full one)."""
    tune(conn)
    ev = compute(conn, period, [unit_id], precomputed=precomputed)
    if unit_id not in ev.units:
        raise LookupError(f"unit {unit_id!r} does not exist")
    unit = ev.units[unit_id]
    figures = ev.unit_instruments(unit_id)
    rc = reconciliation.reconcile(
        conn, ev, pseudonyms, [unit_id], tolerance_h=tolerance_h, precomputed=precomputed, rows=rows, offset=offset
    )
    at_risk = prices.revenue_at_risk(conn, period, [i for i in rc.instruments if i.unit_id == unit_id])
    fees = rc.fees.units.get(unit_id, prices.UnitFees(unit_id)) if rc.fees else prices.UnitFees(unit_id)
    findings, cal = compliance.check(conn, period, [unit_id], as_of=as_of, silent_days=silent_days)
    sheet = rubric.score(rb, unit, rubric.expert_scores(conn, period.label).get(unit_id, {}))
    subsidy = unit_subsidy(conn, rb, unit_id, sheet, unit.figures.revenue, period)
    agg = unit.figures
    ur = rc.units[unit_id]
    summary: list[tuple[str, str, Any, Kind]] = [
        ("unit", "管理单位", f"{unit.name}（{unit.id}）", "text"),
        ("period", "评价期", f"{period.start} 至 {period.last_day}（北京时间）", "text"),
        ("instruments", "仪器总数", agg.instruments, "int"),
        ("in_scope", "原值 30 万元及以上仪器数", agg.in_scope, "int"),
        ("exempted", "经批准不开放仪器数", agg.exempted, "int"),
        ("evaluated", "应开放仪器数", agg.evaluated, "int"),
        ("open", "已开放仪器数", agg.open, "int"),
        ("open_rate", "开放率", agg.open_rate, "ratio"),
        ("rated_hours", "额定机时", agg.rated_hours, "hours"),
        ("running_live", "运行机时（实时核验）", agg.running.live, "hours"),
        ("running_spool", "运行机时（补传核验）", agg.running.spool, "hours"),
        ("running_unverified", "运行机时（未核验）", agg.running.unverified, "hours"),
        ("utilization_verified", "利用率（仅核验数据）", agg.utilization.verified, "ratio"),
        ("utilization_all", "利用率（含未核验数据）", agg.utilization.including_unverified, "ratio"),
        ("utilization_mean_verified", "单台利用率平均值（仅核验数据）", agg.utilization_mean.verified, "ratio"),
        (
            "utilization_mean_all",
            "单台利用率平均值（含未核验数据）",
            agg.utilization_mean.including_unverified,
            "ratio",
        ),
        ("external_live", "对外服务机时（实时核验）", agg.external.live, "hours"),
        ("external_spool", "对外服务机时（补传核验）", agg.external.spool, "hours"),
        ("external_unverified", "对外服务机时（未核验）", agg.external.unverified, "hours"),
        ("unattributed", "未能归属用户的运行机时", agg.unattributed.total, "hours"),
        ("sharing_verified", "共享率（仅核验数据）", agg.sharing.verified, "ratio"),
        ("sharing_all", "共享率（含未核验数据）", agg.sharing.including_unverified, "ratio"),
        ("revenue", "服务收入（元）", agg.revenue, "money"),
        ("cases", "对外服务案例数", unit.cases, "int"),
        ("overclaimed_records", "多报服务记录数", ur.overclaimed_records, "int"),
        ("contradicted_hours", "多报机时", ur.contradicted_hours, "hours"),
        ("unverifiable_records", "无法核实服务记录数", ur.unverifiable_records, "int"),
        (
            "own_unit_in_external_windows",
            "对外服务记录时段内本单位/关联单位用户运行机时",
            ur.own_unit_in_external_windows,
            "hours",
        ),
        ("may_support_used", "仅由“可能支持”机时支持的自报机时", ur.may_support_used, "hours"),
        ("uncovered_verified", "无服务记录的对外机时（核验）", ur.uncovered_verified, "hours"),
        ("revenue_at_risk", "按收费标准估算的未登记服务收入（元，核验）", prices.total(at_risk), "money"),
        (
            "revenue_at_risk_all",
            "按收费标准估算的未登记服务收入（元，含未核验）",
            prices.total(at_risk, verified_only=False),
            "money",
        ),
        ("fee_differences", "收费与收费标准不符的服务记录数", fees.differing, "int"),
        ("score", "评分", sheet.total, "hours"),
        ("grade", "等级", sheet.grade if sheet.complete else f"{sheet.grade}（待专家评分）", "text"),
        ("subsidy", "后补助（元）", subsidy.amount, "money"),
        ("subsidy_note", "后补助说明", _subsidy_note(subsidy), "text"),
    ]
    if cal.note():
        summary.append(("calendar_note", "工作日口径", cal.note(), "text"))
    tables = [
        open_rate_table(figures),
        utilization_table(figures),
        sharing_table(figures),
        revenue_table(conn, period, unit_id, pseudonyms, rows, offset),
        cases_table(conn, period, unit_id),
        *reconciliation_tables(rc, unit_id),
        fee_table(rc.fees, unit_id),
        revenue_at_risk_table(at_risk),
        compliance_table(findings, cal),
        score_table(sheet),
        instruments_table(conn, figures),
    ]
    data = {
        "unit": {
            "id": unit.id,
            "name": unit.name,
            "region": unit.region,
            "indicators": agg.as_dict(),
            "cases": unit.cases,
        },
        "instruments": [f.as_dict() for f in figures],
        "reconciliation": ur.as_dict(),
        "prices": {
            "fees": fees.as_dict(),
            "revenue_at_risk": str(prices.total(at_risk)),
            "revenue_at_risk_including_unverified": str(prices.total(at_risk, False)),
            "revenue_at_risk_by_instrument": [i.as_dict() for i in at_risk],
        },
        "score_sheet": sheet.as_dict(),
        "subsidy": subsidy.as_dict(),
    }
    return Report(
        f"{unit.name} 科研设施与仪器开放共享评价（{period.label}）",
        period,
        now or clock.now().astimezone(),
        summary,
        tables,
        data,
    )


def _subsidy_note(s: Subsidy) -> str:
    if s.note:
        return s.note
    if s.coefficient == 0:
        return f"等级{s.grade}，不予后补助"
    text = f"{s.revenue} × {s.coefficient}"
    return text + (f"，超过上限，按上限 {s.amount} 元" if s.capped else "")


@dataclass
class RegionResult:
    evaluation: Evaluation
    reconciliation: reconciliation.Reconciliation
    sheets: dict[str, rubric.ScoreSheet]
    subsidies: dict[str, Subsidy]
    findings: list[compliance.Finding]
    calendar: compliance.WorkdayCalendar
    sample: list[sampling.Sampled]
    at_risk: list[prices.RevenueAtRisk] = field(default_factory=list)  # revenue at risk per instrument


def evaluate_region(
    conn: Conn,
    period: Period,
    rb: rubric.Rubric,
    pseudonyms: Pseudonymizer,
    *,
    sample_size: int = 50,
    seed: int | None = None,
    as_of: datetime | None = None,
    silent_days: int = compliance.DEFAULT_SILENT_DAYS,
    tolerance_h: float = reconciliation.DEFAULT_TOLERANCE_H,
    precomputed: bool = True,
) -> RegionResult:
    """Every unit: indicators, reconciliation, compliance, grades, subsidies and a spot-check sample.
    `precomputed=False` measures service records' windows from the segments (the reference)."""
    tune(conn)
    ev = compute(conn, period, precomputed=precomputed)
    rc = reconciliation.reconcile(conn, ev, pseudonyms, tolerance_h=tolerance_h, precomputed=precomputed)
    findings, cal = compliance.check(conn, period, as_of=as_of, silent_days=silent_days)
    experts = rubric.expert_scores(conn, period.label)
    sheets: dict[str, rubric.ScoreSheet] = {}
    subsidies: dict[str, Subsidy] = {}
    sanctions = {
        uid: reason
        for uid, reason in conn.execute(
            "SELECT unit_id, min(reason) FROM unit_sanctions WHERE %s BETWEEN from_year AND to_year GROUP BY 1",
            (period.end.year,),
        )
    }
    for uid, unit in ev.units.items():
        sheet = rubric.score(rb, unit, experts.get(uid, {}))
        sheets[uid] = sheet
        subsidies[uid] = post_subsidy(
            sheet.grade, unit.figures.revenue, coefficients=rb.coefficients, cap=rb.cap, sanction=sanctions.get(uid)
        )
    sample = sampling.sample(
        ev.instruments.values(), rc.discrepancy_hours(), sample_size, seed if seed is not None else period.start.year
    )
    at_risk = prices.revenue_at_risk(conn, period, rc.instruments)
    return RegionResult(ev, rc, sheets, subsidies, findings, cal, sample, at_risk)


def region_report(result: RegionResult, now: datetime | None = None) -> Report:
    ev = result.evaluation
    period = ev.period
    scores = Table(
        "scores",
        "评分汇总",
        [
            Column("unit_id", "单位编号"),
            Column("unit_name", "管理单位"),
            Column("evaluated", "应开放仪器数", "int"),
            Column("open_rate", "开放率", "ratio"),
            *_ratio_columns("utilization", "利用率"),
            *_ratio_columns("sharing", "共享率"),
            Column("revenue", "服务收入（元）", "money"),
            Column("unverified_share", "未核验机时占比", "ratio"),
            Column("contradicted_hours", "多报机时", "hours"),
            Column("unverifiable_records", "无法核实服务记录数", "int"),
            Column("own_unit_in_external_windows", "对外服务记录时段内本单位/关联单位用户运行机时", "hours"),
            Column("uncovered_verified", "无服务记录的对外机时", "hours"),
            Column("revenue_at_risk", "按收费标准估算的未登记服务收入（元，核验）", "money"),
            Column("fee_differences", "收费与收费标准不符的服务记录数", "int"),
            Column("findings", "合规问题数", "int"),
            Column("score", "评分", "hours"),
            Column("grade", "等级"),
            Column("complete", "专家评分已完成", "bool"),
            Column("subsidy", "后补助（元）", "money"),
            Column("subsidy_note", "后补助说明"),
        ],
    )
    finding_counts: dict[str, int] = {}
    for f in result.findings:
        finding_counts[f.unit_id] = finding_counts.get(f.unit_id, 0) + 1
    fees = result.reconciliation.fees
    for uid, unit in ev.units.items():
        agg = unit.figures
        sheet = result.sheets[uid]
        ur = result.reconciliation.units[uid]
        sub = result.subsidies[uid]
        scores.rows.append(
            {
                "unit_id": uid,
                "unit_name": unit.name,
                "evaluated": agg.evaluated,
                "open_rate": agg.open_rate,
                **_ratio_values("utilization", agg.utilization),
                **_ratio_values("sharing", agg.sharing),
                "revenue": agg.revenue,
                "unverified_share": agg.running.unverified / agg.running.total if agg.running.total else None,
                "contradicted_hours": ur.contradicted_hours,
                "unverifiable_records": ur.unverifiable_records,
                "own_unit_in_external_windows": ur.own_unit_in_external_windows,
                "uncovered_verified": ur.uncovered_verified,
                "revenue_at_risk": prices.total([i for i in result.at_risk if i.unit_id == uid]),
                "fee_differences": fees.units[uid].differing if fees and uid in fees.units else 0,
                "findings": finding_counts.get(uid, 0),
                "score": sheet.total,
                "grade": sheet.grade,
                "complete": sheet.complete,
                "subsidy": sub.amount,
                "subsidy_note": _subsidy_note(sub),
            }
        )
    sample = Table(
        "sample",
        "现场抽查样本",
        [
            Column("instrument_id", "仪器编号"),
            Column("unit_id", "单位编号"),
            Column("name", "仪器名称"),
            Column("weight", "抽样权重", "hours"),
            Column("discrepancy_hours", "差异机时", "hours"),
            Column("unverified_hours", "未核验机时", "hours"),
        ],
        notes=["按差异机时加权的可复现抽样（同一随机种子与数据得到同一样本）"],
    )
    sample.rows = [s.as_dict() for s in result.sample]
    findings = compliance_table(result.findings, result.calendar)
    findings.columns.insert(0, Column("unit_id", "单位编号"))
    region = ev.region
    summary: list[tuple[str, str, Any, Kind]] = [
        ("period", "评价期", f"{period.start} 至 {period.last_day}（北京时间）", "text"),
        ("units", "管理单位数", len(ev.units), "int"),
        ("instruments", "仪器总数", region.instruments, "int"),
        ("evaluated", "应开放仪器数", region.evaluated, "int"),
        ("open_rate", "开放率", region.open_rate, "ratio"),
        ("utilization_verified", "利用率（仅核验数据）", region.utilization.verified, "ratio"),
        ("utilization_all", "利用率（含未核验数据）", region.utilization.including_unverified, "ratio"),
        ("sharing_verified", "共享率（仅核验数据）", region.sharing.verified, "ratio"),
        ("sharing_all", "共享率（含未核验数据）", region.sharing.including_unverified, "ratio"),
        ("revenue", "服务收入（元）", region.revenue, "money"),
        ("subsidy", "后补助合计（元）", sum((s.amount for s in result.subsidies.values()), Decimal("0.00")), "money"),
    ]
    return Report(
        f"科研设施与仪器开放共享评价汇总（{period.label}）",
        period,
        now or clock.now().astimezone(),
        summary,
        [scores, findings, sample],
        {
            "region": region.as_dict(),
            "score_sheets": {u: s.as_dict() for u, s in result.sheets.items()},
            "subsidies": {u: s.as_dict() for u, s in result.subsidies.items()},
        },
    )
