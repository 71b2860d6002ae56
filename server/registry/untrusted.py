"""Reading a spreadsheet someone uploaded: bounded in size, memory and time, formulas never evaluated.

An XLSX is a zip of XML parts, so a small upload can unpack to gigabytes (a zip bomb), declare
entities that expand exponentially or name local files (billion laughs, XXE), or place one cell at
XFD1048576 so that a naive grid has 17 billion cells. Before openpyxl sees a file, `check_xlsx`
refuses: more than `MAX_FILE_BYTES` packed, more than `MAX_UNPACKED_BYTES` unpacked (declared
sizes: zipfile never inflates an entry beyond its declared size, and a lying entry fails its CRC),
any DTD (`<!DOCTYPE` / `<!ENTITY`: no legitimate XLSX part has one), more than `MAX_CELLS` cells
or `MAX_STRINGS` shared strings. `xlsx_grid` then refuses a sheet whose extent exceeds
`MAX_ROWS` x `MAX_COLUMNS` and clamps merged ranges to the grid.

Formulas: the workbook is read with `data_only=False`, so a formula cell is its formula text
(`=HYPERLINK(...)`), wrapped as `parse.Formula`. The value a file says a formula last computed is
never used: a file written by a program other than Excel has none, and a crafted file can carry a
cached value that differs from what the formula shows when the file is opened. Text columns store
the formula text literally (exports escape it); number, date and choice columns reject the row
with the reason (server/registry/parse.py).
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from typing import Any

from openpyxl import load_workbook

from server.registry.parse import Formula

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_UNPACKED_BYTES = 48 * 1024 * 1024
MAX_MEMBERS = 2000
MAX_CELLS = 500_000
MAX_STRINGS = 500_000
MAX_ROWS = 100_000
MAX_COLUMNS = 1_000
_MB = 1024 * 1024


def check_size(data: bytes) -> None:
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"文件 {len(data) / _MB:.1f} MB，超过上限 {MAX_FILE_BYTES // _MB} MB")


# tags with or without a namespace prefix (<c ...>, <x:c ...>), attributes in any order
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Z]{1,3})([0-9]{1,7}):([A-Z]{1,3})([0-9]{1,7})"')
_CELL = re.compile(rb"<(?:\w+:)?c[\s>/]")
_STRING = re.compile(rb"<(?:\w+:)?si[\s>/]")


def _column(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ch - 64
    return n


def _merged_area(window: bytes, seen: int) -> int:
    """Cells of the merged ranges in `window` not wholly in its first `seen` bytes (counted before)."""
    area = 0
    for m in _MERGE.finditer(window):
        if m.end() <= seen:
            continue
        rows = abs(int(m.group(4)) - int(m.group(2))) + 1
        cols = abs(_column(m.group(3)) - _column(m.group(1))) + 1
        area += rows * cols
    return area


def _count(window: bytes, seen: int, tag: re.Pattern[bytes]) -> int:
    """Tags in `window` not wholly in its first `seen` bytes (counted with the previous chunk)."""
    return sum(1 for m in tag.finditer(window) if m.end() > seen)


def check_xlsx(data: bytes) -> None:
    """Refuse an XLSX that would be too big, too deep or too strange to parse; ValueError says why."""
    check_size(data)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise ValueError("不是有效的 XLSX 文件（.xls 等旧格式请在 Excel 中另存为 .xlsx）") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ValueError(f"XLSX 内含 {len(infos)} 个部件，超过上限 {MAX_MEMBERS}")
        names = {i.filename for i in infos}
        if not {"[Content_Types].xml", "xl/workbook.xml"} <= names:
            raise ValueError("不是有效的 XLSX 文件（缺少 xl/workbook.xml；.xls 等旧格式请另存为 .xlsx）")
        unpacked = sum(i.file_size for i in infos)
        if unpacked > MAX_UNPACKED_BYTES:
            raise ValueError(f"XLSX 解压后 {unpacked / _MB:.0f} MB，超过上限 {MAX_UNPACKED_BYTES // _MB} MB"
                             "（疑似压缩炸弹）")
        cells = strings = merged = 0
        for info in infos:
            if not info.filename.endswith((".xml", ".rels", ".vml")):
                continue
            in_sheet = info.filename.startswith("xl/worksheets/")
            in_strings = info.filename == "xl/sharedStrings.xml"
            tail = b""
            try:
                with zf.open(info) as fh:
                    while chunk := fh.read(_MB):
                        window = tail + chunk
                        if b"<!DOCTYPE" in window or b"<!ENTITY" in window:
                            raise ValueError(f"XLSX 部件 {info.filename} 含有 DTD / 实体声明，拒绝读取")
                        if in_sheet:
                            cells += _count(window, len(tail), _CELL)
                        if in_strings:
                            strings += _count(window, len(tail), _STRING)
                        if in_sheet:
                            merged += _merged_area(window, len(tail))
                        tail = window[-64:]
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
                raise ValueError(f"XLSX 文件已损坏（{info.filename}：{exc}）") from None
            if cells > MAX_CELLS:
                raise ValueError(f"XLSX 超过 {MAX_CELLS} 个单元格，请拆分后导入")
            if merged > MAX_CELLS:  # openpyxl makes an object for every cell of a merged range
                raise ValueError(f"XLSX 的合并单元格共超过 {MAX_CELLS} 个单元格，拒绝读取")
            if strings > MAX_STRINGS:
                raise ValueError(f"XLSX 超过 {MAX_STRINGS} 个文本，请拆分后导入")


def _value(cell: Any) -> Any:
    if cell.data_type != "f":
        return cell.value
    v = cell.value
    return Formula(v if isinstance(v, str) else str(getattr(v, "text", None) or v))


def xlsx_grid(data: bytes) -> list[list[Any]]:
    """All rows of the first sheet, merged blocks filled in, formulas as `Formula` text."""
    check_xlsx(data)
    wb = load_workbook(io.BytesIO(data), data_only=False)  # formulas as written, never a cached value
    ws = wb.worksheets[0]
    if ws.max_row > MAX_ROWS or ws.max_column > MAX_COLUMNS:
        raise ValueError(f"工作表范围 {ws.max_row} 行 × {ws.max_column} 列，超过上限 {MAX_ROWS} 行 × {MAX_COLUMNS} 列")
    grid = [[_value(c) for c in row] for row in ws.iter_rows()]
    for rng in ws.merged_cells.ranges:
        value = _value(ws.cell(rng.min_row, rng.min_col))
        for r in range(rng.min_row, min(rng.max_row, len(grid)) + 1):
            for c in range(rng.min_col, min(rng.max_col, len(grid[r - 1])) + 1):
                grid[r - 1][c - 1] = value
    return grid
