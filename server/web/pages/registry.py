"""Registry pages for people: edit forms (instruments, users, price lists, service records) and the
spreadsheet import. The forms post to the JSON API (server/web/pages/forms.py, static/forms.js), so every
check, scope rule and audit entry is the API's. Operators and unit managers only (own unit)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from server.registry import proposals, queries
from server.store.conn import Conn
from server.web import scope
from server.web.auth import Principal, require_role
from server.web.db import one, rows
from server.web.deps import Db, MaybeWho, Settings
from server.web.errors import not_found
from server.web.i18n import request_lang, t, t_or
from server.web.pages import forms
from server.web.services.registry import KEYS, headers, kinds, listing
from server.web.templating import local, need, render

router = APIRouter(include_in_schema=False)


def _editor(who: Principal | None) -> Principal:
    p = need(who)
    require_role(p, "operator", "unit_manager")
    return p


def _units(conn: Conn, p: Principal) -> list[tuple[str, str]]:
    found = rows(conn, "SELECT id, name FROM units WHERE %(s)s::text[] IS NULL OR id = ANY(%(s)s::text[]) ORDER BY id",
                 {"s": p.unit_scope()})
    return [(u["id"], f"{u['name']}（{u['id']}）") for u in found]


def _form(request: Request, p: Principal, *, title: str, fields: list[forms.F], values: dict[str, Any] | None,
          editing: bool, api: str, method: str, next_url: str, back: str,
          options: dict[str, list[tuple[str, str]]] | None = None, pending: dict[str, Any] | None = None,
          **extra: Any) -> Response:
    lang = request_lang(request)
    shown = forms.shown(fields, lang, values, editing=editing, options=options, proposals=p.role == "unit_manager",
                        pending=pending)
    return render(request, "form.html", p, title=title, fields=shown, api=api, method=method, next=next_url,
                  back=back, **extra)


# -- instruments ----------------------------------------------------------------------------------


@router.get("/registry/instruments/new", response_class=HTMLResponse)
def instrument_new(request: Request, who: MaybeWho, db: Db,
                   unit: Annotated[str, Query(max_length=64)] = "") -> Response:
    p = _editor(who)
    with db.read() as conn:
        units = _units(conn, p)
    lang = request_lang(request)
    return _form(request, p, title=t(lang, "registry.new_instrument"), fields=forms.INSTRUMENT,
                 values={"unit_id": unit or p.unit_id, "is_open": True}, editing=False, api="/api/v1/instruments",
                 method="POST", next_url="/instruments/{id}", back="/registry", options={"unit_id": units})


@router.get("/registry/instruments/{instrument_id}/edit", response_class=HTMLResponse)
def instrument_edit(instrument_id: str, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    with db.read() as conn:
        inst = scope.instrument(conn, p, instrument_id, write=True)
        scope.writable_unit(p, inst["unit_id"])
        pending = proposals.pending_for(conn, "instruments", instrument_id)
    lang = request_lang(request)
    return _form(request, p, title=t(lang, "registry.edit_instrument", id=instrument_id), fields=forms.INSTRUMENT,
                 values=inst, editing=True, pending=pending, api=f"/api/v1/instruments/{instrument_id}", method="PATCH",
                 next_url=f"/instruments/{instrument_id}", back=f"/instruments/{instrument_id}")


# -- people ---------------------------------------------------------------------------------------

_PEOPLE_OF = queries.PEOPLE + " ORDER BY p.id LIMIT 2000"


def _orgs(conn: Conn) -> list[tuple[str, str]]:
    found = rows(conn, "SELECT id, name FROM organisations ORDER BY id")
    return [(o["id"], f"{o['name']}（{o['id']}）") for o in found]


@router.get("/registry/people", response_class=HTMLResponse)
def people_list(request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    lang = request_lang(request)
    with db.read() as conn:
        people = rows(conn, _PEOPLE_OF, {"s": p.unit_scope()})
    items = [([r["id"], r["name"], r["org_name"]], f"/registry/people/{r['id']}/edit") for r in people]
    return render(request, "reglist.html", p, title=t(lang, "registry.people"), items=items,
                  columns=[t(lang, "import.key"), t(lang, "col.name"), t(lang, "col.unit")],
                  new_href="/registry/people/new", new_label=t(lang, "registry.new_person"))


@router.get("/registry/people/new", response_class=HTMLResponse)
def person_new(request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    with db.read() as conn:
        orgs, units = _orgs(conn), _units(conn, p)
    lang = request_lang(request)
    return _form(request, p, title=t(lang, "registry.new_person"), fields=forms.PERSON,
                 values={"unit_id": p.unit_id, "identities.0.method": "os"}, editing=False, api="/api/v1/people",
                 method="POST", next_url="/registry/people", back="/registry/people",
                 options={"org_id": orgs, "unit_id": units})


@router.get("/registry/people/{person_id}/edit", response_class=HTMLResponse)
def person_edit(person_id: str, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    with db.read() as conn:
        person = one(conn, "SELECT x.* FROM (" + queries.PEOPLE + ") x WHERE x.id = %(id)s",
                     {"s": p.unit_scope(), "id": person_id})
        if person is None:
            raise not_found("what.person", person_id)
        orgs, units = _orgs(conn), _units(conn, p)
        # the person's identities in the units the caller may change (a manager: their own unit)
        mapped = rows(conn, "SELECT unit_id, method, identifier FROM identity_map WHERE user_id = %(id)s"
                            " AND (%(s)s::text[] IS NULL OR unit_id = ANY(%(s)s::text[])) ORDER BY 1, 2, 3",
                      {"id": person_id, "s": p.unit_scope()})
        pending = proposals.pending_for(conn, "platform_users", person_id)
    lang = request_lang(request)
    for m in mapped:
        m["delete"] = (f"/api/v1/units/{quote(m['unit_id'], safe='')}/identities/{quote(m['method'], safe='')}/"
                       f"{quote(m['identifier'], safe='')}")
    ident_fields = forms.shown(forms.IDENTITY, lang, {"unit_id": p.unit_id or (units[0][0] if units else ""),
                                                      "method": "os"},
                               editing=False, options={"unit_id": units})
    return _form(request, p, title=t(lang, "registry.edit_person", id=person_id), fields=forms.PERSON,
                 values=person, editing=True, pending=pending, api=f"/api/v1/people/{person_id}", method="PATCH",
                 next_url="/registry/people", back="/registry/people", options={"org_id": orgs},
                 identities=mapped, ident_fields=ident_fields, ident_user=person_id,
                 ident_next=f"/registry/people/{quote(person_id, safe='')}/edit")


# -- price list -------------------------------------------------------------------------------------


@router.get("/registry/instruments/{instrument_id}/prices/new", response_class=HTMLResponse)
def price_new(instrument_id: str, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    with db.read() as conn:
        inst = scope.instrument(conn, p, instrument_id, write=True)
        scope.writable_unit(p, inst["unit_id"])
    lang = request_lang(request)
    return _form(request, p, title=t(lang, "registry.new_price", inst=inst["name"]), fields=forms.PRICE, values={},
                 editing=False, api=f"/api/v1/instruments/{instrument_id}/prices", method="POST",
                 next_url=f"/instruments/{instrument_id}", back=f"/instruments/{instrument_id}")


@router.get("/registry/prices/{price_id}/edit", response_class=HTMLResponse)
def price_edit(price_id: int, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    with db.read() as conn:
        price = one(conn, "SELECT * FROM price_list WHERE id = %s", (price_id,))
        if price is None:
            raise not_found("what.price", price_id)
        inst = scope.instrument(conn, p, price["instrument_id"], write=True)
        scope.writable_unit(p, inst["unit_id"])
    lang = request_lang(request)
    back = f"/instruments/{inst['id']}"
    return _form(request, p, title=t(lang, "registry.edit_price"), fields=forms.PRICE, values=price, editing=True,
                 api=f"/api/v1/prices/{price_id}", method="PATCH", next_url=back, back=back)


# -- service records --------------------------------------------------------------------------------


def _instrument_options(conn: Conn, p: Principal) -> list[tuple[str, str]]:
    found = rows(conn, "SELECT id, name FROM instruments WHERE %(s)s::text[] IS NULL OR unit_id = ANY(%(s)s::text[])"
                       " ORDER BY unit_id, id LIMIT 5000", {"s": p.unit_scope()})
    return [(i["id"], f"{i['name']}（{i['id']}）") for i in found]


@router.get("/registry/service-records", response_class=HTMLResponse)
def services_list(request: Request, who: MaybeWho, db: Db,
                  instrument: Annotated[str, Query(max_length=64)] = "") -> Response:
    p = _editor(who)
    lang = request_lang(request)
    with db.read() as conn:
        found = rows(conn, "SELECT id, record_no, instrument_id, start_at, service_hours, amount, user_type"
                           " FROM service_records WHERE (%(s)s::text[] IS NULL OR unit_id = ANY(%(s)s::text[]))"
                           " AND (%(i)s::text = '' OR instrument_id = %(i)s) ORDER BY start_at DESC LIMIT 500",
                     {"s": p.unit_scope(), "i": instrument})
    items = [([r["record_no"], r["instrument_id"], local(r["start_at"]), r["service_hours"], r["amount"],
               r["user_type"]], f"/registry/service-records/{r['id']}/edit") for r in found]
    return render(request, "reglist.html", p, title=t(lang, "registry.services"), items=items,
                  columns=[t(lang, "import.key"), t(lang, "col.instrument"), t(lang, "inst.from"), "h", "¥", "120/130"],
                  new_href="/registry/service-records/new" + (f"?instrument={instrument}" if instrument else ""),
                  new_label=t(lang, "registry.new_service"))


@router.get("/registry/service-records/new", response_class=HTMLResponse)
def service_new(request: Request, who: MaybeWho, db: Db,
                instrument: Annotated[str, Query(max_length=64)] = "") -> Response:
    p = _editor(who)
    with db.read() as conn:
        options = _instrument_options(conn, p)
    lang = request_lang(request)
    return _form(request, p, title=t(lang, "registry.new_service"), fields=forms.SERVICE,
                 values={"instrument_id": instrument, "user_type": "130", "direction": "135", "way": "其他"},
                 editing=False, api="/api/v1/service-records", method="POST", next_url="/registry/service-records",
                 back="/registry/service-records", options={"instrument_id": options})


@router.get("/registry/service-records/{record_id}/edit", response_class=HTMLResponse)
def service_edit(record_id: int, request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    with db.read() as conn:
        rec = one(conn, "SELECT * FROM service_records WHERE id = %s", (record_id,))
        if rec is None or not p.can_read_unit(rec["unit_id"]):
            raise not_found("what.service_record", record_id)
        scope.writable_unit(p, rec["unit_id"])
        options = _instrument_options(conn, p)
    lang = request_lang(request)
    return _form(request, p, title=t(lang, "registry.edit_service", no=rec["record_no"]), fields=forms.SERVICE,
                 values=rec, editing=True, api=f"/api/v1/service-records/{record_id}", method="PATCH",
                 next_url="/registry/service-records", back="/registry/service-records",
                 options={"instrument_id": options})


# -- read-only listings: exemptions, cases, import batches ---------------------------------------------


@router.get("/registry/lists/{what}", response_class=HTMLResponse)
def listing_page(what: str, request: Request, who: MaybeWho, db: Db,
                 unit: Annotated[str, Query(max_length=64)] = "") -> Response:
    p = need(who)
    if what not in KEYS:
        raise not_found("what.page", what)
    lang = request_lang(request)
    with db.read() as conn:
        units = _units(conn, p)
        unit_id = p.unit_id if p.role == "unit_manager" else (unit or (units[0][0] if units else ""))
        found = []
        if unit_id:
            scope.unit(conn, p, unit_id)
            found = listing(conn, what, unit_id)
    cells = [["—" if v is None else (local(v) if what == "imports" and k == "created_at" else str(v))
              for k, v in r.items()] for r in found]
    return render(request, "listing.html", p, title=t(lang, f"registry.list_{what}"), what=what, rows=cells,
                  columns=[t_or(lang, 'list.col.' + h, h) for h in headers(what)], units=units, unit_id=unit_id,
                  api=f"/api/v1/units/{unit_id}/{what}" if unit_id else "")


@router.get("/registry/lists/{what}/new", response_class=HTMLResponse)
def listing_new(what: str, request: Request, who: MaybeWho, db: Db,
                unit: Annotated[str, Query(max_length=64)] = "") -> Response:
    p = _editor(who)
    if what not in ("exemptions", "cases"):
        raise not_found("what.page", what)
    lang = request_lang(request)
    with db.read() as conn:
        units = _units(conn, p)
        unit_id = (p.unit_id or "") if p.role == "unit_manager" else (unit or (units[0][0] if units else ""))
        u = scope.unit(conn, p, unit_id)
        scope.writable_unit(p, unit_id)
        insts = rows(conn, "SELECT id, name FROM instruments WHERE unit_id = %s ORDER BY id", (unit_id,))
    options = {"instrument_id": [(i["id"], f"{i['name']}（{i['id']}）") for i in insts]}
    fields, values = ((forms.EXEMPTION, {}) if what == "exemptions" else (forms.CASE, {"kind": "其他"}))
    back = f"/registry/lists/{what}?unit={quote(unit_id, safe='')}"
    return _form(request, p, title=f"{t(lang, 'registry.new_' + what)} · {u['name']}", fields=fields, values=values,
                 editing=False, api=f"/api/v1/units/{quote(unit_id, safe='')}/{what}", method="POST",
                 next_url=back, back=back, options=options)


# -- proposals (changes that move the figures wait for the operator) ----------------------------------------


@router.get("/registry/proposals", response_class=HTMLResponse)
def proposals_page(request: Request, who: MaybeWho, db: Db, settings: Settings,
                   unit: Annotated[str, Query(max_length=64)] = "",
                   status: Annotated[str, Query(pattern="^(pending|accepted|declined|superseded)$")] = "pending"
                   ) -> Response:
    p = need(who)
    lang = request_lang(request)
    with db.read() as conn:
        units = rows(conn, "SELECT id, name FROM units WHERE %(s)s::text[] IS NULL OR id = ANY(%(s)s::text[])"
                           " ORDER BY id", {"s": p.unit_scope()})
        if unit:
            scope.unit(conn, p, unit)
        found = proposals.listing(conn, [unit] if unit else p.unit_scope(), status)
        pseudo = scope.pseudonymizer(conn) if not p.sees_names else None
    items = []
    for r in found:
        zh, en = proposals.label(r)
        key = pseudo.user(r["row_key"]) if pseudo is not None and r["target"] == "platform_users" else r["row_key"]
        items.append({**r, "what": en if lang == "en" else zh, "row_key": key, "at": local(r["proposed_at"]),
                      "before": proposals.shown(r["before"]), "after": proposals.shown(r["after"])})
    return render(request, "proposals.html", p, items=items, units=units, unit_id=unit, shown_status=status,
                  decide=proposals.may_decide(p.role, settings.evaluators_decide_proposals))


# -- import -------------------------------------------------------------------------------------------


@router.get("/registry/import", response_class=HTMLResponse)
def import_page(request: Request, who: MaybeWho, db: Db) -> Response:
    p = _editor(who)
    lang = request_lang(request)
    with db.read() as conn:
        units = rows(conn, "SELECT id, name FROM units WHERE %(s)s::text[] IS NULL OR id = ANY(%(s)s::text[])"
                           " ORDER BY id", {"s": p.unit_scope()})
    texts = {k: t(lang, f"import.{k}") for k in ("accepted", "rejected", "skipped", "st_dry_run", "st_committed",
                                                 "st_rejected")}
    texts["no_file"] = t(lang, "import.no_file")
    return render(request, "import.html", p, kinds=kinds(), units=units, texts=texts)
