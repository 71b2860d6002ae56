"""Gaps found by the audit of issues 5 and 6 (see the audit notes), closed and tested against the
real app and PostgreSQL: card numbers hashed with the deployment's card key (web import and API),
identity mappings added to an existing person, any period on the report and overview pages, the
overview's ranking and duplicate search, read-only listings of exemptions, cases and imports,
and response examples in the OpenAPI description."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.web import test_browser
from tests.web.charthelp import figures
from tests.web.conftest import Web
from tests.web.livehelp import serve

CARD_KEY = b"deployment-card-key-0123456789"
RAW_CARD = "00a1b2c3"


def _card(key: bytes, raw: str) -> str:
    # as the agent's card reader (agent/identity/card_reader.py): upper-cased, keyed SHA-256
    return "hmac-sha256:" + hmac.new(key, raw.strip().upper().encode(), hashlib.sha256).hexdigest()


def _import_identities(c: Any, dry_run: str = "false") -> Any:
    text = f"用户编号,卡号\np-zhang,{RAW_CARD}\n"
    return c.post("/api/v1/imports", data={"kind": "identities", "unit_id": "ua", "dry_run": dry_run},
                  files={"file": ("身份.csv", text.encode(), "text/csv")})


def test_web_import_hashes_raw_card_numbers_with_the_configured_key(
        make_web: Callable[..., Web], tmp_path: Path) -> None:
    plain = make_web()
    r = _import_identities(plain.as_("mgr-a"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False and body["status"] == "rejected"
    assert RAW_CARD not in r.text  # the report never repeats a card number
    assert plain.sql("SELECT count(*) FROM identity_map WHERE method = 'card'") == [(0,)]

    key_file = tmp_path / "card.key"
    key_file.write_bytes(CARD_KEY + b"\n")  # whitespace around the key is not part of it, as in the CLI
    keyed = make_web(card_key_file=str(key_file))
    r = _import_identities(keyed.as_("mgr-a"))
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert keyed.sql("SELECT identifier, user_id FROM identity_map WHERE unit_id = 'ua' AND method = 'card'") == [
        (_card(CARD_KEY, RAW_CARD), "p-zhang")]
    actors = keyed.sql("SELECT actor FROM audit_log WHERE table_name = 'identity_map' AND after->>'method' = 'card'")
    assert actors == [("account:mgr-a",)]


def test_api_never_stores_a_raw_card_number(make_web: Callable[..., Web], tmp_path: Path) -> None:
    plain = make_web()
    mgr = plain.as_("mgr-a")
    r = mgr.put("/api/v1/units/ua/identities", json={"user_id": "p-zhang", "method": "card", "identifier": RAW_CARD})
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["identifier"]
    r = mgr.post("/api/v1/people", json={"id": "p-li", "name": "李四", "org_id": "org-a",
                                         "identities": [{"method": "card", "identifier": RAW_CARD}]})
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["identities.0.identifier"]
    assert plain.sql("SELECT count(*) FROM platform_users WHERE id = 'p-li'") == [(0,)]
    hashed = _card(b"other", "x")
    r = mgr.put("/api/v1/units/ua/identities", json={"user_id": "p-zhang", "method": "card", "identifier": hashed})
    assert r.status_code == 200 and r.json()["identifier"] == hashed

    key_file = tmp_path / "card.key"
    key_file.write_bytes(CARD_KEY)
    keyed = make_web(card_key_file=str(key_file))
    mgr = keyed.as_("mgr-a")
    r = mgr.post("/api/v1/people", json={"id": "p-wang", "name": "王五", "org_id": "org-a",
                                         "identities": [{"method": "card", "identifier": " 00A1B2C3 "}]})
    assert r.status_code == 201, r.text
    assert RAW_CARD.upper() not in r.text and r.json()["identities"][0]["identifier"] == _card(CARD_KEY, RAW_CARD)
    assert keyed.sql("SELECT identifier FROM identity_map WHERE user_id = 'p-wang'") == [(_card(CARD_KEY, RAW_CARD),)]
    # other identities are stored as given
    r = mgr.put("/api/v1/units/ua/identities", json={"user_id": "p-wang", "method": "os", "identifier": "LAB\\wang"})
    assert r.status_code == 200 and r.json()["identifier"] == "LAB\\wang"


def test_person_edit_page_lists_and_offers_identity_mappings(web: Web) -> None:
    mgr = web.as_("mgr-a")
    page = mgr.get("/registry/people/p-zhang/edit").text
    assert 'id="identities"' in page and 'id="identity-form"' in page
    assert 'data-api="/api/v1/units/{unit_id}/identities"' in page and 'data-method="PUT"' in page
    assert 'name="user_id" value="p-zhang"' in page
    assert "LAB\\zhang" in page
    assert 'data-api="/api/v1/units/ua/identities/os/LAB%5Czhang"' in page
    # a manager is offered only their own unit
    assert re.findall(r'<option value="(u[ab])"', page.split('id="identity-form"')[1]) == ["ua"]
    # the remove button's URL works with the API
    assert mgr.delete("/api/v1/units/ua/identities/os/LAB%5Czhang").status_code == 204
    assert "LAB\\zhang" not in mgr.get("/registry/people/p-zhang/edit").text
    # identifiers with a slash can be removed too
    assert mgr.put("/api/v1/units/ua/identities", json={"user_id": "p-zhang", "method": "booking",
                                                        "identifier": "2025/B-17"}).status_code == 200
    page = mgr.get("/registry/people/p-zhang/edit").text
    assert 'data-api="/api/v1/units/ua/identities/booking/2025%2FB-17"' in page
    assert mgr.delete("/api/v1/units/ua/identities/booking/2025%2FB-17").status_code == 204
    assert web.sql("SELECT count(*) FROM identity_map WHERE method = 'booking'") == [(0,)]
    # an operator may pick among all units; evaluators get no edit page
    ops_page = web.as_("ops").get("/registry/people/p-zhang/edit").text
    assert re.findall(r'<option value="(u[ab])"', ops_page.split('id="identity-form"')[1]) == ["ua", "ub"]
    assert web.as_("eva").get("/registry/people/p-zhang/edit").status_code == 403


def test_report_and_overview_pages_take_any_period(web: Web) -> None:
    ops = web.as_("ops")
    page = ops.get("/units/ua/report", params={"period": "2025-03-01..2025-04-01"}).text
    assert "2025-03-01..2025-04-01" in page
    assert 'href="/api/v1/evaluation/2025-03-01..2025-04-01/units/ua/workbook.xlsx"' in page
    # the two hours of verified running of 2025-03-03 against a month's rated hours (1400 h × 2 × 31/365)
    rep = ops.get("/api/v1/evaluation/2025-03-01..2025-04-01/units/ua").json()
    assert rep["unit"]["indicators"]["running_hours"]["live"] == 2.0
    assert abs(rep["unit"]["indicators"]["rated_hours"] - 1400 * 2 * 31 / 365) < 0.01
    r = ops.get("/units/ua/report", params={"period": "2025-13-01..2026-01-01"})
    assert r.status_code == 422 and "text/html" in r.headers["content-type"]
    over = ops.get("/overview", params={"period": "2025-01-01..2025-07-01"}).text
    assert "2025-01-01..2025-07-01" in over
    assert 'href="/units/ua/report?period=2025-01-01..2025-07-01"' in over
    # the year links still work
    assert ops.get("/units/ua/report?year=2025").status_code == 200


def _ranking(page: str) -> list[str]:
    table = page.split('id="ranking"')[1].split("</table>")[0]
    return re.findall(r'/units/(u[ab])/report', table)


def test_overview_ranks_by_score_and_searches_duplicates_by_specs_and_location(web: Web) -> None:
    eva = web.as_("eva")
    region = eva.get("/api/v1/evaluation/2025/region").json()
    scores = {r["unit_id"]: float(r["score"] or 0) for r in region["tables"]["scores"]["rows"]}
    page = eva.get("/overview?year=2025").text
    assert _ranking(page) == sorted(scores, key=lambda u: (-scores[u], u))
    assert "各单位排名（按评分）" in page
    # grade distribution in the fixed order of the grades, one bar per grade counting its units
    grades = figures(page)["等级分布"]
    assert grades["layout"]["yaxis"]["ticktext"][:4] == ["优秀", "良好", "合格", "不合格"]
    count = {g: sum(1 for r in region["tables"]["scores"]["rows"] if r["grade"] == g)
             for g in grades["layout"]["yaxis"]["ticktext"]}
    assert grades["data"][0]["x"] == [float(n) for n in count.values()] and sum(count.values()) == len(scores)
    # duplicate search: the classification code finds both instruments, the location narrows
    both = eva.get("/overview", params={"year": 2025, "code": "03040702"}).text
    assert "X射线衍射仪" in both.split('id="duplicate-search"')[1] and "扫描电子显微镜" in both.split(
        'id="duplicate-search"')[1]
    api = eva.get("/api/v1/evaluation/2025/duplicates",
                  params={"classification_code": "03040702", "location": "材料楼"}).json()
    narrowed = eva.get("/overview", params={"year": 2025, "code": "03040702", "location": "材料楼"}).text
    found = narrowed.split('id="duplicate-search"')[1]
    assert 'value="材料楼"' in found
    for c in api:
        assert c["name"] in found


def test_exemption_case_and_import_listings(web: Web) -> None:
    web.sql("INSERT INTO instrument_exemptions (instrument_id, reason, approved_by, approval_ref, approved_on,"
            " valid_from, valid_to) VALUES ('ua-nmr', '涉密科研任务专用', '自治区科技厅', '内科发〔2025〕12号',"
            " '2025-02-10', '2025-01-01', '2025-12-31')")
    web.sql("INSERT INTO service_cases (unit_id, instrument_id, occurred_on, title, kind, beneficiary, evidence)"
            " VALUES ('ua', 'ua-xrd', '2025-06-18', '催化剂物相分析', '企业成果', '丙科技有限公司', 'BG-2025-031')")
    mgr = web.as_("mgr-a")
    ex = mgr.get("/api/v1/units/ua/exemptions").json()
    assert ex == [{"instrument_id": "ua-nmr", "instrument_name": "核磁共振波谱仪", "reason": "涉密科研任务专用",
                   "approved_by": "自治区科技厅", "approval_ref": "内科发〔2025〕12号", "approved_on": "2025-02-10",
                   "valid_from": "2025-01-01", "valid_to": "2025-12-31", "revoked_on": None}]
    cases = mgr.get("/api/v1/units/ua/cases").json()
    assert [(c["title"], c["kind"], c["evidence"]) for c in cases] == [("催化剂物相分析", "企业成果", "BG-2025-031")]
    _import_identities(mgr, dry_run="true")
    imports = mgr.get("/api/v1/units/ua/imports").json()
    assert [(b["kind"], b["status"]) for b in imports] == [("identities", "dry_run")]
    # scope: another unit's manager gets 404, evaluators read
    assert web.as_("mgr-b").get("/api/v1/units/ua/exemptions").status_code == 404
    assert web.as_("eva").get("/api/v1/units/ua/cases").status_code == 200
    assert web.client().get("/api/v1/units/ua/cases").status_code == 401
    page = mgr.get("/registry/lists/exemptions").text
    assert "内科发〔2025〕12号" in page and "批准文号" in page
    assert "催化剂物相分析" in web.as_("ops").get("/registry/lists/cases?unit=ua").text
    assert "催化剂物相分析" not in web.as_("ops").get("/registry/lists/cases?unit=ub").text
    assert "身份.csv" in mgr.get("/registry/lists/imports?lang=en").text
    assert web.as_("mgr-b").get("/registry/lists/cases?unit=ua").status_code == 200  # own unit regardless
    assert "催化剂物相分析" not in web.as_("mgr-b").get("/registry/lists/cases?unit=ua").text
    assert mgr.get("/registry/lists/nothing").status_code == 404
    assert '/registry/lists/exemptions' in mgr.get("/registry").text


def _has_example(node: Any, components: dict[str, Any]) -> bool:
    """An example on the media type, or on the schema it names (pydantic `examples`)."""
    if not isinstance(node, dict):
        return False
    if "example" in node or "examples" in node:
        return True
    schema = node.get("schema", {})
    ref = schema.get("$ref", "")
    target = components.get(ref.rsplit("/", 1)[-1], {}) if ref else schema
    return "examples" in json.dumps(target) or "example" in json.dumps(target)


def test_openapi_has_an_example_for_every_json_request_and_answer(web: Web) -> None:
    spec = web.client().get("/openapi.json").json()
    components = spec["components"]["schemas"]
    missing = []
    ops = 0
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ops += 1
            body = op.get("requestBody", {}).get("content", {})
            for media, node in body.items():
                if media in ("application/json", "multipart/form-data") and not _has_example(node, components):
                    missing.append(f"{method.upper()} {path} request")
            for status, resp in op["responses"].items():
                node = resp.get("content", {}).get("application/json")
                if status.startswith("2") and node is not None and not _has_example(node, components):
                    missing.append(f"{method.upper()} {path} {status}")
    assert ops > 55 and missing == []
    # the examples are real answers: the report example has the same top-level keys as an answer
    example = spec["paths"]["/api/v1/evaluation/{period}/units/{unit_id}"]["get"]["responses"]["200"]["content"][
        "application/json"]["example"]
    answer = web.as_("eva").get("/api/v1/evaluation/2025/units/ua").json()
    assert set(example) == set(answer)
    for what in ("exemptions", "cases", "imports"):
        assert f"/api/v1/units/{{unit_id}}/{what}" in spec["paths"]


def test_expert_scores_through_the_api_with_history_and_audit(web: Web) -> None:
    eva = web.as_("eva")
    url = "/api/v1/evaluation/2025/units/ua/expert-scores"
    r = eva.post(url, json={"criterion": "nonsense", "points": 1, "note": "x"})
    assert r.status_code == 422 and [f["field"] for f in r.json()["error"]["fields"]] == ["criterion"]
    r = eva.post(url, json={"criterion": "atmosphere", "points": 999, "note": "x"})
    assert r.status_code == 422 and [f["field"] for f in r.json()["error"]["fields"]] == ["points"]
    r = eva.post(url, json={"criterion": "atmosphere", "points": 3, "note": ""})
    assert r.status_code == 422 and [f["field"] for f in r.json()["error"]["fields"]] == ["note"]
    assert web.as_("mgr-a").post(url, json={"criterion": "atmosphere", "points": 3, "note": "自评"}).status_code == 403
    before = eva.get("/api/v1/evaluation/2025/units/ua").json()["score_sheet"]
    r = eva.post(url, json={"criterion": "atmosphere", "points": 2, "note": "初评"})
    assert r.status_code == 201, r.text
    r = eva.post(url, json={"criterion": "atmosphere", "points": 4, "note": "复核：开放共享制度健全"})
    assert r.status_code == 201 and r.json()["expert"] == "EVA (eva)"
    after = eva.get("/api/v1/evaluation/2025/units/ua").json()["score_sheet"]
    line = next(x for x in after["lines"] if x["key"] == "atmosphere")
    assert line["override"] == 4 and line["note"] == "复核：开放共享制度健全" and line["expert"] == "EVA (eva)"
    old = next(x for x in before["lines"] if x["key"] == "atmosphere")
    assert abs(after["total"] - (before["total"] - old["points"] + 4)) < 0.01
    assert r.json()["total"] == after["total"] and r.json()["grade"] == after["grade"]
    history = eva.get(url).json()
    assert [(h["points"], h["note"]) for h in history] == [("4.00", "复核：开放共享制度健全"), ("2.00", "初评")]
    assert web.sql("SELECT actor, after->>'criterion' FROM audit_log WHERE table_name = 'expert_scores'"
                   " ORDER BY id") == [("account:eva", "atmosphere")] * 2
    # another period keeps its own scores
    assert eva.get("/api/v1/evaluation/2025-01-01..2025-07-01/units/ua/expert-scores").json() == []
    # the unit report page offers the form to evaluators, not to unit managers
    assert 'id="expert-form"' in eva.get("/units/ua/report?year=2025").text
    assert 'id="expert-form"' not in web.as_("mgr-a").get("/units/ua/report?year=2025").text


def test_catalog_shows_opening_rules_by_sharing_mode_and_how_to_book(web: Web) -> None:
    web.sql("UPDATE instruments SET is_open = true, sharing_mode = '外部共享', booking_url = 'https://book.example.org/xrd',"
            " specs = '2θ 范围 0.5°–150°', service_content = '物相分析', contact_name = '赵老师'"
            " WHERE id = 'ua-xrd'")
    web.sql("UPDATE instruments SET is_open = true, sharing_mode = '内部共享', booking_url = '',"
            " contact_name = '钱老师', contact_phone = '0471-1234567' WHERE id = 'ua-nmr'")
    web.sql("INSERT INTO price_list (instrument_id, item, basis, internal_price, external_price, valid_from)"
            " VALUES ('ua-xrd', '物相分析', 'per_sample', 80, 150, '2025-01-01')")
    anon = web.client()
    xrd = anon.get("/catalog/ua-xrd").text
    rules = xrd.split('id="opening-rules"')[1].split("</section>")[0]
    assert "外部共享" in rules and "向社会开放" in rules and "https://book.example.org/xrd" in rules
    assert "2θ 范围 0.5°–150°" in xrd and "物相分析" in xrd and "150.00" in xrd and "2025-01-01" in xrd
    assert 'id="free-now"' in xrd
    nmr = anon.get("/catalog/ua-nmr").text
    rules = nmr.split('id="opening-rules"')[1].split("</section>")[0]
    assert "内部共享" in rules and "钱老师" in rules and "0471-1234567" in rules and "向社会开放" not in rules
    assert "Shared internally" in anon.get("/catalog/ua-nmr?lang=en").text
    detail = anon.get("/api/v1/public/instruments/ua-xrd").json()
    assert detail["sharing_mode"] == "外部共享" and detail["prices"][0]["item"] == "物相分析"
    assert "张三" not in xrd and "LAB" not in xrd  # never a user identity


def test_nrii_export_through_the_api(web: Web) -> None:
    eva = web.as_("eva")
    r = eva.get("/api/v1/evaluation/2025/nrii.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(z.namelist()) == ["nrii-2025-instruments.csv", "nrii-2025-services.csv", "nrii-2025.json"]
        data = json.loads(z.read("nrii-2025.json"))
        services = z.read("nrii-2025-services.csv").decode("utf-8-sig")
    assert {i["id"] for i in data["instruments"]} == {"ua-xrd", "ua-nmr", "ub-sem"}
    assert [s["record_no"] for s in data["services"]] == ["SR-1"]
    assert "张三" not in services and data["services"][0]["applicant"].startswith("U-")
    assert 'id="download-nrii"' in eva.get("/overview?year=2025").text
    # a unit manager gets their own unit, whatever they ask for
    r = web.as_("mgr-b").get("/api/v1/evaluation/2025/nrii.zip", params={"unit": "ua"})
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert {i["id"] for i in json.loads(z.read("nrii-2025.json"))["instruments"]} == {"ub-sem"}
    assert web.as_("ops").get("/api/v1/evaluation/2025/nrii.zip", params={"unit": "nope"}).status_code == 404
    r = web.as_("ops").get("/api/v1/evaluation/2025-01-01..2025-07-01/nrii.zip", params={"unit": "ua"})
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert "nrii-2025-01-01_2025-07-01.json" in z.namelist()


def test_spot_check_sample_size_and_seed_through_api_and_overview(web: Web) -> None:
    eva = web.as_("eva")
    url = "/api/v1/evaluation/2025/region"
    a = eva.get(url, params={"sample": 2, "seed": 7}).json()["tables"]["sample"]["rows"]
    b = eva.get(url, params={"sample": 2, "seed": 7}).json()["tables"]["sample"]["rows"]
    assert len(a) == 2 and a == b
    default = eva.get(url).json()["tables"]["sample"]["rows"]
    assert default == eva.get(url, params={"seed": 2025}).json()["tables"]["sample"]["rows"]  # the year's seed
    assert eva.get(url, params={"sample": -1}).status_code == 422
    page = eva.get("/overview", params={"year": 2025, "sample": 1, "seed": 7}).text
    assert 'name="seed" value="7"' in page and "现场抽查样本" in page
    assert "region/workbook.xlsx?sample=1&amp;seed=7" in page


def test_unit_report_page_has_every_part_the_issue_asks_for(web: Web) -> None:
    from openpyxl import load_workbook

    mgr = web.as_("mgr-a")
    page = mgr.get("/units/ua/report?year=2025").text
    for key in ("open_rate", "utilization", "sharing", "revenue", "reconciliation", "compliance", "score",
                "instruments"):
        assert f'id="table-{key}"' in page, key
    # charts: utilization per instrument, and measured external hours beside the self-reported ones
    charts = figures(page)
    rep = mgr.get("/api/v1/evaluation/2025/units/ua").json()
    util = charts["各仪器利用率（已验证）"]
    shown = [f for f in rep["instruments"] if f["in_scope"] and not f["exempted"]]
    assert util["data"][0]["x"] == [f["utilization"]["verified"] or 0 for f in shown]
    assert util["data"][0]["customdata"] == [f"/instruments/{f['id']}" for f in shown]
    claims = charts["对外服务机时：测量 vs 自报"]
    assert [tr["name"] for tr in claims["data"]] == ["对外服务机时（测量）", "对外服务机时（自报）"]
    assert "含未核验" in page  # both variants of every figure
    assert 'id="download-xlsx"' in page and 'id="download-evidence"' in page
    wb = load_workbook(io.BytesIO(mgr.get("/api/v1/evaluation/2025/units/ua/workbook.xlsx").content), read_only=True)
    assert {"概览", "开放率", "利用率", "共享率", "服务收入", "合规检查", "仪器明细"} <= set(wb.sheetnames)


def test_a_script_token_change_is_audited_with_before_and_after(web: Web) -> None:
    mgr = web.as_("mgr-a")
    made = mgr.post("/api/v1/tokens", json={"name": "sync", "days": 1}).json()
    script = web.client()
    h = {"Authorization": f"Bearer {made['token']}"}
    r = script.patch("/api/v1/instruments/ua-xrd", json={"location": "化学楼 305"}, headers=h)
    assert r.status_code == 200, r.text
    entry = web.as_("ops").get("/api/v1/audit", params={"table": "instruments", "key": "ua-xrd"}).json()[0]
    assert entry["actor"] == f"account:mgr-a (token {made['id']})" and entry["action"] == "UPDATE"
    assert entry["before"]["location"] == "化学楼 201" and entry["after"]["location"] == "化学楼 305"
    assert entry["at"]


def test_affiliations_through_the_api_change_who_is_external(web: Web) -> None:
    ops = web.as_("ops")
    ind = ops.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["indicators"]
    assert ind["external_hours"]["verified"] == 2.0
    assert web.as_("mgr-a").put("/api/v1/units/ua/affiliations/ext-co").status_code == 403
    r = ops.put("/api/v1/units/ua/affiliations/ext-co")
    assert r.status_code == 200 and r.json() == [{"org_id": "ext-co", "name": "丙科技有限公司", "kind": "enterprise"}]
    assert ops.put("/api/v1/units/ua/affiliations/nope").status_code == 404
    assert ops.put("/api/v1/units/ua/affiliations/org-a").status_code == 409  # the unit's own organisation
    assert web.as_("mgr-a").get("/api/v1/units/ua/affiliations").json()[0]["org_id"] == "ext-co"
    assert web.as_("mgr-b").get("/api/v1/units/ua/affiliations").status_code == 404
    ind = ops.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["indicators"]
    assert ind["external_hours"]["verified"] == 0.0 and ind["internal_hours"]["verified"] == 2.0
    assert ops.delete("/api/v1/units/ua/affiliations/ext-co").status_code == 204
    assert ops.delete("/api/v1/units/ua/affiliations/ext-co").status_code == 404
    assert web.sql("SELECT action, actor FROM audit_log WHERE table_name = 'unit_affiliations' ORDER BY id") == [
        ("INSERT", "account:ops"), ("DELETE", "account:ops")]


def test_service_records_carry_the_sample_count_for_the_fee_check(web: Web) -> None:
    mgr = web.as_("mgr-a")
    mgr.post("/api/v1/instruments/ua-xrd/prices", json={"item": "物相分析", "basis": "per_sample",
                                                        "internal_price": "80.00", "external_price": "150.00",
                                                        "valid_from": "2025-01-01"})
    r = mgr.post("/api/v1/service-records", json={
        "instrument_id": "ua-xrd", "record_no": "SR-2", "start_at": "2025-04-01T09:00:00+08:00",
        "end_at": "2025-04-01T10:00:00+08:00", "service_hours": "1.0", "amount": "450.00", "user_type": 130,
        "sample_count": 3})
    assert r.status_code == 201 and r.json()["sample_count"] == 3, r.text
    rid = r.json()["id"]
    fees = mgr.get("/api/v1/evaluation/2025/units/ua").json()["prices"]["fees"]
    assert fees["checked"] >= 1 and fees["differing"] == 0, fees  # 3 samples × 150.00 = 450.00
    assert 'name="sample_count"' in mgr.get(f"/registry/service-records/{rid}/edit").text
    r = mgr.patch(f"/api/v1/service-records/{rid}", json={"sample_count": None})
    assert r.status_code == 200 and r.json()["sample_count"] is None
    r = mgr.patch(f"/api/v1/service-records/{rid}", json={"sample_count": -1})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "sample_count"


def test_compliance_and_reconciliation_as_api_resources(web: Web) -> None:
    eva = web.as_("eva")
    body = eva.get("/api/v1/evaluation/2025/compliance").json()
    rules = {(f["unit_id"], f["instrument_id"], f["rule"]) for f in body["findings"]}
    assert ("ua", "ua-nmr", "no_agent") in rules  # in scope, in use, no agent
    assert ("ua", "ua-xrd", "agent_silent") in rules and ("ub", "ub-sem", "agent_silent") in rules
    assert body["as_of"] == "2026-01-01T00:00:00+08:00" and body["silent_days"] == 7
    assert all(f["rule_label"] for f in body["findings"])
    # judged earlier: on 2025-03-05 the xrd agent had been silent 2 days only
    early = eva.get("/api/v1/evaluation/2025/compliance", params={"as_of": "2025-03-05T13:00:00", "unit": "ua"})
    assert ("ua-xrd", "agent_silent") not in {(f["instrument_id"], f["rule"]) for f in early.json()["findings"]}
    assert {f["unit_id"] for f in early.json()["findings"]} == {"ua"}
    # a unit manager sees their own unit whatever they ask for
    mine = web.as_("mgr-b").get("/api/v1/evaluation/2025/compliance", params={"unit": "ua"}).json()
    assert {f["unit_id"] for f in mine["findings"]} == {"ub"}
    assert eva.get("/api/v1/evaluation/2025/compliance", params={"silent_days": 0}).status_code == 422
    rec = web.as_("mgr-a").get("/api/v1/evaluation/2025/units/ua/reconciliation").json()
    assert rec["summary"]["overclaimed_records"] == 1 and rec["summary"]["contradicted_hours"] == 1.0
    assert [(r["record_no"], r["status"]) for r in rec["records"]] == [("SR-1", "多报")]  # 3 h claimed, 2 h seen
    assert web.as_("mgr-b").get("/api/v1/evaluation/2025/units/ua/reconciliation").status_code == 404
    assert "张三" not in eva.get("/api/v1/evaluation/2025/units/ua/reconciliation").text


def test_indicators_for_any_period_per_instrument_unit_and_region(web: Web) -> None:
    eva = web.as_("eva")
    body = eva.get("/api/v1/evaluation/2025-03-01..2025-04-01/indicators").json()
    xrd = next(f for f in body["instruments"] if f["id"] == "ua-xrd")
    assert xrd["running_hours"]["live"] == 2.0 and abs(xrd["rated_hours"] - 1400 * 31 / 365) < 0.01
    assert abs(xrd["utilization"]["verified"] - 2.0 / (1400 * 31 / 365)) < 1e-4
    assert set(body["units"]) == {"ua", "ub"} and body["region"]["instruments"] == 3
    assert body["units"]["ua"]["indicators"]["external_hours"]["verified"] == 2.0
    # the same instrument over the year: the same 2 h against a whole year's rated hours
    year = eva.get("/api/v1/evaluation/2025/indicators", params={"instrument": "ua-xrd"}).json()
    assert [f["id"] for f in year["instruments"]] == ["ua-xrd"] and year["instruments"][0]["rated_hours"] == 1400
    # a unit manager: own unit only, no region aggregate
    mine = web.as_("mgr-b").get("/api/v1/evaluation/2025/indicators", params={"unit": "ua"}).json()
    assert set(mine["units"]) == {"ub"} and mine["region"] is None
    assert {f["unit_id"] for f in mine["instruments"]} == {"ub"}
    assert eva.get("/api/v1/evaluation/2025-02-30..2025-03-01/indicators").status_code == 422


def test_one_exemption_or_case_through_the_api(web: Web) -> None:
    mgr = web.as_("mgr-a")
    url = "/api/v1/units/ua/exemptions"
    req = {"instrument_id": "ua-nmr", "reason": "涉密科研任务专用", "requested_on": "2025-01-10"}

    def field(r: Any) -> list[str]:
        assert r.status_code == 422, r.text
        return [f["field"] for f in r.json()["error"]["fields"]]

    assert field(mgr.post(url, json={**req, "approved_on": "2025-02-10", "approved_by": "自治区科技厅"})) == [
        "approval_ref"]
    assert field(mgr.post(url, json={**req, "approved_by": "自治区科技厅", "approval_ref": "内科发〔2025〕12号"})) == [
        "approved_on"]
    assert field(mgr.post(url, json={**req, "valid_from": "2025-06-01", "valid_to": "2025-01-01"})) == ["valid_to"]
    assert field(mgr.post(url, json={**req, "approved_on": "2025-01-01", "approved_by": "厅",
                                     "approval_ref": "1号"})) == ["approved_on"]  # before the request
    assert field(mgr.post(url, json={**req, "instrument_id": "ub-sem"})) == ["instrument_id"]
    assert field(mgr.post(url, json={**req, "reason": ""})) == ["reason"]
    assert web.as_("mgr-b").post(url, json=req).status_code == 404
    assert web.as_("eva").post(url, json=req).status_code == 403
    # a request, then its approval: counted as exempted only once approved
    r = mgr.post(url, json=req)
    assert r.status_code == 201 and r.json()["approved_on"] is None
    assert mgr.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["indicators"]["exempted"] == 0
    r = mgr.post(url, json={**req, "approved_by": "自治区科技厅", "approval_ref": "内科发〔2025〕12号",
                            "approved_on": "2025-02-10", "valid_from": "2025-01-01", "valid_to": "2025-12-31"})
    # a unit manager's approval is a proposal (issue 13): counted once the operator accepts it
    assert r.status_code == 202 and r.json()["after"]["approval_ref"] == "内科发〔2025〕12号"
    assert mgr.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["indicators"]["exempted"] == 0
    assert web.as_("ops").post(f"/api/v1/proposals/{r.json()['id']}/accept").status_code == 200
    assert mgr.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["indicators"]["exempted"] == 1
    assert web.sql("SELECT DISTINCT actor FROM audit_log WHERE table_name = 'instrument_exemptions' ORDER BY 1") == [
        ("account:mgr-a",), ("account:ops",)]
    # cases: evidence required; the same date and title updates
    curl = "/api/v1/units/ua/cases"
    case = {"occurred_on": "2025-06-18", "title": "催化剂物相分析", "kind": "企业成果", "evidence": "BG-2025-031",
            "instrument_id": "ua-xrd"}
    assert field(mgr.post(curl, json={**case, "evidence": ""})) == ["evidence"]
    assert field(mgr.post(curl, json={**case, "kind": "奖项"})) == ["kind"]
    assert mgr.post(curl, json=case).status_code == 201
    r = mgr.post(curl, json={**case, "beneficiary": "丙科技有限公司"})
    assert r.status_code == 201 and r.json()["beneficiary"] == "丙科技有限公司"
    assert len(mgr.get(curl).json()) == 1
    assert mgr.get("/api/v1/evaluation/2025/units/ua").json()["unit"]["cases"] == 1
    page = mgr.get("/registry/lists/exemptions/new").text
    assert 'data-api="/api/v1/units/ua/exemptions"' in page and 'name="approval_ref"' in page
    assert web.as_("eva").get("/registry/lists/cases/new?unit=ua").status_code == 403


# -- in the browser (Debian's chromium, as tests/web/test_browser.py) --------------------------------

browser = test_browser.browser


def test_browser_adds_and_removes_an_identity_of_an_existing_person(browser: Any,
                                                                     make_web: Callable[..., Web]) -> None:
    web = make_web()
    with serve(web.dsn) as base:
        with test_browser.logged_in(browser, base, "mgr-a", viewport={"width": 390, "height": 844}) as page:  # a phone
            page.goto(base + "/registry/people/p-zhang/edit")
            # a raw card number without a configured card key: the field is marked with the reason
            page.select_option("#identity-form select[name=method]", "card")
            page.fill("#identity-form input[name=identifier]", "12345678")
            page.click("#identity-submit")
            err = page.wait_for_selector('#identity-form .field-error[data-field="identifier"]')
            assert "hmac-sha256" in err.inner_text()
            assert web.sql("SELECT count(*) FROM identity_map WHERE method = 'card'") == [(0,)]
            # a check-in account
            page.select_option("#identity-form select[name=method]", "checkin")
            page.fill("#identity-form input[name=identifier]", "zhang-checkin")
            page.click("#identity-submit")
            page.wait_for_selector("#identity-list:has-text('zhang-checkin')")
            assert web.sql("SELECT unit_id, user_id FROM identity_map WHERE method = 'checkin'") == [("ua", "p-zhang")]
            page.screenshot(path=str(test_browser.ARTIFACTS / "person-identities.png"), full_page=True)
            page.click("#identity-list tr:has-text('zhang-checkin') button.api-delete")
            page.wait_for_selector("#identity-list:has-text('zhang-checkin')", state="detached")
            assert web.sql("SELECT count(*) FROM identity_map WHERE method = 'checkin'") == [(0,)]
            assert web.sql("SELECT action, actor FROM audit_log WHERE table_name = 'identity_map'"
                           " AND coalesce(after, before)->>'method' = 'checkin' ORDER BY id") == [
                ("INSERT", "account:mgr-a"), ("DELETE", "account:mgr-a")]


def test_browser_expert_scores_a_criterion_on_the_unit_report(browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    with serve(web.dsn) as base:
        with test_browser.logged_in(browser, base, "eva") as page:
            page.goto(base + "/units/ua/report?period=2025")
            page.select_option("#expert-form select[name=criterion]", "atmosphere")
            page.fill("#expert-form input[name=points]", "很好")
            page.fill("#expert-form textarea[name=note]", "现场检查")
            page.click("#expert-submit")
            page.wait_for_selector('#expert-form .field-error[data-field="points"]')
            assert web.sql("SELECT count(*) FROM expert_scores") == [(0,)]
            page.fill("#expert-form input[name=points]", "4")
            page.click("#expert-submit")
            page.wait_for_selector("#table-score:has-text('现场检查')")
            assert web.sql("SELECT unit_id, period, criterion, points::text, expert FROM expert_scores") == [
                ("ua", "2025", "atmosphere", "4.00", "EVA (eva)")]
            page.screenshot(path=str(test_browser.ARTIFACTS / "report-expert-score.png"), full_page=True)


def test_browser_operator_affiliates_an_organisation(browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    with serve(web.dsn) as base:
        with test_browser.logged_in(browser, base, "ops") as page:
            page.goto(base + "/registry?unit=ua")
            page.select_option("#affiliation-form select[name=org_id]", "ext-co")
            page.click("#affiliation-submit")
            page.wait_for_selector("#affiliation-list:has-text('丙科技有限公司')")
            assert web.sql("SELECT org_id FROM unit_affiliations WHERE unit_id = 'ua'") == [("ext-co",)]
            page.screenshot(path=str(test_browser.ARTIFACTS / "registry-affiliations.png"), full_page=True)
            page.click("#affiliation-list button.api-delete")
            page.wait_for_selector("#affiliation-list", state="detached")
            assert web.sql("SELECT count(*) FROM unit_affiliations") == [(0,)]
    # a unit manager sees the affiliations of their unit without the controls
    mgr_page = web.as_("mgr-a").get("/registry").text
    assert 'id="affiliations"' in mgr_page and 'id="affiliation-form"' not in mgr_page


def test_browser_files_an_exemption_and_is_told_what_is_missing(browser: Any, make_web: Callable[..., Web]) -> None:
    web = make_web()
    with serve(web.dsn) as base:
        with test_browser.logged_in(browser, base, "mgr-a") as page:
            page.goto(base + "/registry/lists/exemptions")
            page.click("#new-entry")
            page.wait_for_url(base + "/registry/lists/exemptions/new?unit=ua")
            page.select_option("select[name=instrument_id]", "ua-nmr")
            page.fill("textarea[name=reason]", "涉密科研任务专用")
            page.fill("input[name=approved_by]", "自治区科技厅")
            page.fill("input[name=approved_on]", "2025-02-10")
            page.click("#form-submit")
            page.wait_for_selector('.field-error[data-field="approval_ref"]')
            assert web.sql("SELECT count(*) FROM instrument_exemptions") == [(0,)]
            page.fill("input[name=approval_ref]", "内科发〔2025〕12号")
            page.click("#form-submit")
            page.wait_for_url(base + "/registry/lists/exemptions?unit=ua")
            # a unit manager's approval is a proposal (issue 13): listed once the operator accepts it
            [(pid,)] = web.sql("SELECT id FROM registry_proposals WHERE status = 'pending'")
            assert web.as_("ops").post(f"/api/v1/proposals/{pid}/accept").status_code == 200
            page.reload()
            assert "内科发〔2025〕12号" in page.inner_text("#listing")
            page.screenshot(path=str(test_browser.ARTIFACTS / "registry-exemptions.png"), full_page=True)
