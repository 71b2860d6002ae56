"""Hostile spreadsheets: injection text in cells, traversal in upload names, oversized uploads,
zip bombs and malformed XLSX, CSVs in the encodings Chinese units actually send.

Through the web's upload route (POST /api/v1/imports) where the route matters (names, sizes), and
through the importer itself (server/registry/importer.py `run_import`) for the file's content.
A hostile file must end as a clear rejection in the report (or a clear 4xx), never as a crash, a
500, a memory blow-up or half of its rows written.
"""

from __future__ import annotations

import csv
import io
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openpyxl import Workbook

from server.registry import importer, untrusted
from tests.web.conftest import Web

LEDGER_HEADER = ["所在单位仪器编号", "仪器名称", "原值（元）", "安放地址"]
HOSTILE_TEXT = [
    "x'); DROP TABLE instruments; --",
    "ua' OR '1'='1",
    "'; UPDATE units SET name = 'pwned' WHERE '1'='1",
    "../../../../etc/passwd",
    "<script>alert(1)</script>",
    "$1 %s %(name)s {0}",
]


def csv_bytes(rows: list[list[Any]], encoding: str = "utf-8-sig") -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode(encoding)


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    for row in rows:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@pytest.fixture
def conn(web: Web) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(web.dsn) as c:
        c.execute("SELECT audit_as('test-import', true)")
        c.commit()
        yield c


