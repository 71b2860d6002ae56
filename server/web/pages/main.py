"""Server-rendered pages (Chinese first, `?lang=en` switches and sticks in a cookie).

Pages call the same query modules as the API, so a page never shows what the API would refuse:
scope checks raise the same errors, which the error handlers turn into a login redirect (401) or
an error page.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server import clock
from server.evaluation.period import Period
from server.store.conn import Conn
from server.store.times import TZ
from server.web import audit, auth, scope
from server.web.cookies import set_session_cookie
from server.web.db import rows
from server.web.deps import Db, Derive, MaybeWho, Settings
from server.web.errors import ApiError, not_found
from server.web.i18n import request_lang, t, t_or
from server.web.params import aware, check_range, safe_next
from server.web.services import board, catalog, charts, checkin, evaluation, plausibility, report_text
from server.web.services.evidence import MAX_SPAN, interval_evidence
from server.web.services.results import Results
from server.web.services.timeline import SPANS, timeline
from server.web.services.trend import utilization_trend
from server.web.templating import fragment, home_of, local, need, render

router = APIRouter(include_in_schema=False)


def results(request: Request) -> Results:
    """This worker's computed reports (services/results.py)."""
    r: Results = request.app.state.results
    return r


def _safe_next(target: str | None) -> str | None:
    """Only local paths: never redirect a login to another site (params.safe_next)."""
    return safe_next(target)


# -- login -----------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def index(who: MaybeWho) -> Response:
    return RedirectResponse(home_of(who), status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, who: MaybeWho, settings: Settings, next: str | None = None) -> Response:
    if who is not None:
        return RedirectResponse(_safe_next(next) or home_of(who), status_code=303)
    return render(request, "login.html", None, next=_safe_next(next) or "", error=None,
                  providers=settings.login_providers)


@router.post("/login", response_class=HTMLResponse)
def login_submit(request: Request, db: Db, settings: Settings,
                 login: Annotated[str, Form(max_length=64)] = "",
                 password: Annotated[str, Form(max_length=256)] = "",
                 next: Annotated[str, Form(max_length=2000)] = "") -> Response:
    lang = request_lang(request)
    try:
        result = auth.login(db, settings, login, password, auth.client_of(request))
    except ApiError as exc:
        msg = t(lang, exc.key, **exc.params)
        return render(request, "login.html", None, status=exc.status, next=_safe_next(next) or "", error=msg,
                      login=login, providers=settings.login_providers)
    resp = RedirectResponse(_safe_next(next) or home_of(result.principal), status_code=303)
    set_session_cookie(resp, settings, result)
    return resp


@router.post("/logout")
async def logout_submit(request: Request, db: Db) -> Response:
    form = await request.form()
    sent = form.get("csrf_token")
    auth.logout(db, request, sent if isinstance(sent, str) else None)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(auth.SESSION_COOKIE, path="/")
    return resp


# -- live board -------------------------------------------------------------------------------------


@router.get("/units/{unit_id}/board", response_class=HTMLResponse)
def board_page(unit_id: str, request: Request, who: MaybeWho, db: Db, settings: Settings) -> Response:
    p = need(who)
    with db.read() as conn:
        u = scope.unit(conn, p, unit_id)
        tiles = board.tiles(conn, unit_id=unit_id, stale_s=settings.live_stale_s)
    util = results(request).get(db, ("year_utilization", unit_id, clock.now().astimezone(TZ).year),
                                lambda c: board.year_utilization(c, unit_id), light=True)
    return render(request, "board.html", p, unit=u, tiles=tiles, util=util, low=settings.low_use_threshold)


# -- instrument -------------------------------------------------------------------------------------


_STATE_CLASS = {"running": "st-running", "idle": "st-idle", "off": "st-off", "fault": "st-fault",
                "unknown": "st-unknown"}


