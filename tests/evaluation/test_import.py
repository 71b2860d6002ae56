"""Importing the spreadsheets units keep: messy XLSX (title rows, merged cells, Chinese dates,
blank and totals rows, bad values) and GBK CSV; all or nothing, with a per-row report."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from openpyxl import Workbook

from server import admin
from server.registry.importer import run_import
from server.store.times import TZ
from sim.devstack import role_dsn

HEADER = ["序号", "仪器编号", "仪器名称", "原值（万元）", "类别", "验收日期", "纳入平台日期", "存放地点", "共享方式"]


def ledger(bad_row: bool) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append(["内蒙古大学大型仪器设备台账（2025年）"])
    ws.merge_cells("A1:I1")
    ws.append([])
    ws.append(HEADER)
    ws.append([1, "ZC-001", "透射电子显微镜", 300, "通用", "2024年3月5日", datetime(2024, 4, 1), "主楼A座", "外部共享"])
    ws.append([2, "ZC-002", "核磁共振波谱仪", "¥1,205,000元", "专用", "2024/6/3", "2024.7.1", None, "对外开放"])
    ws.append([3, "ZC-003", "液相色谱仪", 25, "通用", "2023 年 11 月 20 日", None, None, "内部共享"])
    ws.merge_cells("H4:H6")  # one location for three rows, as ledgers do
    ws.append([])
    if bad_row:
        ws.append([4, "ZC-004", "X射线衍射仪", "约五十", "通用", "2024年13月1日", None, "实验楼", "外部共享"])
    else:
        ws.append([4, "ZC-004", "X射线衍射仪", "50", "通用", "2024年2月1日", None, "实验楼", "外部共享"])
    ws.append([5, "ZC-005", "质谱仪", 80, "专用仪器", 45292, None, "实验楼", "不共享"])  # 45292 = 2024-01-01
    ws.append(["合计", None, None, 575.5])
    return _save(wb)


def _save(wb: Workbook) -> bytes:
    import io

    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@pytest.fixture
def db(scenario_db: str) -> str:
    return scenario_db


def _count(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_messy_ledger_all_or_nothing(db: str) -> None:
    with psycopg.connect(db) as conn:
        rep = run_import(conn, "instruments", "U1", ledger(bad_row=True), "台账.xlsx")
        assert rep.status == "rejected" and rep.header_row == 3
        by_row = {r.row: r for r in rep.rows}
        assert by_row[8].status == "rejected"
        assert any("原值" in e and "约五十" in e for e in by_row[8].errors)
        assert any("验收日期" in e and "不存在" in e for e in by_row[8].errors)
        assert by_row[10].status == "skipped"  # 合计
        assert rep.accepted == 4 and rep.rejected == 1
        assert _count(conn, "SELECT count(*) FROM instruments WHERE id LIKE 'U1-ZC-%'") == 0  # nothing written
        assert _count(conn, "SELECT count(*) FROM import_batches WHERE status = 'rejected'") == 1
        assert "第 8 行 拒绝" in rep.text()

        rep = run_import(conn, "instruments", "U1", ledger(bad_row=False), "台账.xlsx")
        assert rep.status == "committed" and rep.accepted == 5, rep.text()
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT internal_no, id, original_value, category, accepted_on, registered_on, location, sharing_mode"
                " FROM instruments WHERE unit_id = 'U1' AND internal_no <> ''"
            )
        }
        assert rows["ZC-001"] == (
            "U1-ZC-001",
            Decimal("3000000.00"),
            "通用",
            date(2024, 3, 5),
            date(2024, 4, 1),
            "主楼A座",
            "外部共享",
        )
        assert rows["ZC-002"][1:6] == (Decimal("1205000.00"), "专用", date(2024, 6, 3), date(2024, 7, 1), "主楼A座")
        assert rows["ZC-002"][6] == "外部共享"
        assert rows["ZC-003"][3] == date(2023, 11, 20) and rows["ZC-003"][5] == "主楼A座"
        assert rows["ZC-004"][1] == Decimal("500000.00")
        assert rows["ZC-005"][2:4] == ("专用", date(2024, 1, 1)) and rows["ZC-005"][6] == "不共享"

        # the same sheet again updates, never duplicates
        rep = run_import(conn, "instruments", "U1", ledger(bad_row=False), "台账.xlsx")
        assert rep.status == "committed"
        assert _count(conn, "SELECT count(*) FROM instruments WHERE id LIKE 'U1-ZC-%'") == 5


def services_sheet(bad: bool) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append(["2025年对外服务记录"])
    ws.merge_cells("A1:H1")
    ws.append(
        [
            "仪器编号",
            "开始时间",
            "结束时间",
            "服务机时",
            "金额",
            "用户类型",
            "服务方向",
            "申请人",
            "申请人单位",
            "服务方式",
            "满意度",
        ]
    )
    ws.append(
        [
            "I1",
            "2025年3月10日 14:00",
            "2025/3/10 18:00",
            4,
            "¥2,000.00",
            "外部",
            "科学研究",
            "Carol Zhao",
            "草原乳业有限公司",
            "占用",
            "满意",
        ]
    )
    ws.append(
        [
            None,
            datetime(2025, 3, 11, 9),
            datetime(2025, 3, 11, 11),
            "2",
            1000,
            "130",
            "136",
            "@张三",
            "包头稀土研究院",
            "委托服务",
            5,
        ]
    )
    ws.merge_cells("A3:A4")
    ws.append([])
    if bad:
        ws.append(["I1", "2025-04-01 12:00", "2025-04-01 10:00", 2, 100, "外部", "教学", "某人", "某公司", "技术", ""])
        ws.append(["NOPE", "2025-04-02 09:00", "2025-04-02 10:00", 1, 100, "外单位", "", "某人", "", "", ""])
        ws.append(["I2", "2025-07-15 09:00", "2025-07-15 10:00", 3, 100, "外部", "", "某人", "", "", ""])
    ws.append(["I2", "2025年7月15日9时", "2025年7月15日12时", 3, "1500.5", "对外", "", "", "", "远程", ""])
    return _save(wb)


def test_service_records_import(db: str, tmp_path: Path) -> None:
    with psycopg.connect(db) as conn:
        rep = run_import(conn, "services", "U1", services_sheet(bad=True), "服务记录.xlsx")
        assert rep.status == "rejected"
        errors = {r.row: "；".join(r.errors) for r in rep.rows if r.status == "rejected"}
        assert "结束时间不晚于开始时间" in errors[6]
        assert "NOPE" in errors[7]
        assert "超过起止时间跨度" in errors[8]
        assert _count(conn, "SELECT count(*) FROM service_records WHERE import_batch_id IS NOT NULL") == 0

        rep = run_import(conn, "services", "U1", services_sheet(bad=False), "服务记录.xlsx")
        assert rep.status == "committed" and rep.accepted == 3, rep.text()
        recs = conn.execute(
            "SELECT instrument_id, start_at, service_hours, amount, user_type, direction, way, applicant_user_id,"
            " applicant_org_id, applicant_name, satisfaction FROM service_records"
            " WHERE import_batch_id = %s ORDER BY start_at",
            (rep.batch_id,),
        ).fetchall()
        assert recs[0] == (
            "I1",
            datetime(2025, 3, 10, 14, tzinfo=TZ),
            Decimal("4.0"),
            Decimal("2000.00"),
            130,
            135,
            "占用",
            "carol",
            "O3",
            "Carol Zhao",
            4,
        )
        # merged instrument cell: row 4 belongs to I1 too
        assert recs[1][0] == "I1" and recs[1][4:9] == (130, 136, "委托", None, "O4")
        assert recs[1][9] == "@张三"  # stored as typed; exports escape it
        assert recs[2][:4] == ("I2", datetime(2025, 7, 15, 9, tzinfo=TZ), Decimal("3.0"), Decimal("1500.50"))
        # importing again: same record numbers (content hashes), no duplicates
        run_import(conn, "services", "U1", services_sheet(bad=False), "服务记录.xlsx")
        assert _count(conn, "SELECT count(*) FROM service_records WHERE import_batch_id IS NOT NULL") == 3

    # the national-platform export with real names escapes the name that looks like a formula
    out = tmp_path / "nrii"
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"),
                       "export", "nrii", "--year", "2025", "--out", str(out), "--include-names"]) == 0
    csv_text = (out / "nrii-2025-services.csv").read_text(encoding="utf-8-sig")
    assert "'@张三" in csv_text and ",@张三" not in csv_text
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"),
                       "export", "nrii", "--year", "2025", "--out", str(out)]) == 0
    assert "张三" not in (out / "nrii-2025-services.csv").read_text(encoding="utf-8-sig")
    assert "Carol Zhao" not in (out / "nrii-2025.json").read_text(encoding="utf-8")


def test_gbk_csv_through_the_cli(db: str, tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_bytes(
        "仪器编号,开始时间,结束时间,服务机时,金额,用户类型\nI2,2025-08-01 09:00,2025-08-01 10:00,1,200,外部\n".encode(
            "gb18030"
        )
    )
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"),
                       "import", "services", str(path), "--unit", "U1", "--dry-run"]) == 0
    with psycopg.connect(db) as conn:
        assert _count(conn, "SELECT count(*) FROM service_records WHERE import_batch_id IS NOT NULL") == 0
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"), "import", "services", str(path), "--unit", "U1"]) == 0
    with psycopg.connect(db) as conn:
        assert _count(conn, "SELECT count(*) FROM service_records WHERE import_batch_id IS NOT NULL") == 1


def test_file_without_the_required_columns(db: str) -> None:
    wb = Workbook()
    wb.active.append(["名称", "备注"])
    wb.active.append(["something", "x"])
    with psycopg.connect(db) as conn:
        rep = run_import(conn, "instruments", "U1", _save(wb), "x.xlsx")
    assert rep.status == "rejected" and rep.problems and "表头缺少" in rep.problems[0]
