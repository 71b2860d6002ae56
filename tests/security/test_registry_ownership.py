"""Issue 13 items 1-3 replayed: the graded unit cannot take another unit's people, cannot cross
units through the `users` / `identities` imports, and cannot move its own figures (rated hours,
dates, affiliations...) without the operator's acceptance.

Seed (tests/web/conftest.py): units ua / ub with managers mgr-a / mgr-b; p-zhang registered by ua;
here unit ub registers its own person p-b (their name must never reach unit ua).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from openpyxl import load_workbook

from tests.web.conftest import Web

B_NAME = "乙单位的王五"
PERIOD = "2025-03-01..2025-04-01"


def _b_person(web: Web) -> None:
    r = web.as_("mgr-b").post("/api/v1/people", json={"id": "p-b", "name": B_NAME, "org_id": "ext-co",
                                                      "identities": [{"method": "os", "identifier": "LAB\\wang"}]})
    assert r.status_code == 201, r.text
    assert web.sql("SELECT owner_unit_id FROM platform_users WHERE id = 'p-b'") == [("ub",)]


def _import(c: Any, kind: str, text: str, dry_run: str = "false", unit: str = "ua") -> Any:
    return c.post("/api/v1/imports", data={"kind": kind, "unit_id": unit, "dry_run": dry_run},
                  files={"file": (f"{kind}.csv", text.encode(), "text/csv")})


def _utilization(c: Any) -> Any:
    return c.get(f"/api/v1/evaluation/{PERIOD}/units/ua").json()["unit"]["indicators"]["utilization"]


# -- item 1: another unit's people ------------------------------------------------------------------


def test_a_manager_cannot_map_identities_to_another_units_person(web: Web) -> None:
    _b_person(web)
    mgr_a = web.as_("mgr-a")
    r = mgr_a.put("/api/v1/units/ua/identities", json={"method": "os", "identifier": "x", "user_id": "p-b"})
    assert r.status_code == 404 and B_NAME not in r.text
    # nor to a person nobody registered for the unit (the operator's)
    web.as_("ops").post("/api/v1/people", json={"id": "p-ops", "name": "运营登记", "org_id": "ext-co"})
    r = mgr_a.put("/api/v1/units/ua/identities", json={"method": "os", "identifier": "y", "user_id": "p-ops"})
    assert r.status_code == 404
    # nor into the other unit's map
    r = mgr_a.put("/api/v1/units/ub/identities", json={"method": "os", "identifier": "x", "user_id": "p-zhang"})
    assert r.status_code in (403, 404)
    assert web.sql("SELECT count(*) FROM identity_map WHERE user_id IN ('p-b', 'p-ops') AND unit_id = 'ua'") == [(0,)]
    # its own people and the people it registers: yes
    assert mgr_a.put("/api/v1/units/ua/identities", json={"method": "os", "identifier": "z",
                                                          "user_id": "p-zhang"}).status_code == 200
    # the operator maps anyone
    assert web.as_("ops").put("/api/v1/units/ua/identities", json={"method": "os", "identifier": "w",
                                                                   "user_id": "p-b"}).status_code == 200


def test_a_manager_cannot_move_a_person_to_another_organisation(web: Web) -> None:
    _b_person(web)
    mgr_a, ops = web.as_("mgr-a"), web.as_("ops")
    assert mgr_a.patch("/api/v1/people/p-b", json={"org_id": "org-a"}).status_code == 404
    # of its own person, the organisation is only proposed
    r = mgr_a.patch("/api/v1/people/p-zhang", json={"org_id": "org-a"})
    assert r.status_code == 200 and r.json()["org_id"] == "ext-co" and r.json()["proposed"] == {"org_id": "org-a"}
    assert web.sql("SELECT org_id FROM platform_users WHERE id = 'p-zhang'") == [("ext-co",)]
    [prop] = ops.get("/api/v1/proposals").json()
    assert (prop["target"], prop["row_key"], prop["before"], prop["after"]) == ("platform_users", "p-zhang",
                                                                                 "ext-co", "org-a")
    # the other unit neither sees nor decides it; evaluators see the person as a pseudonym
    assert web.as_("mgr-b").get("/api/v1/proposals").json() == []
    assert web.as_("mgr-b").post(f"/api/v1/proposals/{prop['id']}/accept").status_code == 403
    assert web.as_("eva").get("/api/v1/proposals").json()[0]["row_key"] != "p-zhang"
    assert ops.post(f"/api/v1/proposals/{prop['id']}/accept").json()["status"] == "accepted"
    assert web.sql("SELECT org_id FROM platform_users WHERE id = 'p-zhang'") == [("org-a",)]
    assert ops.post(f"/api/v1/proposals/{prop['id']}/accept").status_code == 409


def test_people_lists_and_pages_do_not_show_another_units_person(web: Web) -> None:
    _b_person(web)
    mgr_a = web.as_("mgr-a")
    assert "p-b" not in [p["id"] for p in mgr_a.get("/api/v1/people").json()]
    assert B_NAME not in mgr_a.get("/registry/people").text
    assert mgr_a.get("/registry/people/p-b/edit").status_code == 404
    assert B_NAME not in mgr_a.get("/api/v1/units/ua/identities").text
    assert mgr_a.get("/api/v1/units/ub/identities").status_code == 404


# -- item 2: the imports ----------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", ["true", "false"])
def test_users_import_cannot_take_or_show_another_units_person(web: Web, dry_run: str) -> None:
    _b_person(web)
    mgr_a = web.as_("mgr-a")
    # by id, with a different name (the report must not say what the real name is)
    r = _import(mgr_a, "users", "用户编号,姓名,单位编号\np-b,冒名,org-a\n", dry_run)
    assert r.status_code == 200 and r.json()["rejected"] == 1
    assert B_NAME not in r.text
    # by id and the right name: still not the unit's person
    r = _import(mgr_a, "users", f"用户编号,姓名,单位编号\np-b,{B_NAME},org-a\n", dry_run)
    assert r.json()["rejected"] == 1
    assert web.sql("SELECT org_id, name FROM platform_users WHERE id = 'p-b'") == [("ext-co", B_NAME)]
    # nothing in the stored batch reports either
    assert all(B_NAME not in str(rep) for (rep,) in web.sql("SELECT report FROM import_batches"))


def test_users_import_affiliation_and_organisation_are_proposals(web: Web) -> None:
    ops, mgr_a = web.as_("ops"), web.as_("mgr-a")
    assert ops.put("/api/v1/units/ua/affiliations/ext-co").status_code == 200
    r = _import(mgr_a, "users", "用户编号,姓名,单位编号,关联单位\np-zhang,张三,ext-co,否\n")
    assert r.status_code == 200 and r.json()["status"] == "committed", r.text
    # the affiliation stays until the operator accepts its removal
    assert web.sql("SELECT org_id FROM unit_affiliations WHERE unit_id = 'ua'") == [("ext-co",)]
    [prop] = ops.get("/api/v1/proposals", params={"unit_id": "ua"}).json()
    assert (prop["target"], prop["before"], prop["after"]) == ("unit_affiliations", True, False)
    r = _import(mgr_a, "users", "用户编号,姓名,单位编号\np-zhang,张三,org-b\n")
    assert r.json()["status"] == "committed"
    assert web.sql("SELECT org_id FROM platform_users WHERE id = 'p-zhang'") == [("ext-co",)]
    assert {p["target"] for p in ops.get("/api/v1/proposals").json()} == {"unit_affiliations", "platform_users"}
    assert ops.post(f"/api/v1/proposals/{prop['id']}/accept").status_code == 200
    assert web.sql("SELECT count(*) FROM unit_affiliations WHERE unit_id = 'ua'") == [(0,)]


@pytest.mark.parametrize("dry_run", ["true", "false"])
def test_identities_import_cannot_reach_another_units_person(web: Web, dry_run: str) -> None:
    _b_person(web)
    mgr_a = web.as_("mgr-a")
    for text in ("用户编号,系统用户名\np-b,LAB\\x\n", f"姓名,系统用户名\n{B_NAME},LAB\\x\n"):
        r = _import(mgr_a, "identities", text, dry_run)
        assert r.status_code == 200 and r.json()["rejected"] == 1, r.text
        assert r.json()["status"] != "committed"
    assert web.sql("SELECT count(*) FROM identity_map WHERE unit_id = 'ua' AND user_id = 'p-b'") == [(0,)]
    # the unit's own person, by id: fine
    r = _import(mgr_a, "identities", "用户编号,系统用户名\np-zhang,LAB\\zz\n", dry_run)
    assert r.json()["rejected"] == 0


def test_an_import_into_another_unit_is_refused(web: Web) -> None:
    mgr_a = web.as_("mgr-a")
    for kind, text in (("users", "姓名,所在单位\n某人,丙科技有限公司\n"),
                       ("identities", "用户编号,系统用户名\np-zhang,x\n"),
                       ("instruments", "所在单位仪器编号,仪器名称,原值（元）\nX1,仪器,100\n"),
                       ("services", "仪器编号,开始时间,结束时间,服务机时,用户类型\n"
                                    "ua-xrd,2025-03-02 09:00,2025-03-02 10:00,1,校外\n"),
                       ("exemptions", "仪器编号,不开放理由\nua-xrd,维修\n"),
                       ("prices", "仪器编号,收费项目,计价单位,校外价格,执行日期\nua-xrd,测试,元/样,100,2025-01-01\n"),
                       ("cases", "案例名称,日期,佐证材料\n案例,2025-01-01,DOI\n")):
        assert _import(mgr_a, kind, text, "true", unit="ub").status_code in (403, 404)


# -- item 3: figures are proposals -------------------------------------------------------------------


def test_rated_hours_by_the_unit_wait_for_the_operator(web: Web) -> None:
    ops, mgr_a, mgr_b, eva = web.as_("ops"), web.as_("mgr-a"), web.as_("mgr-b"), web.as_("eva")
    before = _utilization(ops)
    r = mgr_a.patch("/api/v1/instruments/ua-xrd", json={"rated_hours": "1", "location": "化学楼 202",
                                                        "registered_on": "2025-03-20"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["location"] == "化学楼 202"  # not a figure: written at once
    assert got["rated_hours"] is None and str(got["registered_on"]) == "2020-02-01"
    assert got["proposed"] == {"rated_hours": "1", "registered_on": "2025-03-20"}
    assert _utilization(ops) == before  # nothing moved
    # the report both ways
    trail = web.sql("SELECT count(*), max(id) FROM audit_log")
    both = eva.get(f"/api/v1/evaluation/{PERIOD}/units/ua/proposed").json()
    # computed in a transaction that is rolled back: nothing written, nothing audited
    assert web.sql("SELECT count(*), max(id) FROM audit_log") == trail
    assert web.sql("SELECT rated_hours FROM instruments WHERE id = 'ua-xrd'") == [(None,)]
    assert both["as_accepted"]["utilization"] == before
    assert both["as_proposed"]["utilization"]["verified"] > before["verified"]
    assert len(both["pending"]) == 2
    # ... on the unit report too (page, JSON and workbook), while they wait
    rep = eva.get(f"/api/v1/evaluation/{PERIOD}/units/ua").json()
    assert sorted(r["what"] for r in rep["tables"]["proposals_pending"]["rows"]) == ["纳入平台日期", "额定机时（h/年）"]
    assert "指标：已接受与含待审变更" in eva.get("/units/ua/report", params={"period": PERIOD}).text
    # the other unit cannot see, accept or compute them; evaluators read but do not decide by default
    assert mgr_b.get("/api/v1/proposals", params={"unit_id": "ua"}).status_code == 404
    assert mgr_b.get(f"/api/v1/evaluation/{PERIOD}/units/ua/proposed").status_code == 404
    ids = {p["field"]: p["id"] for p in ops.get("/api/v1/proposals").json()}
    for who in (mgr_b, mgr_a, eva):
        assert who.post(f"/api/v1/proposals/{ids['rated_hours']}/accept").status_code == 403
    assert ops.post(f"/api/v1/proposals/{ids['registered_on']}/decline").json()["status"] == "declined"
    assert _utilization(ops) == before
    r = ops.post(f"/api/v1/proposals/{ids['rated_hours']}/accept", params={"note": "核实"})
    assert r.json()["status"] == "accepted" and r.json()["decided_by"] == "account:ops"
    after = _utilization(ops)
    assert after["verified"] > before["verified"]
    assert web.sql("SELECT rated_hours::text, registered_on::text FROM instruments WHERE id = 'ua-xrd'") == [
        ("1.0", "2020-02-01")]
    # evaluators see the accepted change: who, when, before -> after, effect on the indicators
    [change] = eva.get(f"/api/v1/evaluation/{PERIOD}/units/ua/changes").json()
    assert (change["field"], change["before"], change["after"], change["proposed_by"]) == (
        "rated_hours", None, "1", "account:mgr-a")
    assert change["effect"]["utilization.verified"] == pytest.approx(after["verified"] - before["verified"], abs=1e-5)
    assert mgr_b.get(f"/api/v1/evaluation/{PERIOD}/units/ua/changes").status_code == 404
    # a section of the unit report page and a sheet of its workbook
    page = eva.get("/units/ua/report", params={"period": PERIOD}).text
    assert "登记信息变更（已接受）" in page and "account:mgr-a" in page
    wb = load_workbook(io.BytesIO(eva.get(f"/api/v1/evaluation/{PERIOD}/units/ua/workbook.xlsx").content),
                       read_only=True)
    sheet = wb["登记信息变更（已接受）"]
    cells = [tuple(row) for row in sheet.iter_rows(values_only=True)]
    assert cells[1][:4] == ("额定机时（h/年）", "ua-xrd", "—", "1") and "利用率" in str(cells[1][-1])


def test_the_operators_changes_are_direct(web: Web) -> None:
    ops = web.as_("ops")
    r = ops.patch("/api/v1/instruments/ua-xrd", json={"rated_hours": "1000", "is_open": False})
    assert r.json()["rated_hours"] == "1000.0" and r.json()["proposed"] == {}
    assert ops.get("/api/v1/proposals").json() == []


def test_ledger_import_figures_are_proposals(web: Web) -> None:
    mgr_a = web.as_("mgr-a")
    r = _import(mgr_a, "instruments", "平台仪器编号,仪器名称,原值（元）,额定机时,安放地址\n"
                                       "ua-xrd,X射线衍射仪,1250000,1,化学楼 9\n")
    assert r.json()["status"] == "committed", r.text
    assert web.sql("SELECT rated_hours, location FROM instruments WHERE id = 'ua-xrd'") == [(None, "化学楼 9")]
    [prop] = web.as_("ops").get("/api/v1/proposals").json()
    assert (prop["field"], prop["after"], prop["proposed_by"]) == ("rated_hours", "1.0", "account:mgr-a")


def test_affiliations_are_the_operators_a_manager_proposes(web: Web) -> None:
    mgr_a, mgr_b, ops = web.as_("mgr-a"), web.as_("mgr-b"), web.as_("ops")
    assert mgr_a.put("/api/v1/units/ua/affiliations/ext-co").status_code == 403
    assert mgr_b.post("/api/v1/units/ua/affiliations/ext-co/proposal").status_code == 403
    r = mgr_a.post("/api/v1/units/ua/affiliations/ext-co/proposal")
    assert r.status_code == 201 and r.json()["after"] is True
    assert web.sql("SELECT count(*) FROM unit_affiliations") == [(0,)]
    assert ops.post(f"/api/v1/proposals/{r.json()['id']}/accept").status_code == 200
    assert web.sql("SELECT org_id FROM unit_affiliations WHERE unit_id = 'ua'") == [("ext-co",)]


def test_evaluators_may_decide_when_the_deployment_says_so(make_web: Callable[..., Web]) -> None:
    web = make_web(evaluators_decide_proposals=True)
    web.as_("mgr-a").patch("/api/v1/instruments/ua-xrd", json={"category": "专用"})
    [prop] = web.as_("eva").get("/api/v1/proposals").json()
    assert web.as_("eva").post(f"/api/v1/proposals/{prop['id']}/accept").status_code == 200
    assert web.sql("SELECT category FROM instruments WHERE id = 'ua-xrd'") == [("专用",)]


def test_evaluators_read_the_registry_audit_but_not_peoples(web: Web) -> None:
    web.as_("ops").patch("/api/v1/instruments/ua-xrd", json={"rated_hours": "1000"})
    web.as_("mgr-a").patch("/api/v1/people/p-zhang", json={"name": "张三丰"})
    entries = web.as_("eva").get("/api/v1/audit").json()
    assert any(e["table_name"] == "instruments" and e["row_key"] == "ua-xrd" for e in entries)
    assert not any(e["table_name"] in ("platform_users", "identity_map", "service_records") for e in entries)
    assert "张三" not in str(entries)
    assert web.as_("mgr-a").get("/api/v1/audit").status_code == 403


# -- every registry write route, as the second unit's manager ----------------------------------------

WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("PATCH", "/api/v1/instruments/ua-xrd", {"rated_hours": "1"}),
    ("PATCH", "/api/v1/instruments/ua-xrd", {"name": "x"}),
    ("POST", "/api/v1/instruments", {"id": "ua-new", "unit_id": "ua", "name": "x"}),
    ("POST", "/api/v1/instruments/ua-xrd/prices", {"item": "x", "valid_from": "2025-01-01"}),
    ("PATCH", "/api/v1/people/p-zhang", {"name": "x"}),
    ("PATCH", "/api/v1/people/p-zhang", {"org_id": "org-b"}),
    ("POST", "/api/v1/people", {"id": "p-x", "name": "x", "org_id": "org-b", "unit_id": "ua",
                                "identities": [{"method": "os", "identifier": "x"}]}),
    ("PUT", "/api/v1/units/ua/identities", {"method": "os", "identifier": "x", "user_id": "p-zhang"}),
    ("DELETE", "/api/v1/units/ua/identities/os/LAB%5Czhang", None),
    ("PUT", "/api/v1/units/ua/affiliations/ext-co", None),
    ("DELETE", "/api/v1/units/ua/affiliations/ext-co", None),
    ("POST", "/api/v1/units/ua/affiliations/ext-co/proposal", None),
    ("POST", "/api/v1/service-records", {"instrument_id": "ua-xrd", "record_no": "x", "service_hours": "1",
                                         "start_at": "2025-03-01T09:00:00+08:00",
                                         "end_at": "2025-03-01T10:00:00+08:00", "user_type": 130}),
    ("POST", "/api/v1/units/ua/exemptions", {"instrument_id": "ua-xrd", "reason": "x"}),
    ("POST", "/api/v1/units/ua/cases", {"occurred_on": "2025-01-01", "title": "x", "evidence": "x"}),
    ("PATCH", "/api/v1/units/ua", {"name": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_the_second_units_manager_changes_nothing_of_the_first(web: Web, method: str, path: str,
                                                                body: dict[str, Any] | None) -> None:
    mgr_b = web.as_("mgr-b")
    changes = "SELECT count(*) FROM audit_log WHERE table_name <> 'web_sessions'"
    before = web.sql(changes)
    r = mgr_b.request(method, path, json=body)
    assert r.status_code in (403, 404), (path, r.status_code, r.text)
    assert "张三" not in r.text
    assert web.sql(changes) == before


def test_approved_exemptions_are_proposals_requests_are_not(web: Web) -> None:
    mgr_a, ops, eva = web.as_("mgr-a"), web.as_("ops"), web.as_("eva")
    header = "仪器编号,不开放理由,审批部门,批准文号,批准日期,有效期起,有效期至\n"
    r = _import(mgr_a, "exemptions", header + "ua-nmr,涉密任务,自治区科技厅,内科发〔2025〕3号,2025-02-10,2025-01-01,"
                                              "2025-12-31\nua-xrd,维修中,,,,,\n")
    assert r.json()["status"] == "committed", r.text
    # the request is recorded, the approval waits
    assert web.sql("SELECT instrument_id, approval_ref FROM instrument_exemptions") == [("ua-xrd", "")]
    assert eva.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["indicators"]["exempted"] == 0
    [prop] = ops.get("/api/v1/proposals").json()
    assert (prop["target"], prop["row_key"], prop["before"]) == ("instrument_exemptions", "ua-nmr", None)
    assert "内科发〔2025〕3号" in ops.get("/registry/proposals").text
    assert ops.post(f"/api/v1/proposals/{prop['id']}/accept").status_code == 200
    assert eva.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["indicators"]["exempted"] == 1
    [change] = eva.get("/api/v1/evaluation/2025/units/ua/changes").json()
    assert change["effect"]["exempted"] == 1.0
    # changing the approval (revoking it) is a proposal too
    r = mgr_a.post("/api/v1/units/ua/exemptions", json={
        "instrument_id": "ua-nmr", "reason": "涉密任务", "approved_by": "自治区科技厅",
        "approval_ref": "内科发〔2025〕3号", "approved_on": "2025-02-10", "valid_from": "2025-01-01",
        "valid_to": "2025-12-31", "revoked_on": "2025-03-01"})
    assert r.status_code == 202 and r.json()["before"]["revoked_on"] is None
    assert web.sql("SELECT revoked_on FROM instrument_exemptions WHERE instrument_id = 'ua-nmr'") == [(None,)]


def test_a_service_record_cannot_reveal_another_units_person(web: Web) -> None:
    _b_person(web)
    mgr_a = web.as_("mgr-a")
    rec = {"instrument_id": "ua-xrd", "record_no": "SR-9", "service_hours": "1", "user_type": 130,
           "start_at": "2025-03-01T09:00:00+08:00", "end_at": "2025-03-01T10:00:00+08:00"}
    r = mgr_a.post("/api/v1/service-records", json={**rec, "applicant_user_id": "p-b"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "applicant_user_id"
    r = mgr_a.post("/api/v1/service-records", json=rec)
    assert r.status_code == 201
    r = mgr_a.patch(f"/api/v1/service-records/{r.json()['id']}", json={"applicant_user_id": "p-b"})
    assert r.status_code == 422
    # the services import links an applicant by name only among the people the unit may see
    r = _import(mgr_a, "services", "服务记录编号,仪器编号,开始时间,结束时间,服务机时,用户类型,申请人,申请人所在单位\n"
                                   f"SR-10,ua-xrd,2025-03-02 09:00,2025-03-02 10:00,1,校外,{B_NAME},丙科技有限公司\n")
    assert r.json()["status"] == "committed", r.text
    assert web.sql("SELECT applicant_user_id FROM service_records WHERE record_no = 'SR-10'") == [(None,)]
    assert B_NAME not in mgr_a.get("/api/v1/people").text


def test_sending_the_same_figure_back_proposes_nothing(web: Web) -> None:
    mgr_a = web.as_("mgr-a")
    r = mgr_a.patch("/api/v1/instruments/ua-xrd", json={"original_value": "1250000", "category": "通用",
                                                        "accepted_on": "2020-01-01", "is_open": True})
    assert r.status_code == 200 and r.json()["proposed"] == {}
    assert web.sql("SELECT count(*) FROM registry_proposals") == [(0,)]
    # a second proposal for the same field supersedes the first
    mgr_a.patch("/api/v1/instruments/ua-xrd", json={"rated_hours": "100"})
    mgr_a.patch("/api/v1/instruments/ua-xrd", json={"rated_hours": "200"})
    assert web.sql("SELECT status, after #>> '{}' FROM registry_proposals ORDER BY id") == [
        ("superseded", "100"), ("pending", "200")]


def test_a_ledger_import_cannot_take_or_describe_another_units_instrument(web: Web) -> None:
    r = _import(web.as_("mgr-a"), "instruments", "平台仪器编号,仪器名称,原值（元）\nub-sem,借用,100\n", "true")
    assert r.json()["rejected"] == 1
    [row] = r.json()["rows"]
    assert row["errors"] == ["仪器编号 ub-sem 已被其他单位使用"]
    assert "扫描电子显微镜" not in r.text and "乙研究所" not in r.text
    assert web.sql("SELECT unit_id, name FROM instruments WHERE id = 'ub-sem'") == [("ub", "扫描电子显微镜")]


READS = ["/api/v1/units/ua", "/api/v1/units/ua/identities", "/api/v1/units/ua/affiliations",
         "/api/v1/instruments/ua-xrd", "/api/v1/instruments/ua-xrd/prices", "/api/v1/service-records?unit_id=ua",
         "/api/v1/proposals?unit_id=ua",
         "/api/v1/units/ua/exemptions", "/api/v1/units/ua/cases", "/api/v1/units/ua/imports",
         "/api/v1/instruments?unit_id=ua", f"/api/v1/evaluation/{PERIOD}/units/ua/proposed",
         f"/api/v1/evaluation/{PERIOD}/units/ua/changes", "/registry/proposals?unit=ua",
         "/registry/instruments/ua-xrd/edit", "/registry/people/p-zhang/edit"]


@pytest.mark.parametrize("path", READS)
def test_the_second_units_manager_reads_nothing_of_the_first(web: Web, path: str) -> None:
    r = web.as_("mgr-b").get(path)
    assert r.status_code in (403, 404), (path, r.status_code)
    assert "张三" not in r.text and "X射线衍射仪" not in r.text
