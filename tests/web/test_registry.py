"""Registry changes: validation that names the field, conflicts, and the audit trail of every change."""

from __future__ import annotations

import psycopg
import pytest

from tests.web.conftest import Web


def test_create_and_change_an_instrument_is_audited(web: Web) -> None:
    mgr = web.as_("mgr-a")
    r = mgr.post("/api/v1/instruments", json={"id": "ua-tem", "unit_id": "ua", "name": "透射电镜",
                                              "original_value": "5000000.00", "category": "专用"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "透射电镜"
    r = mgr.patch("/api/v1/instruments/ua-tem", json={"location": "物理楼 1", "rated_hours": "900.0"})
    assert r.status_code == 200 and r.json()["location"] == "物理楼 1"
    entries = web.as_("ops").get("/api/v1/audit", params={"table": "instruments", "key": "ua-tem"}).json()
    update, insert = entries[0], entries[1]
    assert insert["action"] == "INSERT" and insert["actor"] == "account:mgr-a" and insert["before"] is None
    assert insert["after"]["name"] == "透射电镜"
    assert update["action"] == "UPDATE" and update["actor"] == "account:mgr-a"
    assert update["before"]["location"] == "" and update["after"]["location"] == "物理楼 1"
    assert update["at"] >= insert["at"]


def test_audit_log_cannot_be_changed(web: Web) -> None:
    web.as_("ops").post("/api/v1/organisations", json={"id": "org-z", "name": "Z"})
    with psycopg.connect(web.dsn, autocommit=True) as conn:
        for sql in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log",
                    "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        n = conn.execute("SELECT count(*) FROM audit_log WHERE table_name = 'organisations'"
                         " AND row_key = 'org-z'").fetchone()
    assert n == (1,)


def test_secrets_never_reach_the_audit_log(web: Web) -> None:
    ops = web.as_("ops")
    ops.post("/api/v1/tokens", json={"name": "t"})
    ops.post("/api/v1/accounts", json={"login": "new-one", "role": "evaluator", "password": "long-enough-pw"})
    rows = web.sql("SELECT before::text, after::text FROM audit_log"
                   " WHERE table_name IN ('web_accounts', 'api_tokens', 'web_sessions')")
    assert rows
    for before, after in rows:
        for text in (before or "", after or ""):
            assert "scrypt$" not in text and "token_hash" not in text and "csrf_token" not in text


def test_login_and_logout_are_audited(web: Web) -> None:
    c = web.as_("eva")
    c.post("/api/v1/auth/logout")
    actions = web.sql("SELECT action, actor FROM audit_log WHERE table_name = 'web_sessions' ORDER BY id")
    assert actions == [("INSERT", "account:eva"), ("DELETE", "account:eva")]


def test_validation_errors_name_the_field(web: Web) -> None:
    ops = web.as_("ops")
    r = ops.post("/api/v1/instruments", json={"id": "bad id!", "unit_id": "ua", "name": "x", "category": "奇怪"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation"
    assert {f["field"] for f in err["fields"]} == {"id", "category"}
    assert "id" in err["message"] and "category" in err["message"]
    r = ops.post("/api/v1/service-records", json={
        "instrument_id": "ua-xrd", "record_no": "x", "start_at": "2025-03-01T10:00:00+08:00",
        "end_at": "2025-03-01T09:00:00+08:00", "service_hours": "1.0", "user_type": 130})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "end_at"
    r = ops.post("/api/v1/service-records", json={"instrument_id": "ua-xrd"}, headers={"Accept-Language": "en"})
    assert r.status_code == 422
    assert "check these fields" in r.json()["error"]["message"]
    assert {"record_no", "start_at", "end_at", "service_hours", "user_type"} <= {
        f["field"] for f in r.json()["error"]["fields"]}


def test_conflicts_and_missing_references(web: Web) -> None:
    ops = web.as_("ops")
    r = ops.post("/api/v1/instruments", json={"id": "ua-xrd", "unit_id": "ua", "name": "重复"})
    assert r.status_code == 409 and "ua-xrd" in r.json()["error"]["message"]
    r = ops.post("/api/v1/instruments", json={"id": "x2", "unit_id": "nope", "name": "无单位"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = ops.post("/api/v1/units", json={"id": "uc", "org_id": "no-such-org", "name": "丙"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reference"
    r = ops.post("/api/v1/service-records", json={
        "instrument_id": "ua-xrd", "record_no": "SR-1", "start_at": "2025-03-01T09:00:00+08:00",
        "end_at": "2025-03-01T10:00:00+08:00", "service_hours": "1.0", "user_type": 130})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert ops.get("/api/v1/nothing-here").status_code == 404


def test_price_list_and_service_records_round_trip(web: Web) -> None:
    mgr = web.as_("mgr-a")
    r = mgr.post("/api/v1/instruments/ua-xrd/prices", json={
        "item": "物相分析", "basis": "per_sample", "internal_price": "80.00", "external_price": "150.00",
        "valid_from": "2025-01-01"})
    assert r.status_code == 201
    price_id = r.json()["id"]
    assert [p["item"] for p in mgr.get("/api/v1/instruments/ua-xrd/prices").json()] == ["物相分析"]
    detail = web.client().get("/api/v1/public/instruments/ua-xrd").json()
    assert [p["item"] for p in detail["prices"]] == ["物相分析"]
    assert mgr.delete(f"/api/v1/prices/{price_id}").status_code == 204
    r = mgr.post("/api/v1/service-records", json={
        "instrument_id": "ua-xrd", "record_no": "SR-2", "start_at": "2025-04-01T09:00:00+08:00",
        "end_at": "2025-04-01T11:00:00+08:00", "service_hours": "2.0", "amount": "300.00", "user_type": 130,
        "applicant_org_name": "丙科技有限公司"})
    assert r.status_code == 201 and r.json()["unit_id"] == "ua"
    assert len(mgr.get("/api/v1/service-records", params={"year": 2025}).json()) == 2
    assert mgr.delete(f"/api/v1/service-records/{r.json()['id']}").status_code == 204
    audit = web.sql("SELECT action FROM audit_log WHERE table_name = 'service_records' AND actor = 'account:mgr-a'"
                    " ORDER BY id")
    assert audit == [("INSERT",), ("DELETE",)]


def test_people_and_identity_mapping(web: Web) -> None:
    mgr = web.as_("mgr-a")
    card = "hmac-sha256:" + "c0ffee" * 10 + "c0ff"
    r = mgr.post("/api/v1/people", json={"id": "p-li", "name": "李四", "org_id": "org-a",
                                         "identities": [{"method": "card", "identifier": card}]})
    assert r.status_code == 201
    assert ("card", card, "p-li", "李四") in [
        (m["method"], m["identifier"], m["user_id"], m["name"]) for m in mgr.get("/api/v1/units/ua/identities").json()]
    assert mgr.delete(f"/api/v1/units/ua/identities/card/{card}").status_code == 204
    assert mgr.delete(f"/api/v1/units/ua/identities/card/{card}").status_code == 404
