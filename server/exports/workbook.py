"""Render a report (server.evaluation.report) as an XLSX workbook and as JSON.

One sheet for the summary, then one per table, in the report's order: Chinese sheet names and
headers with the regulation's terms (开放率, 利用率, 共享率, 服务收入).

The XLSX is written directly as SpreadsheetML (a zip of a few XML parts), streaming row by row:
openpyxl needs a Python object per styled cell and took over a second for one large unit, this
takes a tenth of that. Text goes in as inline strings, which spreadsheet programs never evaluate;
texts that look like formulas are escaped all the same (server.exports.cells).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import orjson

from server.evaluation.report import Kind, Report
from server.exports.cells import cell_value, safe_text
from server.store.times import TZ

_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_NS_R = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_CT_SHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_REL_SHEET = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"

# cellXfs indexes of styles.xml
HEADER, PERCENT, MONEY, DATE, DATETIME = 1, 2, 3, 4, 5
STYLE_OF_KIND: dict[str, int] = {"ratio": PERCENT, "money": MONEY, "date": DATE, "datetime": DATETIME}
_STYLES = (
    f"{_HEAD}<styleSheet {_NS}>"
    '<numFmts count="3"><numFmt numFmtId="164" formatCode="#,##0.00"/><numFmt numFmtId="165" formatCode="yyyy-mm-dd"/>'
    '<numFmt numFmtId="166" formatCode="yyyy-mm-dd hh:mm"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font><font><b/><sz val="11"/><name val="Calibri"/>'
    "</font></fonts>"
    '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill>'
    "</fills>"
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="6"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1" applyAlignment="1">'
    '<alignment wrapText="1" vertical="top"/></xf>'
    '<xf numFmtId="10" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="166" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>'
)
_BAD_SHEET_CHARS = str.maketrans({c: "_" for c in "[]:*?/\\"})
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_EPOCH = datetime(1899, 12, 30)


def column_letter(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(65 + r) + letters
    return letters


# ' s="n"' of the number formats by column kind
_NUMBER_ATTR: dict[str | None, str] = {k: f' s="{s}"' for k, s in STYLE_OF_KIND.items()}


def _cell(ref: str, value: Any, kind: Kind | None, style: int = 0) -> str:
    # Fast paths for the bulk of the cells (floats, ints, texts): the same output as the general
    # path below, without its chain of isinstance checks (118,000 cells for one large unit).
    t = type(value)
    if t is float:
        if kind == "hours":
            value = round(value, 4)
        return f'<c r="{ref}"{_NUMBER_ATTR.get(kind, "")}><v>{value!r}</v></c>'
    if t is int:
        return f'<c r="{ref}"{_NUMBER_ATTR.get(kind, "")}><v>{value}</v></c>'
    if t is Decimal:
        return f'<c r="{ref}"{_NUMBER_ATTR.get(kind, "")}><v>{value!s}</v></c>'
    if t is datetime:
        dt = value.astimezone(TZ).replace(tzinfo=None) if value.tzinfo else value
        return f'<c r="{ref}" s="{DATETIME}"><v>{(dt - _EPOCH).total_seconds() / 86400!r}</v></c>'
    v = safe_text(value) if t is str else cell_value(value)
    if v is None or v == "":
        return ""
    if isinstance(v, str):
        text = escape(_XML_ILLEGAL.sub("", v))
        space = ' xml:space="preserve"' if text != text.strip() else ""
        attr = f' s="{style}"' if style else ""
        return f'<c r="{ref}" t="inlineStr"{attr}><is><t{space}>{text}</t></is></c>'
    if isinstance(v, datetime | date):
        dt = v if isinstance(v, datetime) else datetime(v.year, v.month, v.day)
        serial = (dt - _EPOCH).total_seconds() / 86400
        return f'<c r="{ref}" s="{DATETIME if isinstance(v, datetime) else DATE}"><v>{serial!r}</v></c>'
    if kind == "hours" and isinstance(v, float):
        v = round(v, 4)
    number = str(v) if isinstance(v, Decimal | int) else repr(float(v))
    num_style = STYLE_OF_KIND.get(kind or "", 0)
    attr = f' s="{num_style}"' if num_style else ""
    return f'<c r="{ref}"{attr}><v>{number}</v></c>'


def _sheet(rows: Iterable[Sequence[tuple[Any, Kind | None, int]]], widths: Sequence[float], freeze: bool) -> bytes:
    parts = [f"{_HEAD}<worksheet {_NS} {_NS_R}>"]
    if freeze:
        parts.append(
            '<sheetViews><sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft"'
            ' state="frozen"/></sheetView></sheetViews>'
        )
    parts.append(
        "<cols>"
        + "".join(f'<col min="{i + 1}" max="{i + 1}" width="{w}" customWidth="1"/>' for i, w in enumerate(widths))
        + "</cols><sheetData>"
    )
    letters = [column_letter(i) for i in range(max(len(widths), 64))]
    n_letters = len(letters)
    for r, row in enumerate(rows, start=1):
        rs = str(r)
        cells = "".join([
            _cell((letters[c] if c < n_letters else column_letter(c)) + rs, v, kind, style)
            for c, (v, kind, style) in enumerate(row)
        ])
        parts.append(f'<row r="{rs}">{cells}</row>')
    parts.append("</sheetData></worksheet>")
    return "".join(parts).encode("utf-8")


def _whole(report: Report) -> None:
    """The exports carry every row: a report built for a page (`unit_report(rows=N)`) is refused."""
    cut = [t.key for t in report.tables if t.total is not None]
    if cut:
        raise ValueError(f"a report built for a page holds only the first rows of {', '.join(cut)}")


def write_xlsx(report: Report, path: Path) -> None:
    _whole(report)
    sheets: list[tuple[str, bytes]] = []
    summary: list[list[tuple[Any, Kind | None, int]]] = [
        [(report.title, None, HEADER)],
        [("生成时间", None, 0), (report.generated_at, "datetime", 0)],
        [],
        [("项目", None, HEADER), ("数值", None, HEADER)],
        *[[(label, None, 0), (value, kind, 0)] for _, label, value, kind in report.summary],
    ]
    sheets.append(("概览", _sheet(summary, [36, 48], freeze=False)))
    used = {"概览"}
    for table in report.tables:
        name = table.title.translate(_BAD_SHEET_CHARS)[:31]
        while name in used:
            name = name[:29] + f"_{len(used)}"
        used.add(name)

        def rows(table: Any = table) -> Iterable[list[tuple[Any, Kind | None, int]]]:
            yield [(c.label, None, HEADER) for c in table.columns]
            keys = [(c.key, c.kind) for c in table.columns]
            for row in table.rows:
                yield [(row.get(key), kind, 0) for key, kind in keys]
            if table.notes:
                yield []
                for note in table.notes:
                    yield [("注：" + note, None, 0)]

        widths = [max(10, min(40, len(c.label) * 2 + 2)) for c in table.columns]
        sheets.append((name, _sheet(rows(), widths, freeze=True)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        n = len(sheets)
        zf.writestr(
            "[Content_Types].xml",
            f'{_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/styles.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            + "".join(
                f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_CT_SHEET}"/>' for i in range(1, n + 1)
            )
            + "</Types>",
        )
        zf.writestr(
            "_rels/.rels",
            f'{_HEAD}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        zf.writestr(
            "xl/workbook.xml",
            f"{_HEAD}<workbook {_NS} {_NS_R}><sheets>"
            + "".join(
                f'<sheet name="{escape(name, {chr(34): "&quot;"})}" sheetId="{i}" r:id="rId{i}"/>'
                for i, (name, _) in enumerate(sheets, start=1)
            )
            + "</sheets></workbook>",
        )
        zf.writestr(
            "xl/_rels/workbook.xml.rels",
            f'{_HEAD}<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            + "".join(
                f'<Relationship Id="rId{i}" Type="{_REL_SHEET}" Target="worksheets/sheet{i}.xml"/>'
                for i in range(1, n + 1)
            )
            + f'<Relationship Id="rId{n + 1}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/styles" Target="styles.xml"/></Relationships>',
        )
        zf.writestr("xl/styles.xml", _STYLES)
        for i, (_, data) in enumerate(sheets, start=1):
            zf.writestr(f"xl/worksheets/sheet{i}.xml", data)


def write_json(report: Report, path: Path) -> None:
    """UTF-8 JSON, indented by two spaces. orjson: the standard library's encoder runs in pure
    Python once it indents (0.17 s for one unit's 10,000 rows, against ~0.01 s)."""
    _whole(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")


__all__ = ["column_letter", "safe_text", "write_json", "write_xlsx"]
