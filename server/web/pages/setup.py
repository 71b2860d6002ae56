"""First run for the operator (issue 18): organisations and units as pages, the agent enrolment
page of an instrument (configuration download, QR code, the one command), and the checklist of
what is still missing before the first evaluation. Forms post to the JSON API like every other
registry form (static/forms.js); the enrolment page calls the token API (static/enrol.js)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from server.registry import queries, schema
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.db import one, rows
from server.web.deps import Db, MaybeWho
from server.web.errors import not_found
from server.web.i18n import request_lang, t
from server.web.pages import forms
from server.web.templating import need, render

router = APIRouter(include_in_schema=False)


def _operator(who: Principal | None) -> Principal:
    p = need(who)
    require_role(p, "operator")
    return p


def _form(request: Request, p: Principal, *, title: str, fields: list[forms.F], values: dict[str, Any],
          editing: bool, api: str, method: str, next_url: str, back: str,
          options: dict[str, list[tuple[str, str]]] | None = None) -> Response:
    shown = forms.shown(fields, request_lang(request), values, editing=editing, options=options)
    return render(request, "form.html", p, title=title, fields=shown, api=api, method=method, next=next_url,
                  back=back)


# -- organisations ------------------------------------------------------------------------------------


@router.get("/registry/organisations", response_class=HTMLResponse)
def organisations_page(request: Request, who: MaybeWho, db: Db) -> Response:
    p = _operator(who)
    lang = request_lang(request)
    with db.read() as conn:
        found = rows(conn, "SELECT o.id, o.name, o.kind, (SELECT count(*) FROM platform_users u"
                           " WHERE u.org_id = o.id) AS people FROM organisations o ORDER BY o.id LIMIT 2000")
    items = [([r["id"], r["name"], t(lang, "org.kind." + r["kind"]), r["people"]],
              f"/registry/organisations/{r['id']}/edit") for r in found]
    return render(request, "reglist.html", p, title=t(lang, "setup.organisations"), items=items,
                  columns=[t(lang, "import.key"), t(lang, "col.name"), t(lang, "setup.kind"), t(lang, "setup.people")],
                  new_href="/registry/organisations/new", new_label=t(lang, "setup.new_organisation"))


def _kinds(lang: str) -> dict[str, list[tuple[str, str]]]:
    return {"kind": [(k, t(lang, "org.kind." + k)) for k in schema.ORG_KIND]}


@router.get("/registry/organisations/new", response_class=HTMLResponse)
def organisation_new(request: Request, who: MaybeWho) -> Response:
    p = _operator(who)
    lang = request_lang(request)
    return _form(request, p, title=t(lang, "setup.new_organisation"), fields=forms.ORGANISATION,
                 values={"kind": "university"}, editing=False, api="/api/v1/organisations", method="POST",
                 next_url="/setup", back="/setup", options=_kinds(lang))


@router.get("/registry/organisations/{org_id}/edit", response_class=HTMLResponse)
def organisation_edit(org_id: str, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _operator(who)
    lang = request_lang(request)
    with db.read() as conn:
        org = one(conn, "SELECT id, name, kind FROM organisations WHERE id = %s", (org_id,))
    if org is None:
        raise not_found("what.organisation", org_id)
    return _form(request, p, title=t(lang, "setup.edit_organisation", id=org_id), fields=forms.ORGANISATION,
                 values=org, editing=True, api=f"/api/v1/organisations/{org_id}", method="PATCH",
                 next_url="/registry/organisations", back="/registry/organisations", options=_kinds(lang))


# -- units --------------------------------------------------------------------------------------------


def _org_options(conn: Any) -> dict[str, list[tuple[str, str]]]:
    found = rows(conn, "SELECT id, name FROM organisations ORDER BY id")
    return {"org_id": [(o["id"], f"{o['name']}（{o['id']}）") for o in found]}


@router.get("/registry/units", response_class=HTMLResponse)
def units_page(request: Request, who: MaybeWho, db: Db) -> Response:
    p = _operator(who)
    lang = request_lang(request)
    with db.read() as conn:
        found = rows(conn, "SELECT u.id, u.name, u.region, o.name AS org_name,"
                           " (SELECT count(*) FROM instruments i WHERE i.unit_id = u.id) AS instruments"
                           " FROM units u JOIN organisations o ON o.id = u.org_id ORDER BY u.id")
    items = [([r["id"], r["name"], r["org_name"], r["region"], r["instruments"]], f"/registry/units/{r['id']}/edit")
             for r in found]
    return render(request, "reglist.html", p, title=t(lang, "setup.units"), items=items,
                  columns=[t(lang, "import.key"), t(lang, "col.name"), t(lang, "setup.organisation"),
                           t(lang, "setup.region"), t(lang, "setup.instruments")],
                  new_href="/registry/units/new", new_label=t(lang, "setup.new_unit"))


@router.get("/registry/units/new", response_class=HTMLResponse)
def unit_new(request: Request, who: MaybeWho, db: Db) -> Response:
    p = _operator(who)
    lang = request_lang(request)
    with db.read() as conn:
        options = _org_options(conn)
    return _form(request, p, title=t(lang, "setup.new_unit"), fields=forms.UNIT, values={}, editing=False,
                 api="/api/v1/units", method="POST", next_url="/setup", back="/setup", options=options)


@router.get("/registry/units/{unit_id}/edit", response_class=HTMLResponse)
def unit_edit(unit_id: str, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _operator(who)
    lang = request_lang(request)
    with db.read() as conn:
        u = scope.unit(conn, p, unit_id)
        options = _org_options(conn)
    return _form(request, p, title=t(lang, "setup.edit_unit", id=unit_id), fields=forms.UNIT, values=u,
                 editing=True, api=f"/api/v1/units/{unit_id}", method="PATCH", next_url="/registry/units",
                 back="/registry/units", options=options)


# -- accounts (a unit's manager; the first operator comes from `jishi account`) -------------------------

ACCOUNT = [
    forms.F("login", "登录名", "Login", required=True),
    forms.F("display_name", "姓名", "Name"),
    forms.F("role", "角色", "Role", "select", required=True,
            options=(("unit_manager", "单位管理员"), ("evaluator", "评价专家"), ("operator", "平台运营方")),
            options_en=(("unit_manager", "Unit manager"), ("evaluator", "Evaluator"),
                        ("operator", "Platform operator"))),
    forms.F("unit_id", "单位（单位管理员）", "Unit (unit managers)", "select"),
    forms.F("password", "初始密码（至少 10 个字符）", "Initial password (at least 10 characters)", "password",
            required=True),
]


@router.get("/registry/accounts/new", response_class=HTMLResponse)
def account_new(request: Request, who: MaybeWho, db: Db,
                unit: Annotated[str, Query(max_length=64)] = "") -> Response:
    p = _operator(who)
    lang = request_lang(request)
    with db.read() as conn:
        units = rows(conn, "SELECT id, name FROM units ORDER BY id")
    return _form(request, p, title=t(lang, "setup.new_account"), fields=ACCOUNT,
                 values={"role": "unit_manager", "unit_id": unit}, editing=False, api="/api/v1/accounts",
                 method="POST", next_url="/setup", back="/setup",
                 options={"unit_id": [(u["id"], f"{u['name']}（{u['id']}）") for u in units]})


# -- enrolment ----------------------------------------------------------------------------------------


@router.get("/instruments/{instrument_id}/enrol", response_class=HTMLResponse)
def enrol_page(instrument_id: str, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _operator(who)
    with db.read() as conn:
        inst = scope.instrument(conn, p, instrument_id)
        agents = rows(conn, "SELECT a.id, a.revoked_at, (SELECT count(*) FROM agent_keys k WHERE k.agent_id = a.id"
                            " AND k.revoked_at IS NULL) AS keys FROM agents a WHERE a.instrument_id = %s ORDER BY a.id",
                      (instrument_id,))
        tokens = rows(conn, "SELECT id, agent_id, created_at, expires_at, used_at, revoked_at FROM enrolment_tokens"
                            " WHERE instrument_id = %s ORDER BY id DESC LIMIT 20", (instrument_id,))
    return render(request, "enrol.html", p, inst=inst, agents=agents, tokens=tokens)


# -- checklist ----------------------------------------------------------------------------------------


@router.get("/setup", response_class=HTMLResponse)
def setup_page(request: Request, who: MaybeWho, db: Db) -> Response:
    p = _operator(who)
    with db.read() as conn:
        counts = queries.setup_counts(conn)
        gaps = queries.setup_gaps(conn)
    missing = sum(n for n, _ in gaps.values())
    return render(request, "setup.html", p, counts=counts, gaps=gaps, missing=missing)
