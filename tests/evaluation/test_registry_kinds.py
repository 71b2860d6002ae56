"""The registry kinds beyond ledgers and service records: exemptions, price lists, service cases,
platform users with their organisations, identity mapping. Each from a messy sheet (title rows,
merged cells, Chinese dates, blank rows), all or nothing with a per-row report, through the
importer and through `jishi` as a user runs it."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openpyxl import Workbook

from server import admin
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.registry.importer import KIND_LABELS, KINDS, ImportOptions, ImportReport, Kind, run_import
from server.registry.kind_names import KIND_NAMES
from sim.devstack import role_dsn
from tests.evaluation import scenario

Conn = psycopg.Connection[tuple[Any, ...]]


def sheet(title: str, header: list[str], rows: list[list[Any]], merges: tuple[str, ...] = ()) -> bytes:
    """A sheet as units make them: a merged title row, a blank row, the header, the rows."""
    wb = Workbook()
    ws = wb.active
    ws.append([title])
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(header))
    ws.append([])
    ws.append(header)
    for r in rows:
        ws.append(r)
    for m in merges:
        ws.merge_cells(m)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@pytest.fixture
def db(fresh_db: str) -> str:
    scenario.build_registry(fresh_db)
    return fresh_db


def count(conn: Conn, query: str, *args: Any) -> int:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


def rejected(rep: ImportReport) -> dict[int, str]:
    return {r.row: "；".join(r.errors) for r in rep.rows if r.status == "rejected"}


def run(conn: Conn, kind: Kind, data: bytes, **kw: Any) -> ImportReport:
    return run_import(conn, kind, "U1", data, f"{kind}.xlsx", **kw)


def test_kinds_are_discoverable() -> None:
    assert tuple(KINDS) == KIND_NAMES
    assert {"instruments", "services", "exemptions", "prices", "cases", "users", "identities"} == set(KINDS)
    assert KIND_LABELS["prices"] == "收费标准" and KIND_LABELS["cases"] == "典型服务案例"
    assert all(spec.description for spec in KINDS.values())


EXEMPTION_HEADER = [
    "序号",
    "仪器编号",
    "仪器名称",
    "不开放理由",
    "审批部门",
    "批准文号",
    "批准日期",
    "有效期起",
    "有效期至",
]


def exemption_rows(bad: bool) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [
            1,
            "I4",
            "X射线衍射仪",
            "承担国家重点研发计划保密任务",
            "自治区科技厅",
            "内科发〔2025〕3号",
            "2025年1月10日",
            "2025-01-01",
            "2025年12月31日",
        ],
        [2, "I3", "液相色谱仪", "设备老化，拟报废", None, None, None, None, None],  # a request, not approved
    ]
    if bad:
        rows += [
            [3, "I1", "透射电子显微镜", "维修", "教育厅", None, None, None, None],  # half an approval
            [4, "NOPE", "?", "理由", None, None, None, None, None],
            [5, "I2", "核磁", "", None, None, None, "2025-06-01", "2025-01-01"],
        ]
    return rows


def test_exemptions(db: str) -> None:
    with psycopg.connect(db) as conn:
        before = count(conn, "SELECT count(*) FROM instrument_exemptions")
        rep = run(conn, "exemptions", sheet("不开放仪器审批表", EXEMPTION_HEADER, exemption_rows(bad=True)))
        assert rep.status == "rejected" and rep.header_row == 3 and (rep.accepted, rep.rejected) == (2, 3)
        errors = rejected(rep)
        assert "缺少批准日期" in errors[6]
        assert "NOPE" in errors[7]
        assert "缺少不开放理由" in errors[8] and "有效期至早于有效期起" in errors[8]
        assert count(conn, "SELECT count(*) FROM instrument_exemptions") == before  # nothing written
        assert "第 6 行 拒绝" in rep.text()

        rep = run(conn, "exemptions", sheet("不开放仪器审批表", EXEMPTION_HEADER, exemption_rows(bad=False)))
        assert rep.status == "committed" and rep.accepted == 2, rep.text()
        run(conn, "exemptions", sheet("不开放仪器审批表", EXEMPTION_HEADER, exemption_rows(bad=False)))  # again
        rows = conn.execute(
            "SELECT instrument_id, approved_by, approval_ref, approved_on, valid_from, valid_to FROM"
            " instrument_exemptions WHERE import_batch_id IS NOT NULL ORDER BY instrument_id"
        ).fetchall()
        assert rows == [
            ("I3", "", "", None, None, None),
            ("I4", "自治区科技厅", "内科发〔2025〕3号", date(2025, 1, 10), date(2025, 1, 1), date(2025, 12, 31)),
        ]
        # the approved exemption takes I4 out of the open rate's denominator; the request does not
        ev = compute(conn, Period.year(2025), ["U1"])
        assert ev.instruments["I4"].exempted and not ev.instruments["I3"].exempted


PRICE_HEADER = ["仪器编号", "收费项目", "校内价格（元/小时）", "校外价格（元/小时）", "执行日期", "备注"]


def test_prices(db: str) -> None:
    good: list[list[Any]] = [
        ["I1", "机时", 200, "¥400.00", "2025年1月1日", "含操作"],
        [None, "制样", "50元/样", "80元/样", datetime(2025, 1, 1), None],  # merged instrument; basis in the cell
        [],
        ["I2", "机时", "1,200", "1,500元", 45658, None],  # 45658 = 2025-01-01
    ]
    bad: list[list[Any]] = [
        ["I1", "机时", "100元/样", 300, "2025-03-01", None],  # per sample in a per-hour column
        ["I2", "测试", None, None, "2025-03-01", None],
        ["I2", "测试2", 10, 20, None, None],
        ["I1", "机时", 200, 400, "2025年1月1日", "重复"],
    ]
    with psycopg.connect(db) as conn:
        rep = run(conn, "prices", sheet("价格目录", PRICE_HEADER, good + bad, ("A4:A5",)))
        assert rep.status == "rejected" and (rep.accepted, rep.rejected) == (3, 4), rep.text()
        errors = rejected(rep)
        assert "计价单位不一致" in errors[8]
        assert "校内价格和校外价格至少填一项" in errors[9]
        assert "缺少执行日期" in errors[10]
        assert "与第 4 行重复" in errors[11]
        assert count(conn, "SELECT count(*) FROM price_list") == 0

        rep = run(conn, "prices", sheet("价格目录", PRICE_HEADER, good, ("A4:A5",)))
        assert rep.status == "committed" and rep.accepted == 3, rep.text()
        rows = conn.execute(
            "SELECT instrument_id, item, basis, internal_price, external_price, valid_from, note FROM price_list"
            " ORDER BY instrument_id, item"
        ).fetchall()
        assert rows == [
            ("I1", "制样", "per_sample", Decimal("50.00"), Decimal("80.00"), date(2025, 1, 1), ""),
            ("I1", "机时", "per_hour", Decimal("200.00"), Decimal("400.00"), date(2025, 1, 1), "含操作"),
            ("I2", "机时", "per_hour", Decimal("1200.00"), Decimal("1500.00"), date(2025, 1, 1), ""),
        ]


CASE_HEADER = ["案例名称", "完成日期", "仪器编号", "成果类型", "服务对象", "佐证材料", "案例简介"]


def test_cases(db: str) -> None:
    good: list[list[Any]] = [
        ["稀土永磁材料微结构表征", "2025年5月8日", "I1", "期刊论文", "包头稀土研究院", "doi:10.1000/xyz123", "SCI"],
        ["乳制品检测方法", 45800, None, "行业标准", "草原乳业有限公司", "QB/T 1234-2025", ""],
    ]
    bad: list[list[Any]] = [
        ["无佐证的案例", "2025-06-01", "I1", "其他", "某公司", "", ""],
        ["", "2025-06-01", "I9", "专著", "", "x", ""],
    ]
    with psycopg.connect(db) as conn:
        rep = run(conn, "cases", sheet("典型服务案例", CASE_HEADER, good + bad))
        assert rep.status == "rejected" and rep.rejected == 2
        errors = rejected(rep)
        assert "缺少佐证材料" in errors[6]
        assert "缺少案例名称" in errors[7] and "I9" in errors[7] and "成果类型" in errors[7]
        assert count(conn, "SELECT count(*) FROM service_cases") == 1  # the scenario's own

        assert run(conn, "cases", sheet("典型服务案例", CASE_HEADER, good)).status == "committed"
        assert run(conn, "cases", sheet("典型服务案例", CASE_HEADER, good)).status == "committed"  # updates
        rows = conn.execute(
            "SELECT title, occurred_on, instrument_id, kind, evidence FROM service_cases"
            " WHERE import_batch_id IS NOT NULL ORDER BY occurred_on"
        ).fetchall()
        assert rows == [
            ("稀土永磁材料微结构表征", date(2025, 5, 8), "I1", "论文", "doi:10.1000/xyz123"),
            ("乳制品检测方法", date(2025, 5, 23), None, "标准", "QB/T 1234-2025"),
        ]
        assert compute(conn, Period.year(2025), ["U1"]).units["U1"].cases == 3


USER_HEADER = ["用户编号", "姓名", "所在单位", "单位类型", "是否关联单位"]


def test_users_and_organisations(db: str) -> None:
    good: list[list[Any]] = [
        [None, "Carol Zhao", "草原乳业有限公司", None, None],  # existing user, found by name + organisation
        ["u-erin", "Erin Ma", "内蒙古农业大学", "高校", "否"],  # new organisation, external
        ["u-frank", "Frank Liu", "内蒙古大学第二附属医院", "医院", "是"],  # new, affiliated: internal
        [None, "Gao Yan", "内蒙古大学", None, None],  # the unit's own organisation
    ]
    bad: list[list[Any]] = [
        ["carol", "Someone Else", "草原乳业有限公司", None, None],  # id of another person
        ["u-x", "X", "内蒙古农业大学", "高校", "是"],  # contradicts row 5's 否
        ["u-y", "Y", None, None, None],
        ["u-z", "Z", "同名单位", None, None],  # two organisations have this name
    ]
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES ('D1', '同名单位'), ('D2', '同名单位')")
        conn.commit()
        rep = run(conn, "users", sheet("平台用户", USER_HEADER, good + bad))
        assert rep.status == "rejected" and (rep.accepted, rep.rejected) == (4, 4), rep.text()
        errors = rejected(rep)
        assert "已登记为“Carol Zhao”" in errors[8]
        assert "前后不一致" in errors[9]
        assert "缺少所在单位" in errors[10]
        assert "请填写单位编号" in errors[11] and "D1" in errors[11]
        assert count(conn, "SELECT count(*) FROM platform_users") == 4

        rep = run(conn, "users", sheet("平台用户", USER_HEADER, good))
        assert rep.status == "committed", rep.text()
        assert [r.key for r in rep.rows][:3] == ["carol", "u-erin", "u-frank"]
        users: dict[str, str] = dict(
            conn.execute(
                "SELECT p.id, o.name || '/' || o.kind FROM platform_users p JOIN organisations o ON o.id = p.org_id"
            ).fetchall()
        )
        assert users["u-erin"] == "内蒙古农业大学/university" and users["u-frank"] == "内蒙古大学第二附属医院/hospital"
        gao = rep.rows[3].key
        assert users[gao] == "内蒙古大学/university" and gao.startswith("U1-")
        affiliated = {
            r[0]
            for r in conn.execute(
                "SELECT o.name FROM unit_affiliations a JOIN organisations o ON o.id = a.org_id WHERE a.unit_id = 'U1'"
            )
        }
        assert affiliated == {"内蒙古大学附属医院", "内蒙古大学第二附属医院"}
        run(conn, "users", sheet("平台用户", USER_HEADER, good))
        assert count(conn, "SELECT count(*) FROM platform_users") == 7  # re-import: same ids


def test_identities_and_card_hashes(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = b"deployment-card-key"
    hashed = "hmac-sha256:" + hmac.new(key, b"E0041234", hashlib.sha256).hexdigest()
    header = ["姓名", "所在单位", "系统用户名", "卡号"]
    good: list[list[Any]] = [
        ["Alice Wang", "内蒙古大学", "alice2", None],
        ["Dave Sun", None, "dave-lab", " e0041234 "],  # raw card number: hashed with the key
        ["Carol Zhao", "草原乳业有限公司", None, "hmac-sha256:" + "ab" * 32],
    ]
    bad: list[list[Any]] = [
        ["Nobody", None, "ghost", None],
        ["Bob Li", None, "alice2", None],  # alice2 is Alice's two rows up
        ["Bob Li", None, None, None],
    ]
    with psycopg.connect(db) as conn:
        rep = run(conn, "identities", sheet("身份映射", header, good + bad), options=ImportOptions(card_key=key))
        assert rep.status == "rejected" and (rep.accepted, rep.rejected) == (3, 3), rep.text()
        errors = rejected(rep)
        assert "Nobody" in errors[7] and "不存在" in errors[7]
        assert "对应了两个用户" in errors[8]
        assert "缺少身份标识" in errors[9]
        assert count(conn, "SELECT count(*) FROM identity_map") == 4
        # without the key a raw card number is refused, and the report never repeats it
        rep = run(conn, "identities", sheet("身份映射", header, good))
        assert rep.status == "rejected" and "card-key-file" in rejected(rep)[5]
        assert "E0041234" not in json.dumps(rep.as_dict(), ensure_ascii=False).upper()

    path = tmp_path / "身份映射.xlsx"
    path.write_bytes(sheet("身份映射", header, good))
    key_file = tmp_path / "card.key"
    key_file.write_bytes(key + b"\n")
    argv = ["--dsn", role_dsn(db, "jishi_admin"),
            "import", "--kind", "identities", str(path), "--unit", "U1", "--card-key-file", str(key_file)]
    assert admin.main(argv) == 0
    assert "已导入" in capsys.readouterr().out
    with psycopg.connect(db) as conn:
        ids: dict[str, str] = dict(
            conn.execute("SELECT identifier, user_id FROM identity_map WHERE unit_id = 'U1'").fetchall()
        )
    assert ids["alice2"] == "alice" and ids["dave-lab"] == "dave" and ids[hashed] == "dave"
    assert ids["hmac-sha256:" + "ab" * 32] == "carol"
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"), "registry", "list", "identities", "--unit", "U1"]) == 0
    listing = capsys.readouterr().out
    assert "dave-lab" in listing and "Dave Sun" in listing and "E0041234" not in listing


def test_cli_forms_dry_run_and_report(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "案例.csv"
    path.write_bytes("案例名称,日期,佐证材料\n技术服务支撑新产品,2025/9/1,合同 2025-021\n".encode("gb18030"))
    report = tmp_path / "r.json"
    argv = ["--dsn", role_dsn(db, "jishi_admin"),
            "import", "cases", str(path), "--unit", "U1", "--dry-run", "--report", str(report)]
    assert admin.main(argv) == 0
    assert "试运行" in capsys.readouterr().out
    assert json.loads(report.read_text(encoding="utf-8"))["status"] == "dry_run"
    with psycopg.connect(db) as conn:
        assert count(conn, "SELECT count(*) FROM service_cases") == 1
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"),
                       "import", "--kind", "cases", str(path), "--unit", "U1"]) == 0
    with psycopg.connect(db) as conn:  # the audit log names the console user as the actor
        query = "SELECT count(*) FROM audit_log WHERE table_name = 'service_cases' AND actor LIKE 'cli:%%'"
        assert count(conn, query) == 1
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"),
                       "import", "prices", str(path), "--kind", "cases", "--unit", "U1"]) == 2  # 2 kinds
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"), "import", str(path), "--unit", "U1"]) == 2  # no kind
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"), "registry", "kinds"]) == 0
    out = capsys.readouterr().out
    assert all(label in out for label in KIND_LABELS.values())
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"), "registry", "list", "cases", "--unit", "U1"]) == 0
    assert "技术服务支撑新产品" in capsys.readouterr().out
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"), "registry", "list", "imports", "--unit", "U1"]) == 0
    assert "dry_run" in capsys.readouterr().out
    # a file with none of a kind's required columns is refused as a whole
    path.write_bytes("名称,备注\nx,y\n".encode())
    assert admin.main(["--dsn", role_dsn(db, "jishi_admin"), "import", "exemptions", str(path), "--unit", "U1"]) == 2
    assert "表头缺少必需的列" in capsys.readouterr().out


def test_service_records_with_sample_counts(db: str) -> None:
    header = ["仪器编号", "开始时间", "结束时间", "服务机时", "样品数", "金额", "用户类型"]
    good: list[list[Any]] = [["I2", "2025-08-01 09:00", "2025-08-01 10:00", 1, "10个", 1000, "外部"]]
    bad: list[list[Any]] = [["I2", "2025-08-02 09:00", "2025-08-02 10:00", 1, "2.5", 250, "外部"]]
    with psycopg.connect(db) as conn:
        rep = run(conn, "services", sheet("送样测试记录", header, good + bad))
        assert rep.status == "rejected" and "样品数“2.5”应为非负整数" in rejected(rep)[5]
        rep = run(conn, "services", sheet("送样测试记录", header, good))
        assert rep.status == "committed", rep.text()
        assert count(conn, "SELECT sample_count FROM service_records WHERE import_batch_id = %s", rep.batch_id) == 10