@router.get("/instruments/{instrument_id}", response_class=HTMLResponse)
def instrument_page(instrument_id: str, request: Request, who: MaybeWho, db: Db, settings: Settings,
                    derive: Derive, span: Annotated[str, Query(pattern="^(day|week|month)$")] = "day",
                    start: date | None = None, ev_from: datetime | None = None,
                    ev_to: datetime | None = None) -> Response:
    p = need(who)
    lang = request_lang(request)
    days = SPANS[span]
    first = start or (clock.today() - timedelta(days=days - 1))
    ev = None
    if ev_from is not None and ev_to is not None:
        ev_from, ev_to = aware(ev_from), aware(ev_to)
        check_range(ev_from, ev_to, "ev_from", "ev_to")
    with db.read() as conn:
        inst = scope.instrument(conn, p, instrument_id)
        data = timeline(conn, p, instrument_id, first, days)
        flags = plausibility.shown(conn, lang, instrument_id, data["start"], data["end"])
        # the trend ends with the month being looked at (today's, unless an earlier period is shown)
        trend_data = utilization_trend(conn, inst, today=min(clock.today(),
                                                             first + timedelta(days=days - 1)))
        if ev_from is not None and ev_to is not None:
            ev = interval_evidence(conn, p, inst, ev_from, ev_to, derive.live_window_ms)
        tile = board.tiles(conn, unit_id=None, ids=[instrument_id], stale_s=settings.live_stale_s)
        prices = rows(conn, "SELECT id, item, basis, internal_price, external_price, valid_from, valid_to"
                            " FROM price_list"
                            " WHERE instrument_id = %s ORDER BY valid_from DESC, item", (instrument_id,))
        agents = rows(conn, "SELECT a.id, a.revoked_at, (SELECT count(*) FROM agent_keys k WHERE k.agent_id = a.id"
                            " AND k.revoked_at IS NULL) AS keys FROM agents a WHERE a.instrument_id = %s ORDER BY a.id",
                      (instrument_id,))
        manual = checkin.manual_sessions(conn, instrument_id, data["start"], data["end"])
    t0, t1 = data["start"], data["end"]

    def ev_href(a: datetime, b: datetime) -> str:
        return "?" + urlencode({"span": span, "start": first.isoformat(), "ev_from": a.isoformat(),
                                "ev_to": b.isoformat()}) + "#evidence"

    lanes = [
        (t(lang, "inst.states"), [charts.Span(s["start_at"], s["end_at"], _STATE_CLASS.get(s["state"], "st-unknown")
                                              + ("" if s["watched"] else " unwatched"),
                                              f"{t(lang, 'state.' + s['state'])} {local(s['start_at'])}–"
                                              f"{local(s['end_at'], '%H:%M')}",
                                              href=ev_href(s["start_at"], min(s["end_at"], s["start_at"] + MAX_SPAN)))
                                  for s in data["segments"]]),
        (t(lang, "inst.sessions"), [charts.Span(max(s["start_at"], t0), min(s["end_at"] or t1, t1), "session",
                                                f"{s['who']} {s['org'] or ''}", s["who"] or "",
                                                href=ev_href(max(s["start_at"], t0),
                                                             min(s["end_at"] or t1, t1, max(s["start_at"], t0)
                                                                 + MAX_SPAN)))
                                    for s in data["sessions"]]),
        (t(lang, "inst.coverage"), [charts.Span(c["start_at"], c["end_at"], "cov-" + c["status"],
                                                f"{t(lang, 'cov.' + c['status'])} "
                                                f"{t_or(lang, 'cov.reason.' + c['reason'], c['reason'])}")
                                    for c in data["coverage"]]),
    ]
    chart = charts.timeline(t0, t1, lanes, title=t(lang, "inst.timeline"), lang=lang)
    daily = charts.columns([(d["day"].isoformat(), d["verified"], d["unverified"]) for d in data["daily"]],
                           title=t(lang, "inst.daily_hours"),
                           legend=(t(lang, "report.verified"), t(lang, "report.including")), lang=lang)
    nav = {"prev": (first - timedelta(days=days)).isoformat(), "next": (first + timedelta(days=days)).isoformat()}
    total = sum(d["verified"] for d in data["daily"])
    trend_chart = charts.trend(
        [(pt["label"], pt["utilization_verified"], pt["utilization_total"]) for pt in trend_data["points"]],
        title=f"{t(lang, 'trend.title')}（{t(lang, 'trend.' + trend_data['bucket'])}）",
        legend=(t(lang, "report.verified"), t(lang, "report.including")), reference=settings.low_use_threshold,
        lang=lang)
    power_chart = None
    if ev is not None:
        power_chart = charts.line(
            ev["from"], ev["to"],
            [charts.Point(pt["t"], pt["w"], pt.get("min_w"), pt.get("max_w")) for pt in ev["power"]["points"]],
            title=t(lang, "ev.power"), unit="W", empty=t(lang, "ev.no_power"), lang=lang,
            marks=[(tr["t"], f"{t(lang, 'state.' + str(tr['from']))} → {t(lang, 'state.' + str(tr['to']))}")
                   for tr in ev["transitions"] if not tr["before_interval"]])
    return render(request, "instrument.html", p, inst=inst, data=data, chart=chart, daily=daily, span=span,
                  start=first, nav=nav, tile=tile[0] if tile else None, prices=prices, agents=agents,
                  total_verified=total, trend_chart=trend_chart, trend=trend_data, ev=ev, power_chart=power_chart,
                  plausibility=flags, manual_sessions=manual)


