"""Operator pages of the platform's own running: refused agent messages (`/quarantine`), and the
database's replication (the read replica's lag, with a warning above `web.replica_lag_warn_s`).

Same data and query validation as `GET /api/v1/quarantine` (server/web/services/quarantine.py). Operators
only: other roles get the error page, anonymous visitors the login redirect.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from server.web import auth
from server.web.deps import Db, MaybeWho, Settings
from server.web.i18n import request_lang
from server.web.services import quarantine
from server.web.templating import need, render

router = APIRouter(include_in_schema=False)


@router.get("/quarantine", response_class=HTMLResponse)
def quarantine_page(request: Request, who: MaybeWho, db: Db, settings: Settings, reason: quarantine.ReasonQuery = None,
                    agent_id: quarantine.AgentQuery = None,
                    limit: quarantine.LimitQuery = quarantine.DEFAULT_LIMIT) -> Response:
    p = need(who)
    auth.require_role(p, "operator")
    lang = request_lang(request)
    with db.read() as conn:
        found = quarantine.listing(conn, reason=reason or None, agent_id=agent_id or None, limit=limit)
    # Chinese pages show each reason's English name beside it (the operator may ask the vendor)
    counts = [(code, quarantine.reason_label(lang, code), n) for code, n in found["by_reason"].items()]
    english = {code: quarantine.reason_label("en", code) for code in found["by_reason"]} if lang != "en" else {}
    codes = list(quarantine.REASONS) + sorted(set(found["by_reason"]) - set(quarantine.REASONS))
    options = [(code, quarantine.reason_label(lang, code)) for code in codes]
    items = [{**r, "reason_label": quarantine.reason_label(lang, r["reason"]),
              "reason_en": quarantine.reason_label("en", r["reason"]) if lang != "en" else ""} for r in found["items"]]
    query = {k: v for k, v in (("reason", reason), ("agent_id", agent_id)) if v} | {"limit": str(limit)}
    repl = db.replication()
    lag_warn = repl.lag_s is not None and repl.lag_s > settings.replica_lag_warn_s
    return render(request, "quarantine.html", p, repl=repl, lag_warn=lag_warn, lag_limit=settings.replica_lag_warn_s,
                  counts=counts, english=english, total=sum(n for *_, n in counts),
                  items=items, options=options, reason=reason or "", agent_id=agent_id or "", limit=limit,
                  api="/api/v1/quarantine?" + urlencode(query))
