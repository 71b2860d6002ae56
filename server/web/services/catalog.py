"""The public catalog (art. 13 asks units to publish their instruments): search and details with
the price list and whether the instrument is free right now. No login, and never a user identity:
the live state is read without the session columns."""

from __future__ import annotations

from typing import Any

from server import clock
from server.registry.urls import is_http_url
from server.store.conn import Conn
from server.web.db import one, rows
from server.web.services import board

# Published: open, shared with outsiders or at least inside, and not retired.
_PUBLISHED = "i.is_open AND i.sharing_mode <> '不共享' AND (i.retired_on IS NULL OR i.retired_on > %(today)s)"

_COLS = """i.id, i.name, i.name_en, i.unit_id, u.name AS unit_name, i.location, i.classification_code, i.model,
           i.manufacturer, i.country, i.specs, i.main_functions, i.service_content, i.fee_standard, i.booking_url,
           i.contact_name, i.contact_phone, i.contact_email, i.category, i.sharing_mode"""


def search(conn: Conn, *, q: str | None, unit_id: str | None, classification: str | None, location: str | None,
           limit: int, offset: int, stale_s: int) -> dict[str, Any]:
    params = {"q": q or None, "u": unit_id or None, "c": classification or None, "l": location or None,
              "lim": limit, "off": offset, "today": clock.today()}
    where = (f" WHERE {_PUBLISHED}"
             " AND (%(q)s::text IS NULL OR i.name ILIKE '%%' || %(q)s || '%%' OR i.name_en ILIKE '%%' || %(q)s || '%%'"
             "      OR i.model ILIKE '%%' || %(q)s || '%%' OR i.main_functions ILIKE '%%' || %(q)s || '%%')"
             " AND (%(u)s::text IS NULL OR i.unit_id = %(u)s)"
             " AND (%(c)s::text IS NULL OR i.classification_code LIKE %(c)s || '%%')"
             " AND (%(l)s::text IS NULL OR i.location ILIKE '%%' || %(l)s || '%%')")
    total = one(conn, "SELECT count(*) AS n FROM instruments i" + where, params)
    found = rows(conn, f"SELECT {_COLS} FROM instruments i JOIN units u ON u.id = i.unit_id" + where
                 + " ORDER BY i.unit_id, i.id LIMIT %(lim)s OFFSET %(off)s", params)
    states = {t["id"]: t for t in board.tiles(conn, unit_id=None, ids=[r["id"] for r in found], stale_s=stale_s,
                                              with_user=False)}
    for r in found:
        r["free"] = states[r["id"]]["free"] if r["id"] in states else "unknown"
        _safe_links(r)
    return {"total": total["n"] if total else 0, "items": found}


def detail(conn: Conn, instrument_id: str, stale_s: int) -> dict[str, Any] | None:
    r = one(conn, f"SELECT {_COLS} FROM instruments i JOIN units u ON u.id = i.unit_id"
                  f" WHERE i.id = %(i)s AND {_PUBLISHED}", {"i": instrument_id, "today": clock.today()})
    if r is None:
        return None
    r["prices"] = rows(conn, "SELECT item, basis, internal_price, external_price, valid_from, valid_to, note"
                             " FROM price_list WHERE instrument_id = %(i)s AND valid_from <= %(today)s"
                             " AND (valid_to IS NULL OR valid_to >= %(today)s) ORDER BY item",
                       {"i": instrument_id, "today": clock.today()})
    t = board.tiles(conn, unit_id=None, ids=[instrument_id], stale_s=stale_s, with_user=False)
    r["free"] = t[0]["free"] if t else "unknown"
    _safe_links(r)
    return r


def _safe_links(r: dict[str, Any]) -> None:
    """A booking URL that is not http(s) (stored before the rule of issue 13) is never published."""
    if not is_http_url(r.get("booking_url")):
        r["booking_url"] = ""