# -- unit report ------------------------------------------------------------------------------------


def _year(year: int | None, period: str = "") -> Period:
    """`period` (YYYY or YYYY-MM-DD..YYYY-MM-DD, end exclusive) wins over `year`; default: the
    evaluation year (the previous calendar year)."""
    if period.strip():
        return evaluation.period_of(period)
    return Period.year(year) if year else Period.default()


# The report page is its figures and charts; each section's rows are a click away (folded, with the
# row count), except the score sheet. A section longer than a screenful gets a filter, and the page
# draws at most MAX_ROWS of it (the whole list is in the XLSX and the JSON), so it stays fast and short.
OPEN_SECTIONS = ("score",)
FOLD_ROWS = 15
MAX_ROWS = 200

OVERVIEW_ROWS = 200  # rows of each table the overview draws (templates/overview.html), except the scores

PeriodQuery = Annotated[str, Query(max_length=40, description="YYYY or YYYY-MM-DD..YYYY-MM-DD")]


@router.get("/units/{unit_id}/report", response_class=HTMLResponse)
def report_page(unit_id: str, request: Request, who: MaybeWho, db: Db, settings: Settings,
                year: Annotated[int | None, Query(ge=2000, le=2100)] = None, period: PeriodQuery = "") -> Response:
    p = need(who)
    lang = request_lang(request)
    period_ = _year(year, period)
    with db.read() as conn:
        u = scope.unit(conn, p, unit_id)
    kept = results(request)

    def shown(view: dict[str, Any]) -> dict[str, Any]:
        """What the page draws of the kept report in this language: the same for everyone allowed
        to see it, so made once per kept report and language."""
        rep = report_text.report(view, lang)
        insts = rep["instruments"]
        util_chart = charts.hbars(
            [charts.Bar(f["name"], f["utilization"]["verified"], href=f"/instruments/{f['id']}")
             for f in insts if f["in_scope"] and not f["exempted"]],
            title=t(lang, "report.chart_util"), percent=True, reference=settings.low_use_threshold, lang=lang)
        claims_chart = charts.hbars(
            [charts.Bar(f["name"], f["external_hours"]["verified"], float(f["claimed_external_hours"]))
             for f in insts if f["service_records"] or f["external_hours"]["total"]],
            title=t(lang, "report.chart_claims"), unit=" h",
            legend=(t(lang, "report.external"), t(lang, "report.claimed")), lang=lang)
        tables_html = fragment(lang, "_report_tables.html", rep=rep, fold_rows=FOLD_ROWS, max_rows=MAX_ROWS,
                               open_sections=OPEN_SECTIONS)
        return {"rep": rep, "util_chart": util_chart, "claims_chart": claims_chart, "tables_html": tables_html}

    page = kept.derived(db, ("unit_report", period_.label, unit_id),
                        lambda c: evaluation.page_view(
                            evaluation.unit_report(c, settings, period_, unit_id, rows=MAX_ROWS), MAX_ROWS),
                        lang, shown, kept.ttl_for(period_.end, clock.today()))
    rep = page["rep"]
    return render(request, "report.html", p, unit=u, period=period_, ind=rep["unit"]["indicators"], **page)


