"""Role boundaries: a unit manager reads nothing of another unit; an evaluator reads every unit
but never a real user name (art. 17: stable pseudonyms); only operators administer."""

from __future__ import annotations

import psycopg
import pytest

from server.evaluation import privacy
from tests.web.conftest import REAL_NAME, Web

OTHER_UNIT_GETS = [
    "/api/v1/units/ub",
    "/api/v1/instruments/ub-sem",
    "/api/v1/instruments?unit_id=ub",
    "/api/v1/instruments/ub-sem/prices",
    "/api/v1/instruments/ub-sem/timeline?start=2025-03-03",
    "/api/v1/service-records?unit_id=ub",
    "/api/v1/service-records?instrument_id=ub-sem",
    "/api/v1/units/ub/live",
    "/api/v1/units/ub/live/stream",
    "/api/v1/units/ub/identities",
    "/api/v1/evaluation/2025/units/ub",
    "/api/v1/evaluation/2025/units/ub/workbook.xlsx",
    "/units/ub/board",
    "/units/ub/report?year=2025",
    "/instruments/ub-sem",
]


@pytest.mark.parametrize("path", OTHER_UNIT_GETS)
def test_unit_manager_cannot_read_another_unit(web: Web, path: str) -> None:
    r = web.as_("mgr-a").get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:300])
    assert "扫描电子显微镜" not in r.text


def test_unit_manager_lists_only_own_unit(web: Web) -> None:
    mgr = web.as_("mgr-a")
    assert [u["id"] for u in mgr.get("/api/v1/units").json()] == ["ua"]
    assert {i["unit_id"] for i in mgr.get("/api/v1/instruments").json()} == {"ua"}
    assert {a["id"] for a in mgr.get("/api/v1/agents").json()} == {"ua-xrd-a1"}
    assert {r["unit_id"] for r in mgr.get("/api/v1/service-records").json()} == {"ua"}
    assert web.as_("mgr-b").get("/api/v1/service-records").json() == []
    assert web.as_("mgr-b").get("/api/v1/people").json() == []
    assert "ub-sem" not in mgr.get("/registry").text


def test_unit_manager_cannot_change_another_unit(web: Web) -> None:
    mgr = web.as_("mgr-a")
    r = mgr.post("/api/v1/instruments", json={"id": "x1", "unit_id": "ub", "name": "偷偷登记"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "other_unit"
    assert mgr.patch("/api/v1/instruments/ub-sem", json={"name": "x"}).status_code == 404
    assert mgr.post("/api/v1/instruments/ub-sem/prices",
                    json={"item": "x", "valid_from": "2025-01-01"}).status_code == 404
    r = mgr.post("/api/v1/service-records", json={
        "instrument_id": "ub-sem", "record_no": "x", "start_at": "2025-03-01T09:00:00+08:00",
        "end_at": "2025-03-01T10:00:00+08:00", "service_hours": "1.0", "user_type": 130})
    assert r.status_code == 404
    assert mgr.put("/api/v1/units/ub/identities",
                   json={"method": "os", "identifier": "x", "user_id": "p-zhang"}).status_code == 404
    # and moving its own instrument to another unit is the operator's call
    r = mgr.patch("/api/v1/instruments/ua-nmr", json={"unit_id": "ub"})
    assert r.status_code == 403
    assert web.sql("SELECT unit_id FROM instruments WHERE id = 'ua-nmr'") == [("ua",)]


def test_only_operators_administer(web: Web) -> None:
    for login in ("mgr-a", "eva"):
        c = web.as_(login)
        for method, path, body in [
            ("GET", "/api/v1/accounts", None),
            ("GET", "/api/v1/audit", None),
            ("POST", "/api/v1/units", {"id": "uc", "org_id": "org-a", "name": "丙"}),
            ("POST", "/api/v1/instruments/ua-xrd/enrolment-tokens", {}),
            ("POST", "/api/v1/agents/ua-xrd-a1/revoke", {"reason": "x"}),
        ]:
            if login == "eva" and path == "/api/v1/audit":
                continue  # evaluators read the registry's audit (issue 13): tests/security/test_registry_ownership.py
            r = c.request(method, path, json=body)
            assert r.status_code in (403, 404), (login, path, r.status_code)
            assert r.json()["error"]["code"] in ("forbidden", "not_found")


def test_evaluator_reads_all_units_but_cannot_write(web: Web) -> None:
    eva = web.as_("eva")
    assert {u["id"] for u in eva.get("/api/v1/units").json()} == {"ua", "ub"}
    assert eva.get("/api/v1/evaluation/2025/units/ub").status_code == 200
    assert eva.get("/api/v1/evaluation/2025/region").status_code == 200
    r = eva.patch("/api/v1/instruments/ua-xrd", json={"name": "改名"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "评价专家" in r.json()["error"]["message"]
    assert eva.post("/api/v1/organisations", json={"id": "o1", "name": "x"}).status_code == 403


EVALUATOR_VIEWS = [
    "/api/v1/people",
    "/api/v1/service-records",
    "/api/v1/instruments/ua-xrd/timeline?start=2025-03-03",
    "/api/v1/evaluation/2025/units/ua",
    "/api/v1/evaluation/2025/region",
    "/api/v1/units/ua/live",
    "/instruments/ua-xrd?span=day&start=2025-03-03",
    "/units/ua/report?year=2025",
    "/overview?year=2025",
]


def test_evaluator_never_sees_a_real_name(web: Web) -> None:
    eva = web.as_("eva")
    with psycopg.connect(web.dsn) as conn:
        pseudonym = privacy.load(conn).user("p-zhang")
    seen = False
    for path in EVALUATOR_VIEWS:
        r = eva.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert REAL_NAME not in r.text, path
        assert "zhang" not in r.text.replace(pseudonym, ""), path
        seen |= pseudonym in r.text
    assert seen
    # stable: the same pseudonym in the people list, the service records and the timeline
    assert eva.get("/api/v1/people").json()[0]["id"] == pseudonym
    assert eva.get("/api/v1/service-records").json()[0]["applicant_user_id"] == pseudonym
    sessions = eva.get("/api/v1/instruments/ua-xrd/timeline?start=2025-03-03").json()["sessions"]
    assert [s["who"] for s in sessions] == [pseudonym]


def test_unit_manager_sees_own_users_by_name(web: Web) -> None:
    mgr = web.as_("mgr-a")
    assert mgr.get("/api/v1/people").json()[0]["name"] == REAL_NAME
    sessions = mgr.get("/api/v1/instruments/ua-xrd/timeline?start=2025-03-03").json()["sessions"]
    assert sessions[0]["who"] == REAL_NAME and sessions[0]["org"] == "丙科技有限公司"
