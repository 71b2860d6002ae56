"""Import the registry from the XLSX / CSV files units already keep: instrument ledgers, service
records, exemptions from opening, price lists, service cases, platform users with their
organisations, and the mapping of agent-side identities to platform users.

All or nothing: every row is checked first and the per-row report says what was accepted and why
rows were rejected; the batch is written only if no row was rejected, in one transaction. Either
way the batch and its report are recorded in `import_batches` (a rejected file leaves a trace,
never half its rows).

Spreadsheets as people make them: title rows above the header, merged cells (the value of a
merged block counts for every cell of it), blank rows, totals rows (合计), Chinese dates, amounts
in 元 or 万元.

The kinds are discoverable: `KINDS` maps each kind to its `KindSpec` (Chinese label and
description for the import page); each kind lives in its own module (import_*.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from server.registry import (
    import_cases,
    import_exemptions,
    import_identities,
    import_ledger,
    import_prices,
    import_services,
    import_users,
    parse,
    untrusted,
)
from server.registry.import_ledger import INSTRUMENT_FIELDS, instrument_row
from server.registry.import_services import SERVICE_FIELDS, service_row
from server.registry.kind_names import KIND_NAMES, Kind
from server.registry.sheet import FieldSpec, ImportOptions, KindSpec, Row, norm
from server.store.conn import Conn

KINDS: dict[str, KindSpec] = {
    k.key: k
    for k in (
        import_ledger.KIND,
        import_services.KIND,
        import_exemptions.KIND,
        import_prices.KIND,
        import_cases.KIND,
        import_users.KIND,
        import_identities.KIND,
    )
}
KIND_LABELS: dict[str, str] = {k: spec.label for k, spec in KINDS.items()}
assert tuple(KINDS) == KIND_NAMES, "kind_names.Kind and KINDS must list the same kinds"
MAX_HEADER_SCAN = 15
TOTAL_MARKERS = ("合计", "总计", "小计")

__all__ = [
    "INSTRUMENT_FIELDS",
    "KINDS",
    "KIND_LABELS",
    "SERVICE_FIELDS",
    "FieldSpec",
    "ImportOptions",
    "ImportReport",
    "Kind",
    "RowResult",
    "find_header",
    "import_file",
    "instrument_row",
    "read_rows",
    "run_import",
    "service_row",
]


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
        label = KIND_LABELS.get(self.kind, self.kind)
        lines = [f"{self.file_name}（{label}）: {verdict}；接受 {self.accepted} 行，拒绝 {self.rejected} 行"]
        lines += [f"  文件：{p}" for p in self.problems]
        for r in self.rows:
            if r.status == "rejected":
                lines.append(f"  第 {r.row} 行 拒绝：{'；'.join(r.errors)}")
            elif r.status == "skipped" and r.errors:
                lines.append(f"  第 {r.row} 行 忽略：{'；'.join(r.errors)}")
        return "\n".join(lines)


# -- reading ------------------------------------------------------------------------------------


def read_rows(data: bytes, file_name: str) -> list[list[Any]]:
    """All rows of the first sheet (XLSX) or the file (CSV), merged blocks filled in. Bounded, and
    formulas kept as their text, never evaluated: server/registry/untrusted.py."""
    untrusted.check_size(data)
    if file_name.lower().endswith((".xlsx", ".xlsm")):
        return untrusted.xlsx_grid(data)
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
            h = norm(parse.text(cell))
            if not h:
                continue
            for spec in fields:
                if spec.key in cols:
                    continue
                if any(h == norm(s) for s in spec.synonyms) or any(h.startswith(norm(s) + "(") for s in spec.synonyms):
                    cols[spec.key] = j
                    found[spec.key] = parse.text(cell)
                    break
        if len(cols) > len(best[1]):
            best = (i, cols, found)
    return best


# -- the import ---------------------------------------------------------------------------------


def run_import(
    conn: Conn,
    kind: Kind,
    unit_id: str,
    data: bytes,
    file_name: str,
    *,
    dry_run: bool = False,
    options: ImportOptions | None = None,
) -> ImportReport:
    """Check every row, then write all of them or none; record the batch. Commits on `conn`."""
    report = ImportReport(kind, unit_id, Path(file_name).name, hashlib.sha256(data).hexdigest())
    spec = KINDS.get(kind)
    if spec is None:
        report.problems.append(f"未知的导入类型“{kind}”（可选：{'、'.join(KINDS)}）")
        return report
    unit = conn.execute("SELECT 1 FROM units WHERE id = %s", (unit_id,)).fetchone()
    if unit is None:
        report.problems.append(f"单位 {unit_id} 不存在")
        return report
    try:
        grid = read_rows(data, file_name)
    except Exception as e:  # a broken file is a report line, not a crash
        report.problems.append(f"无法读取文件：{e}")
        return _record(conn, report, dry_run)
    header, cols, found = find_header(grid, spec.fields)
    report.header_row, report.columns = header + 1, found
    missing = spec.missing_columns(cols)
    if header < 0 or missing:
        report.problems.append(f"表头缺少必需的列：{'、'.join(missing) if missing else '未找到表头'}")
        return _record(conn, report, dry_run)
    ctx = spec.load(conn, unit_id, options or ImportOptions())
    accepted: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, cells in enumerate(grid[header + 1 :], start=header + 2):
        if all(parse.is_blank(v) for v in cells):
            continue
        first_cells = [parse.text(v) for v in cells[:3]]
        if any(c.startswith(TOTAL_MARKERS) for c in first_cells):
            report.rows.append(RowResult(i, "skipped", errors=["合计行"]))
            continue
        rec, errors, key = spec.check(Row(cells, cols, found), ctx)
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
            spec.write(conn, rec, batch_id, ctx)
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


def import_file(
    conn: Conn, kind: Kind, unit_id: str, path: Path, *, dry_run: bool = False, options: ImportOptions | None = None
) -> ImportReport:
    return run_import(conn, kind, unit_id, path.read_bytes(), path.name, dry_run=dry_run, options=options)
