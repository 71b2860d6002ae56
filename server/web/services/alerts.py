"""Alerts as the API and the alerts page both show them: each with its rule's label, its message in
the reader's language and its delivery attempts."""

from __future__ import annotations

from typing import Any

from server.alerts import engine, queries
from server.store.conn import Conn


def alert_view(lang: str, a: dict[str, Any], deliveries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {**a, "rule_label": engine.rule_label(lang, a["rule"]),
           "message": engine.alert_text(lang, a["rule"], a["params"])}
    if deliveries is not None:
        out["deliveries"] = [d for d in deliveries if a["id"] in d["alert_ids"]]
    return out


def listing(conn: Conn, lang: str, units: list[str] | None, state: str | None, limit: int) -> dict[str, Any]:
    """Alerts with their deliveries: the same data for the API and the page."""
    found = queries.list_alerts(conn, units, state=state, limit=limit)
    deliveries = queries.deliveries_of(conn, [a["id"] for a in found]) if found else []
    return {"items": [alert_view(lang, a, deliveries) for a in found]}