def _counts(web: Web) -> dict[str, int]:
    tables = ("units", "instruments", "service_records", "organisations", "platform_users", "identity_map",
              "price_list", "agents")
    return {t: web.sql(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


# -- text in cells -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_injection_text_in_cells_is_stored_as_text(web: Web, conn: psycopg.Connection[Any], fmt: str) -> None:
    rows: list[list[Any]] = [LEDGER_HEADER]
    rows += [[f"H-{i}", text, 1000000 + i, text] for i, text in enumerate(HOSTILE_TEXT)]
    data = csv_bytes(rows) if fmt == "csv" else xlsx_bytes(rows)
    before = _counts(web)
    report = importer.run_import(conn, "instruments", "ua", data, f"ledger.{fmt}")
    assert report.status == "committed", report.text()
    after = _counts(web)
    assert after == {**before, "instruments": before["instruments"] + len(HOSTILE_TEXT)}
    stored = dict(web.sql("SELECT internal_no, name FROM instruments WHERE unit_id = 'ua' AND internal_no LIKE 'H-%'"))
    assert stored == {f"H-{i}": t for i, t in enumerate(HOSTILE_TEXT)}
    assert web.sql("SELECT name FROM units ORDER BY id") == [("甲大学",), ("乙研究所",)]


def test_huge_numbers_are_a_row_error_not_a_crash(web: Web, conn: psycopg.Connection[Any]) -> None:
    rows = [LEDGER_HEADER, ["N-1", "大数", "1e30", "x"], ["N-2", "太大", "99999999999999", "x"],
            ["N-3", "非数", "NaN", "x"], ["N-4", "无穷", "-Infinity", "x"]]
    report = importer.run_import(conn, "instruments", "ua", csv_bytes(rows), "ledger.csv")
    assert report.status == "rejected"
    assert [r.status for r in report.rows] == ["rejected"] * 4, report.text()
    assert all(any("原值" in e for e in r.errors) for r in report.rows)
    svc = [["仪器编号", "服务开始时间", "服务结束时间", "服务机时", "用户类型", "金额"],
           ["ua-xrd", "1000-01-01 00:00", "9999-01-01 00:00", "50000000", "外部", "1"]]
    report = importer.run_import(conn, "services", "ua", csv_bytes(svc), "services.csv")
    assert report.status == "rejected" and report.rejected == 1, report.text()


# -- encodings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-8-sig", "utf-8"])
def test_csv_encodings_of_chinese_excel(web: Web, conn: psycopg.Connection[Any], encoding: str) -> None:
    rows = [["甲大学仪器设备台账（2025年）"], LEDGER_HEADER, ["E-1", "透射电子显微镜", "3,500,000", "物理楼 108"]]
    report = importer.run_import(conn, "instruments", "ua", csv_bytes(rows, encoding), "台账.csv")
    assert report.status == "committed", report.text()
    stored = web.sql("SELECT name, location FROM instruments WHERE internal_no = 'E-1'")
    assert stored == [("透射电子显微镜", "物理楼 108")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_csv_in_an_unsupported_encoding_is_a_clear_rejection(conn: psycopg.Connection[Any], encoding: str) -> None:
    rows = [LEDGER_HEADER, ["E-2", "透射电子显微镜", "3500000", "物理楼"]]
    report = importer.run_import(conn, "instruments", "ua", csv_bytes(rows, encoding), "台账.csv")
    assert report.status == "rejected" and report.problems, report.text()
    assert any("编码" in p or "表头" in p for p in report.problems), report.problems


# -- malformed and hostile XLSX ----------------------------------------------------------------------


def _xlsx_parts(**replace: bytes) -> bytes:
    """A small valid ledger XLSX with some of its parts replaced."""
    src = zipfile.ZipFile(io.BytesIO(xlsx_bytes([LEDGER_HEADER, ["Z-1", "仪器", 1000000, "x"]])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
        for name, content in replace.items():
            if name not in src.namelist():
                z.writestr(name, content)
    return out.getvalue()


def _bomb(size: int) -> bytes:
    """An XLSX whose sharedStrings part unpacks to `size` bytes of one repeated string (~0.1 % packed)."""
    out = io.BytesIO()
    base = zipfile.ZipFile(io.BytesIO(_xlsx_parts()))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for info in base.infolist():
            z.writestr(info.filename, base.read(info.filename))
        with z.open("xl/sharedStrings.xml", "w", force_zip64=True) as fh:
            fh.write(b'<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
            chunk = (b"<si><t>" + b"A" * 80 + b"</t></si>") * 10000
            for _ in range(size // len(chunk) + 1):
                fh.write(chunk)
            fh.write(b"</sst>")
    return out.getvalue()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>&lol9;</t></si></sst>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE sst [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>&xxe;</t></si></sst>"""

_SHEET = ('<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
          '<sheetData>{rows}</sheetData>{merge}</worksheet>')
FAR_CELL = _SHEET.format(rows='<row r="1"><c r="A1" t="inlineStr"><is><t>仪器名称</t></is></c></row>'
                              '<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>', merge="").encode()
HUGE_MERGE = _SHEET.format(rows='<row r="1"><c r="A1" t="inlineStr"><is><t>仪器名称</t></is></c></row>',
                           merge='<mergeCells count="1"><mergeCell ref="A1:XFD1048576"/></mergeCells>').encode()


def _malformed() -> dict[str, bytes]:
    good = _xlsx_parts()
    return {
        "not a zip": b"PK\x03\x04 this is not really a zip file" * 10,
        "truncated": good[: len(good) // 2],
        "empty zip": b"PK\x05\x06" + b"\x00" * 18,  # the end record of a zip with no entries
        "an old .xls renamed": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512,
        "a csv renamed": csv_bytes([LEDGER_HEADER]),
        "billion laughs": _xlsx_parts(**{"xl/sharedStrings.xml": BILLION_LAUGHS}),
        "external entity": _xlsx_parts(**{"xl/sharedStrings.xml": XXE}),
        "cell at XFD1048576": _xlsx_parts(**{"xl/worksheets/sheet1.xml": FAR_CELL}),
        "merged A1:XFD1048576": _xlsx_parts(**{"xl/worksheets/sheet1.xml": HUGE_MERGE}),
        "zip bomb (200 MB of sharedStrings)": _bomb(200 * 1024 * 1024),
    }


def test_malformed_and_hostile_xlsx_are_clear_rejections(web: Web, conn: psycopg.Connection[Any]) -> None:
    before = _counts(web)
    for name, data in _malformed().items():
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            report = importer.run_import(conn, "instruments", "ua", data, "ledger.xlsx")
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        elapsed = time.perf_counter() - t0
        assert report.status == "rejected", (name, report.text())
        assert report.problems, (name, report.text())
        assert "root:" not in report.text(), name
        assert elapsed < 10, (name, elapsed)
        assert peak < 64 * 1024 * 1024, (name, peak // 2**20, "MB")
    assert _counts(web) == before


def test_oversized_file_is_refused_by_the_importer(conn: psycopg.Connection[Any]) -> None:
    data = csv_bytes([LEDGER_HEADER]) + b"x" * (untrusted.MAX_FILE_BYTES + 1)
    report = importer.run_import(conn, "instruments", "ua", data, "ledger.csv")
    assert report.status == "rejected" and any("MB" in p for p in report.problems), report.problems


# -- through the web upload ------------------------------------------------------------------------


def test_upload_file_names_are_never_paths(web: Web) -> None:
    mgr = web.as_("mgr-a")
    data = csv_bytes([LEDGER_HEADER, ["U-1", "仪器", "1000000", "x"]])
    for name in ["../../../../etc/passwd", "../../../../etc/passwd.csv", "..\\..\\..\\windows\\win.ini.csv",
                 "/etc/passwd.csv", "C:\\Windows\\x.csv", "ok.csv\x00.exe", "'; DROP TABLE import_batches; --.csv",
                 "%2e%2e%2f%2e%2e%2fetc%2fpasswd.csv", ""]:
        r = mgr.post("/api/v1/imports", data={"kind": "instruments", "unit_id": "ua", "dry_run": "true"},
                     files={"file": (name, data, "text/csv")})
        assert r.status_code < 500, (name, r.status_code, r.text[:300])
        assert "root:x:0:0" not in r.text and "[fonts]" not in r.text, name
        if r.status_code == 200:
            shown = r.json()["file"]
            assert "/" not in shown and "\\" not in shown and ".." not in shown.strip("."), (name, shown)
    names = [n for (n,) in web.sql("SELECT file_name FROM import_batches")]
    assert names and all("/" not in n and "\\" not in n for n in names), names
    assert not Path("/etc/passwd.csv").exists()


def test_oversized_upload_is_413_json(web: Web) -> None:
    mgr = web.as_("mgr-a")
    from server.web.api import imports

    big = b"a,b\n" + b"1,2\n" * ((imports.MAX_UPLOAD_BYTES + 1024 * 1024) // 4)
    r = mgr.post("/api/v1/imports", data={"kind": "instruments", "unit_id": "ua"},
                 files={"file": ("big.csv", big, "text/csv")})
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused before reading
        yield b"--x\r\n"
        yield b"a" * 1024

    r = mgr.post("/api/v1/imports", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code in (411, 413), r.text[:300]
    assert "error" in r.json()


def test_oversized_json_body_is_413(web: Web) -> None:
    """Any other route: a body far above what a form needs is refused before it is read."""
    mgr = web.as_("mgr-a")
    r = mgr.post("/api/v1/instruments", content=b'{"id": "' + b"x" * (3 * 1024 * 1024) + b'"}',
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert r.json()["error"]["code"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read, refused past the limit
        yield b'{"id": "'
        for _ in range(64):
            yield b"x" * 64 * 1024

    r = mgr.post("/api/v1/instruments", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert r.json()["error"]["code"] == "http_413"
