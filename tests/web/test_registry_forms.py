"""Registry edits made from the browser's forms (the JSON API they post to: new PATCH routes for
price items, people and service records), the form pages, and the spreadsheet import endpoint:
role boundaries, named field errors, the audit trail, the dry run and the upload limit."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.web.conftest import Web

GOOD_CSV = "仪器编号,仪器名称,原值(元),仪器类别\nIMP-1,拉曼光谱仪,500000,通用\nIMP-2,激光粒度仪,320000,专用\n"
BAD_CSV = "仪器编号,仪器名称,原值(元),仪器类别\nIMP-1,拉曼光谱仪,500000,通用\nIMP-3,坏的行,很多钱,通用\n"


def _fields(r: Any) -> list[str]:
    return [f["field"] for f in r.json()["error"].get("fields", [])]


def _price(web: Web) -> int:
    r = web.as_("mgr-a").post("/api/v1/instruments/ua-xrd/prices",
                              json={"item": "物相分析", "valid_from": "2025-01-01", "external_price": "150.00"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _service_id(web: Web) -> int:
    return int(web.sql("SELECT id FROM service_records WHERE record_no = 'SR-1'")[0][0])


# -- price items -----------------------------------------------------------------------------------


def test_patch_price(web: Web) -> None:
    pid = _price(web)
    r = web.as_("mgr-a").patch(f"/api/v1/prices/{pid}", json={"external_price": "180.00", "note": "2025 调价"})
    assert r.status_code == 200, r.text
    assert r.json()["external_price"] == "180.00" and r.json()["note"] == "2025 调价"
    assert web.as_("mgr-b").patch(f"/api/v1/prices/{pid}", json={"note": "x"}).status_code == 404
    assert web.as_("eva").patch(f"/api/v1/prices/{pid}", json={"note": "x"}).status_code == 403
    r = web.as_("mgr-a").patch(f"/api/v1/prices/{pid}", json={"external_price": "abc"})
    assert r.status_code == 422 and _fields(r) == ["external_price"]
    assert web.as_("ops").patch("/api/v1/prices/999999", json={"note": "x"}).status_code == 404
    audit = web.sql("SELECT actor FROM audit_log WHERE table_name = 'price_list' AND action = 'UPDATE'")
    assert audit and audit[-1][0].endswith("mgr-a")


# -- people ----------------------------------------------------------------------------------------


def test_patch_person(web: Web) -> None:
    r = web.as_("mgr-a").patch("/api/v1/people/p-zhang", json={"name": "张三丰"})
    assert r.status_code == 200 and r.json()["name"] == "张三丰"
    assert web.as_("mgr-b").patch("/api/v1/people/p-zhang", json={"name": "x"}).status_code == 404
    assert web.as_("eva").patch("/api/v1/people/p-zhang", json={"name": "x"}).status_code == 403
    r = web.as_("ops").patch("/api/v1/people/p-zhang", json={"org_id": "no-such-org"})
    assert r.status_code == 422 and _fields(r) == ["org_id"]
    r = web.as_("ops").patch("/api/v1/people/p-zhang", json={"name": ""})
    assert r.status_code == 422 and _fields(r) == ["name"]
    updates = web.sql("SELECT count(*) FROM audit_log WHERE table_name = 'platform_users' AND action = 'UPDATE'")
    assert updates == [(1,)]


# -- service records ---------------------------------------------------------------------------------


def test_patch_service_record(web: Web) -> None:
    sid = _service_id(web)
    c = web.as_("mgr-a")
    r = c.patch(f"/api/v1/service-records/{sid}", json={"amount": "480.00", "satisfaction": 5})
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == "480.00" and r.json()["satisfaction"] == 5
    r = c.patch(f"/api/v1/service-records/{sid}", json={"end_at": "2025-03-03T08:00:00+08:00"})
    assert r.status_code == 422 and _fields(r) == ["end_at"]
    r = c.patch(f"/api/v1/service-records/{sid}", json={"user_type": 125})
    assert r.status_code == 422 and _fields(r) == ["user_type"]
    r = c.patch(f"/api/v1/service-records/{sid}", json={"instrument_id": "ub-sem"})
    assert r.status_code == 404  # another unit's instrument is not even visible
    assert web.as_("mgr-b").patch(f"/api/v1/service-records/{sid}", json={"amount": "1"}).status_code == 404
    assert web.as_("eva").patch(f"/api/v1/service-records/{sid}", json={"amount": "1"}).status_code == 403
    # a time without zone is Beijing time, and a mixed pair does not crash
    r = c.patch(f"/api/v1/service-records/{sid}", json={"start_at": "2025-03-03T09:30:00"})
    assert r.status_code == 200 and r.json()["start_at"].startswith("2025-03-03T01:30:00")


def test_create_with_bad_fields_names_them(web: Web) -> None:
    c = web.as_("mgr-a")
    r = c.post("/api/v1/instruments", json={"id": "ua-new", "unit_id": "ua", "name": "新仪器",
                                           "original_value": "很多", "category": "通用"})
    assert r.status_code == 422 and _fields(r) == ["original_value"]
    r = c.post("/api/v1/service-records", json={
        "instrument_id": "ua-xrd", "record_no": "SR-9", "start_at": "2025-03-05T09:00:00",
        "end_at": "2025-03-05T11:00:00+08:00", "service_hours": "2.0", "user_type": 130})
    assert r.status_code == 201, r.text


# -- form pages ------------------------------------------------------------------------------------


def test_form_pages_roles(web: Web) -> None:
    pid = _price(web)
    sid = _service_id(web)
    pages = ["/registry/instruments/new", "/registry/instruments/ua-xrd/edit", "/registry/people",
             "/registry/people/new", "/registry/people/p-zhang/edit", "/registry/instruments/ua-xrd/prices/new",
             f"/registry/prices/{pid}/edit", "/registry/service-records", "/registry/service-records/new",
             f"/registry/service-records/{sid}/edit", "/registry/import"]
    mgr, ops, eva, other = web.as_("mgr-a"), web.as_("ops"), web.as_("eva"), web.as_("mgr-b")
    for path in pages:
        r = mgr.get(path)
        assert r.status_code == 200, (path, r.status_code)
        assert 'id="registry-form"' in r.text or 'id="reglist"' in r.text or 'id="import-form"' in r.text
        assert ops.get(path).status_code == 200, path
        assert eva.get(path).status_code == 403, path
    for path in pages[1:2] + pages[4:]:
        if path in ("/registry/service-records", "/registry/service-records/new", "/registry/import"):
            continue
        assert other.get(path).status_code == 404, path
    anon = web.client().get("/registry/import", follow_redirects=False)
    assert anon.status_code == 303 and anon.headers["location"].startswith("/login")
    page = mgr.get("/registry/instruments/ua-xrd/edit").text
    assert 'value="X射线衍射仪"' in page and 'value="1250000"' in page
    assert "张三" not in other.get("/registry/people").text


# -- spreadsheet import ------------------------------------------------------------------------------


def _upload(c: Any, text: str, *, kind: str = "instruments", dry_run: str = "true", unit: str | None = "ua",
            name: str = "ledger.csv", **extra: str) -> Any:
    data = {"kind": kind, "dry_run": dry_run, **extra}
    if unit is not None:
        data["unit_id"] = unit
    return c.post("/api/v1/imports", data=data, files={"file": (name, text.encode(), "text/csv")})


def test_import_kinds(web: Web) -> None:
    r = web.as_("mgr-a").get("/api/v1/imports/kinds")
    assert r.status_code == 200
    keys = [k["key"] for k in r.json()]
    assert "instruments" in keys and "services" in keys
    assert all(k["label"] for k in r.json())
    assert web.as_("eva").get("/api/v1/imports/kinds").status_code == 403


def test_import_dry_run_then_confirm(web: Web) -> None:
    c = web.as_("mgr-a")
    r = _upload(c, BAD_CSV)
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["status"] == "dry_run" and rep["ok"] is False
    assert [(x["row"], x["status"]) for x in rep["rows"]] == [(2, "accepted"), (3, "rejected")]
    assert rep["rows"][1]["errors"]
    # a rejected row refuses the whole batch: nothing is written
    r = _upload(c, BAD_CSV, dry_run="false")
    assert r.json()["status"] == "rejected"
    assert web.sql("SELECT count(*) FROM instruments WHERE name = '拉曼光谱仪'") == [(0,)]
    # a clean file: dry run, then the same file confirmed by its hash
    r = _upload(c, GOOD_CSV)
    assert r.json()["ok"] is True and r.json()["accepted"] == 2
    sha = r.json()["sha256"]
    assert sha == hashlib.sha256(GOOD_CSV.encode()).hexdigest()
    r = _upload(c, GOOD_CSV.replace("320000", "330000"), dry_run="false", expect_sha256=sha)
    assert r.status_code == 409 and r.json()["error"]["code"] == "file_changed"
    r = _upload(c, GOOD_CSV, dry_run="false", expect_sha256=sha)
    assert r.status_code == 200 and r.json()["status"] == "committed", r.text
    assert web.sql("SELECT count(*) FROM instruments WHERE unit_id = 'ua' AND name IN ('拉曼光谱仪', '激光粒度仪')") \
        == [(2,)]
    actors = web.sql("SELECT DISTINCT actor FROM audit_log WHERE table_name = 'instruments' AND action = 'INSERT'"
                     " AND after->>'name' = '拉曼光谱仪'")
    assert actors and actors[0][0].endswith("mgr-a")


def test_import_boundaries_and_errors(web: Web) -> None:
    mgr = web.as_("mgr-a")
    assert _upload(web.as_("eva"), GOOD_CSV).status_code == 403
    assert web.client().post("/api/v1/imports", data={"kind": "instruments"}).status_code == 401
    r = _upload(web.as_("mgr-b"), GOOD_CSV, unit="ua")
    assert r.status_code in (403, 404)
    r = _upload(mgr, GOOD_CSV, kind="spaceships")
    assert r.status_code == 422 and _fields(r) == ["kind"]
    r = mgr.post("/api/v1/imports", files={"kind": (None, "instruments"), "unit_id": (None, "ua")})
    assert r.status_code == 422 and _fields(r) == ["file"]
    assert mgr.post("/api/v1/imports", data={"kind": "instruments", "unit_id": "ua"}).status_code == 415
    r = _upload(mgr, GOOD_CSV, dry_run="maybe")
    assert r.status_code == 422 and _fields(r) == ["dry_run"]
    r = _upload(mgr, GOOD_CSV, expect_sha256="xyz")
    assert r.status_code == 422 and _fields(r) == ["expect_sha256"]
    r = mgr.post("/api/v1/imports", content=b'{"kind": "instruments"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    # a unit manager's own unit is the default
    assert _upload(mgr, GOOD_CSV, unit=None).json()["unit_id"] == "ua"
    # a path in the file name is cut to its base name
    assert _upload(mgr, GOOD_CSV, name="../../etc/ledger.csv").json()["file"] == "ledger.csv"
    # a file that is not a spreadsheet is a report line, not an error
    rep = _upload(mgr, "\x00\x01binary", name="x.bin").json()
    assert rep["problems"] and rep["ok"] is False


def test_import_upload_limit(web: Web) -> None:
    mgr = web.as_("mgr-a")
    big = "仪器编号,仪器名称,原值(元)\n" + "X,Y,1\n" * (11 * 1024 * 1024 // 6)
    r = _upload(mgr, big)
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "too_large" and "10 MB" in err["message"]
    r = mgr.post("/api/v1/imports?lang=en", content=b"x" * 100, headers={
        "Content-Type": "multipart/form-data; boundary=abc", "Content-Length": str(20 * 1024 * 1024)})
    assert r.status_code == 413 and "10 MB" in r.json()["error"]["message"]


def test_import_xlsx(web: Web) -> None:
    import io

    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["甲大学大型仪器台账"])  # a title row above the header, as people make them
    ws.append(["仪器编号", "仪器名称", "原值(元)", "仪器类别"])
    ws.append(["X-1", "电子探针", 2_100_000, "专用"])
    buf = io.BytesIO()
    wb.save(buf)
    c = web.as_("mgr-a")
    r = c.post("/api/v1/imports", data={"kind": "instruments", "dry_run": "false"},
               files={"file": ("台账.xlsx", buf.getvalue(),
                               "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "committed" and r.json()["header_row"] == 2 and r.json()["file"] == "台账.xlsx"
    assert web.sql("SELECT count(*) FROM instruments WHERE name = '电子探针' AND unit_id = 'ua'") == [(1,)]
