"""Import an instrument ledger or service records from the XLSX / CSV files units already keep.

All or nothing: every row is checked first and the per-row report says what was accepted and why
rows were rejected; the batch is written only if no row was rejected, in one transaction. Either
way the batch and its report are recorded in `import_batches` (a rejected file leaves a trace,
never half its rows).

Spreadsheets as people make them: title rows above the header, merged cells (the value of a
merged block counts for every cell of it), blank rows, totals rows (合计), Chinese dates, amounts
in 元 or 万元.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

from openpyxl import load_workbook

from server.registry import parse
from server.registry.queries import (
    Conn,
    InstrumentRef,
    lookup_people,
    unit_instruments,
    upsert_instrument,
    upsert_service_record,
)

Kind = Literal["instruments", "services"]
MAX_HEADER_SCAN = 15
TOTAL_MARKERS = ("合计", "总计", "小计")


@dataclass(frozen=True)
class FieldSpec:
    key: str
    synonyms: tuple[str, ...]
    required: bool = False


def _norm(s: str) -> str:
    """Header text without spaces, line breaks, and with ASCII parentheses."""
    return re.sub(r"\s+", "", s).replace("（", "(").replace("）", ")").replace("：", ":").lower()


INSTRUMENT_FIELDS = [
    FieldSpec("id", ("平台仪器编号", "平台编号", "仪器id", "id")),
    FieldSpec("internal_no", ("所在单位仪器编号", "单位内部编号", "资产编号", "仪器编号", "内部编号", "编号")),
    FieldSpec("name", ("仪器名称", "中文名称", "设备名称", "名称"), required=True),
    FieldSpec("name_en", ("英文名称",)),
    FieldSpec("classification_code", ("分类编码", "分类代码", "分类号")),
    FieldSpec("location", ("安放地址", "存放地点", "安放地点", "所在地")),
    FieldSpec("original_value", ("原值", "原值(元)", "原值(万元)", "仪器原值", "价格"), required=True),
    FieldSpec("source", ("仪器来源", "来源")),
    FieldSpec("category", ("仪器类别", "类别", "通用/专用")),
    FieldSpec("running_status", ("运行状态",)),
    FieldSpec("sharing_mode", ("共享模式", "共享方式")),
    FieldSpec("model", ("规格型号", "型号")),
    FieldSpec("manufacturer", ("生产制造商", "制造商", "生产厂家", "厂家")),
    FieldSpec("country", ("产地国别", "产地", "国别")),
    FieldSpec("booked_on", ("建账日期", "入账日期")),
    FieldSpec("accepted_on", ("验收日期", "安装验收日期", "启用日期")),
    FieldSpec("registered_on", ("纳入平台日期", "上线日期", "入网日期")),
    FieldSpec("retired_on", ("报废日期",)),
    FieldSpec("funding_source", ("主要购置经费来源", "经费来源")),
    FieldSpec("rated_hours", ("额定机时",)),
    FieldSpec("is_open", ("是否开放", "对外开放")),
    FieldSpec("fee_standard", ("参考收费标准", "收费标准")),
    FieldSpec("service_content", ("服务内容",)),
    FieldSpec("main_functions", ("主要功能",)),
    FieldSpec("specs", ("主要技术指标", "技术指标")),
    FieldSpec("booking_url", ("预约服务网址", "预约网址")),
    FieldSpec("contact_name", ("联系人",)),
    FieldSpec("contact_phone", ("联系电话", "电话")),
    FieldSpec("contact_email", ("电子邮箱", "邮箱", "email")),
]

SERVICE_FIELDS = [
    FieldSpec("record_no", ("服务记录编号", "记录编号", "流水号")),
    FieldSpec(
        "instrument", ("平台仪器编号", "所在单位仪器编号", "仪器编号", "单位内部编号", "资产编号"), required=True
    ),
    FieldSpec("start_at", ("服务开始时间", "开始时间", "起始时间"), required=True),
    FieldSpec("end_at", ("服务结束时间", "结束时间", "终止时间"), required=True),
    FieldSpec("service_hours", ("服务机时", "机时", "服务机时(小时)"), required=True),
    FieldSpec("amount", ("服务金额(元)", "服务金额", "金额", "收费金额", "收费(元)")),
    FieldSpec("content", ("服务内容",)),
    FieldSpec("way", ("服务方式",)),
    FieldSpec("user_type", ("用户类型", "用户类别"), required=True),
    FieldSpec("direction", ("服务方向", "服务领域")),
    FieldSpec("applicant_name", ("申请人", "用户", "用户姓名", "服务对象")),
    FieldSpec("applicant_org_name", ("申请人所在单位", "申请人单位", "用户单位", "委托单位")),
    FieldSpec("satisfaction", ("用户满意度", "满意度")),
    FieldSpec("contract_no", ("合同编号",)),
    FieldSpec("ip_terms", ("知识产权归属", "知识产权")),
    FieldSpec("confidentiality", ("保密要求", "保密")),
    FieldSpec("liability", ("损害赔偿", "违约责任")),
    FieldSpec("dispute_resolution", ("争议处理",)),
]

SOURCES = {k: k for k in ("购置", "研制", "赠送", "其他")} | {"自研": "研制", "捐赠": "赠送", "采购": "购置"}
CATEGORIES = {"通用": "通用", "专用": "专用"}
STATUSES = {k: k for k in ("正常", "偶有故障", "故障频繁", "待修", "待报废")} | {"良好": "正常", "完好": "正常"}
SHARING = {
    "不共享": "不共享",
    "内部共享": "内部共享",
    "外部共享": "外部共享",
    "对外共享": "外部共享",
    "对外开放": "外部共享",
    "内部": "内部共享",
}
FUNDING = {k: k for k in ("中央财政", "地方财政", "单位自有", "其他")} | {"自治区财政": "地方财政", "自筹": "单位自有"}
WAYS = {k: k for k in ("占用", "技术", "委托", "远程", "其他")} | {"机时": "占用", "送样": "委托"}
USER_TYPES = {
    "120": "120",
    "130": "130",
    "内部": "120",
    "校内": "120",
    "对内": "120",
    "本单位": "120",
    "外部": "130",
    "校外": "130",
    "对外": "130",
    "外单位": "130",
}
DIRECTIONS = {
    "135": "135",
    "136": "136",
    "137": "137",
    "138": "138",
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
TENTH = Decimal("0.1")
FEN = Decimal("0.01")


@dataclass
class RowResult:
    row: int  # 1-based row number in the sheet, as people see it
    status: Literal["accepted", "rejected", "skipped"]
    key: str = ""
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "status": self.status, "key": self.key, "errors": self.errors}


@dataclass
class ImportReport:
    kind: Kind
    unit_id: str
    file_name: str
    sha256: str
    header_row: int = 0
    columns: dict[str, str] = field(default_factory=dict)  # field -> header as found
    rows: list[RowResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # file-level
    status: Literal["committed", "rejected", "dry_run"] = "rejected"
    batch_id: int | None = None

    @property
    def accepted(self) -> int:
        return sum(r.status == "accepted" for r in self.rows)

    @property
    def rejected(self) -> int:
        return sum(r.status == "rejected" for r in self.rows)

    @property
    def ok(self) -> bool:
        return not self.problems and self.rejected == 0 and self.accepted > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "unit_id": self.unit_id,
            "file": self.file_name,
            "sha256": self.sha256,
            "status": self.status,
            "batch_id": self.batch_id,
            "header_row": self.header_row,
            "columns": self.columns,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "problems": self.problems,
            "rows": [r.as_dict() for r in self.rows],
        }

    def text(self) -> str:
        verdict = {"committed": "已导入", "rejected": "未导入（整批拒绝）", "dry_run": "试运行，未写入"}[self.status]
        lines = [f"{self.file_name}: {verdict}；接受 {self.accepted} 行，拒绝 {self.rejected} 行"]
        lines += [f"  文件：{p}" for p in self.problems]
        for r in self.rows:
            if r.status == "rejected":
                lines.append(f"  第 {r.row} 行 拒绝：{'；'.join(r.errors)}")
            elif r.status == "skipped" and r.errors:
                lines.append(f"  第 {r.row} 行 忽略：{'；'.join(r.errors)}")
        return "\n".join(lines)


# -- reading ------------------------------------------------------------------------------------


def read_rows(data: bytes, file_name: str) -> list[list[Any]]:
    """All rows of the first sheet (XLSX) or the file (CSV), merged blocks filled in."""
    if file_name.lower().endswith((".xlsx", ".xlsm")):
        wb = load_workbook(io.BytesIO(data), data_only=True)
        ws = wb.worksheets[0]
        grid = [list(r) for r in ws.iter_rows(values_only=True)]
        for rng in ws.merged_cells.ranges:
            value = ws.cell(rng.min_row, rng.min_col).value
            for r in range(rng.min_row, rng.max_row + 1):
                for c in range(rng.min_col, rng.max_col + 1):
                    if r - 1 < len(grid) and c - 1 < len(grid[r - 1]):
                        grid[r - 1][c - 1] = value
        return grid
    if file_name.lower().endswith((".csv", ".txt")):
        for encoding in ("utf-8-sig", "gb18030"):  # Excel in China saves CSV as GBK
            try:
                decoded = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise ValueError("CSV 文件编码无法识别（应为 UTF-8 或 GBK）")
        return [list(r) for r in csv.reader(io.StringIO(decoded))]
    raise ValueError("只支持 .xlsx 或 .csv 文件")


def find_header(grid: list[list[Any]], fields: list[FieldSpec]) -> tuple[int, dict[str, int], dict[str, str]]:
    """The header row (0-based) with the most recognised columns, and field -> column index."""
    best: tuple[int, dict[str, int], dict[str, str]] = (-1, {}, {})
    for i, row in enumerate(grid[:MAX_HEADER_SCAN]):
        cols: dict[str, int] = {}
        found: dict[str, str] = {}
        for j, cell in enumerate(row):
            h = _norm(parse.text(cell))
            if not h:
                continue
            for spec in fields:
                if spec.key in cols:
                    continue
                if any(h == _norm(s) for s in spec.synonyms) or any(
                    h.startswith(_norm(s) + "(") for s in spec.synonyms
                ):
                    cols[spec.key] = j
                    found[spec.key] = parse.text(cell)
                    break
        if len(cols) > len(best[1]):
            best = (i, cols, found)
    return best


# -- rows ---------------------------------------------------------------------------------------


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
        "booking_url",
        "contact_name",
        "contact_phone",
        "contact_email",
        "internal_no",
    ):
        take(key, parse.text, key)
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
        errors.append(f"仪器编号 {rec['id']} 已属于单位 {owner.unit_id}")
    return rec, errors


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


# -- the import ---------------------------------------------------------------------------------


def run_import(
    conn: Conn, kind: Kind, unit_id: str, data: bytes, file_name: str, *, dry_run: bool = False
) -> ImportReport:
    """Check every row, then write all of them or none; record the batch. Commits on `conn`."""
    report = ImportReport(kind, unit_id, Path(file_name).name, hashlib.sha256(data).hexdigest())
    unit = conn.execute("SELECT 1 FROM units WHERE id = %s", (unit_id,)).fetchone()
    if unit is None:
        report.problems.append(f"单位 {unit_id} 不存在")
        return report
    fields = INSTRUMENT_FIELDS if kind == "instruments" else SERVICE_FIELDS
    try:
        grid = read_rows(data, file_name)
    except Exception as e:  # a broken file is a report line, not a crash
        report.problems.append(f"无法读取文件：{e}")
        return _record(conn, report, dry_run)
    header, cols, found = find_header(grid, fields)
    report.header_row, report.columns = header + 1, found
    missing = [s.synonyms[0] for s in fields if s.required and s.key not in cols]
    if kind == "instruments" and "id" not in cols and "internal_no" not in cols:
        missing.append("仪器编号")
    if header < 0 or missing:
        report.problems.append(f"表头缺少必需的列：{'、'.join(missing) if missing else '未找到表头'}")
        return _record(conn, report, dry_run)
    existing = unit_instruments(conn, None if kind == "instruments" else unit_id)
    people = lookup_people(conn)
    accepted: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(grid[header + 1 :], start=header + 2):
        if all(parse.is_blank(v) for v in row):
            continue
        first_cells = [parse.text(v) for v in row[:3]]
        if any(c.startswith(TOTAL_MARKERS) for c in first_cells):
            report.rows.append(RowResult(i, "skipped", errors=["合计行"]))
            continue
        if kind == "instruments":
            rec, errors = instrument_row(row, cols, found, unit_id, existing)
            key = rec.get("id", "")
        else:
            rec, errors = service_row(row, cols, unit_id, existing, people)
            key = rec.get("record_no", "")
        if key and key in seen and not errors:
            errors.append(f"与第 {seen[key]} 行重复（{key}）")
        if errors:
            report.rows.append(RowResult(i, "rejected", key, errors))
            continue
        seen[key] = i
        report.rows.append(RowResult(i, "accepted", key))
        accepted.append(rec)
    if not report.rows:
        report.problems.append("表中没有数据行")
    if not report.ok or dry_run:
        return _record(conn, report, dry_run)
    with conn.transaction():
        batch_id = _insert_batch(conn, report, "committed")
        for rec in accepted:
            if kind == "instruments":
                upsert_instrument(conn, unit_id, rec)
            else:
                upsert_service_record(conn, rec, batch_id)
    report.status, report.batch_id = "committed", batch_id
    conn.commit()
    return report


def _insert_batch(conn: Conn, report: ImportReport, status: str) -> int:
    report.status = status  # type: ignore[assignment]
    row = conn.execute(
        "INSERT INTO import_batches (kind, unit_id, file_name, file_sha256, status, rows_total, rows_accepted,"
        " rows_rejected, report) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            report.kind,
            report.unit_id,
            report.file_name,
            report.sha256,
            status,
            len(report.rows),
            report.accepted,
            report.rejected,
            json.dumps(report.as_dict(), ensure_ascii=False, default=str),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _record(conn: Conn, report: ImportReport, dry_run: bool) -> ImportReport:
    with conn.transaction():
        report.batch_id = _insert_batch(conn, report, "dry_run" if dry_run else "rejected")
    conn.commit()
    return report


def import_file(conn: Conn, kind: Kind, unit_id: str, path: Path, *, dry_run: bool = False) -> ImportReport:
    return run_import(conn, kind, unit_id, path.read_bytes(), path.name, dry_run=dry_run)