# -- evaluator overview -------------------------------------------------------------------------------


@router.get("/overview", response_class=HTMLResponse)
def overview_page(request: Request, who: MaybeWho, db: Db, settings: Settings,
                  year: Annotated[int | None, Query(ge=2000, le=2100)] = None, period: PeriodQuery = "",
                  code: Annotated[str, Query(max_length=32)] = "",
                  specs: Annotated[str, Query(max_length=500)] = "",
                  location: Annotated[str, Query(max_length=100)] = "",
                  sample: Annotated[int, Query(ge=0, le=1000)] = 50,
                  seed: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None) -> Response:
    p = need(who)
    auth.require_role(p, "operator", "evaluator")
    lang = request_lang(request)
    period_ = _year(year, period)
    from server.evaluation import report as report_mod
    from server.evaluation import review
    from server.evaluation.indicators import compute
    from server.exports import closing

    def overview(conn: Conn) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
        snap = closing.current(conn, period_.label)
        if snap is not None:  # a closed period: the snapshot's scores; the low-use review stays live
            rep = evaluation.page_view(closing.region_view(conn, snap), OVERVIEW_ROWS, whole=("scores",))
            ev = compute(conn, period_)
        else:
            result = evaluation.region(conn, settings, period_, sample_size=sample, seed=seed)
            rep = evaluation.page_view(report_mod.region_report(result), OVERVIEW_ROWS, whole=("scores",))
            ev = result.evaluation
        low, low_units = review.low_use(ev, settings.low_use_threshold)
        return rep, [x.as_dict() for x in low], low_units

    def shown(kept_view: tuple[dict[str, Any], list[dict[str, Any]], Any]) -> dict[str, Any]:
        """What the page draws of the kept overview in this language (made once per language)."""
        view, low, low_units = kept_view
        rep = report_text.report(view, lang)
        # ranking by the rubric's score (the grade follows from it); verified utilization breaks ties
        scores = sorted(rep["tables"]["scores"]["rows"],
                        key=lambda r: (-float(r.get("score") or 0.0), -(r.get("utilization_verified") or 0.0),
                                       str(r["unit_id"])))
        grades: dict[str, int] = {}
        for r in scores:
            grades[str(r["grade"])] = grades.get(str(r["grade"]), 0) + 1
        units_chart = charts.hbars([charts.Bar(r["unit_name"], r.get("utilization_verified")) for r in scores],
                                   title=t(lang, "overview.chart_units"), percent=True,
                                   reference=settings.low_use_threshold, lang=lang)
        order = [report_text.text(lang, g) for g in ("优秀", "良好", "合格", "不合格")]
        order += sorted(g for g in grades if g not in order)
        grade_chart = charts.hbars([charts.Bar(g, float(grades.get(g, 0))) for g in order],
                                   title=t(lang, "overview.grades"), lang=lang)
        return {"rep": rep, "scores": scores, "units_chart": units_chart, "grade_chart": grade_chart, "low": low,
                "low_units": low_units}

    kept = results(request)
    page = kept.derived(db, ("overview", period_.label, sample, seed), overview, lang, shown,
                        kept.ttl_for(period_.end, clock.today()))
    with db.read() as conn:
        dup = ([c.as_dict() for c in review.duplicate_review(conn, period_, classification_code=code.strip(),
                                                             specs=specs, location=location)]
               if code.strip() else None)
    return render(request, "overview.html", p, period=period_, **page,
                  low_pct=round(settings.low_use_threshold * 100), dup=dup, code=code, specs=specs,
                  location=location, sample=sample, seed=period_.start.year if seed is None else seed)


# -- public catalog -------------------------------------------------------------------------------------


@router.get("/catalog", response_class=HTMLResponse)
def catalog_page(request: Request, who: MaybeWho, db: Db, settings: Settings,
                 q: Annotated[str, Query(max_length=100)] = "", unit: Annotated[str, Query(max_length=64)] = "",
                 classification: Annotated[str, Query(max_length=32)] = "",
                 location: Annotated[str, Query(max_length=100)] = "",
                 page: Annotated[int, Query(ge=1, le=10000)] = 1) -> Response:
    with db.read() as conn:
        found = catalog.search(conn, q=q or None, unit_id=unit or None, classification=classification or None,
                               location=location or None, limit=50, offset=(page - 1) * 50,
                               stale_s=settings.live_stale_s)
        units = rows(conn, "SELECT id, name FROM units ORDER BY id")
    return render(request, "catalog.html", who, found=found, units=units, q=q, unit=unit,
                  classification=classification, location=location, page=page)


@router.get("/catalog/{instrument_id}", response_class=HTMLResponse)
def catalog_item(instrument_id: str, request: Request, who: MaybeWho, db: Db, settings: Settings) -> Response:
    with db.read() as conn:
        item = catalog.detail(conn, instrument_id, settings.live_stale_s)
    if item is None:
        raise not_found("what.instrument", instrument_id)
    return render(request, "catalog_item.html", who, item=item)


# -- registry and audit -----------------------------------------------------------------------------------


@router.get("/registry", response_class=HTMLResponse)
def registry_page(request: Request, who: MaybeWho, db: Db,
                  unit: Annotated[str, Query(max_length=64)] = "") -> Response:
    p = need(who)
    unit_id = p.unit_id if p.role == "unit_manager" else (unit or None)
    with db.read() as conn:
        u = scope.unit(conn, p, unit_id) if unit_id else None
        units = rows(conn, "SELECT id, name FROM units WHERE %(s)s::text[] IS NULL OR id = ANY(%(s)s::text[])"
                           " ORDER BY id", {"s": p.unit_scope()})
        insts = rows(conn, "SELECT i.id, i.unit_id, i.name, i.location, i.original_value, i.category, i.is_open,"
                           " i.sharing_mode, i.registered_on FROM instruments i"
                           " WHERE (%(s)s::text[] IS NULL OR i.unit_id = ANY(%(s)s::text[]))"
                           " AND (%(u)s::text IS NULL OR i.unit_id = %(u)s) ORDER BY i.unit_id, i.id LIMIT 1000",
                     {"s": p.unit_scope(), "u": unit_id})
        agents = rows(conn, "SELECT a.id, a.instrument_id, a.revoked_at, k.key_id, k.revoked_at AS key_revoked_at"
                            " FROM agents a JOIN instruments i ON i.id = a.instrument_id"
                            " LEFT JOIN agent_keys k ON k.agent_id = a.id"
                            " WHERE (%(s)s::text[] IS NULL OR i.unit_id = ANY(%(s)s::text[]))"
                            " AND (%(u)s::text IS NULL OR i.unit_id = %(u)s) ORDER BY a.id, k.created_at",
                      {"s": p.unit_scope(), "u": unit_id})
        # affiliated organisations of the unit shown (their users count as internal); operators change them
        affiliations = (rows(conn, "SELECT o.id AS org_id, o.name, o.kind FROM unit_affiliations a"
                                   " JOIN organisations o ON o.id = a.org_id WHERE a.unit_id = %s ORDER BY o.id",
                             (u["id"],)) if u else None)
        orgs = (rows(conn, "SELECT id, name FROM organisations WHERE id <> %(o)s AND id NOT IN"
                           " (SELECT org_id FROM unit_affiliations WHERE unit_id = %(u)s) ORDER BY id",
                     {"o": u["org_id"], "u": u["id"]}) if u and p.role == "operator" else [])
    by_inst: dict[str, list[dict[str, Any]]] = {}
    for a in agents:
        by_inst.setdefault(a["instrument_id"], []).append(a)
    return render(request, "registry.html", p, unit=u, units=units, insts=insts, agents=by_inst,
                  affiliations=affiliations, orgs=orgs)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, who: MaybeWho, db: Db,
               table: Annotated[str, Query(max_length=64)] = "",
               before_id: Annotated[int | None, Query(ge=1)] = None) -> Response:
    p = need(who)
    auth.require_role(p, "operator")
    with db.read() as conn:
        entries = audit.entries(conn, table=table or None, limit=100, before_id=before_id)
    for e in entries:
        e["changes"] = audit.changed_fields(e["before"], e["after"])
    return render(request, "audit.html", p, entries=entries, table=table)
