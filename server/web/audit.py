"""Reading the audit log (written only by the database triggers of migration 020)."""

from __future__ import annotations

from typing import Any

from server.store.conn import Conn
from server.web.db import rows

# What evaluators may read of the log: the registry facts that make the figures, none of which
# names a person (people, identities, service records and accounts stay with the operator, art. 17).
EVALUATOR_TABLES = ("units", "unit_affiliations", "instruments", "instrument_exemptions", "price_list",
                    "service_cases", "agents", "agent_keys", "manual_usage", "unit_sanctions", "expert_scores")


def entries(conn: Conn, *, table: str | None = None, key: str | None = None, actor: str | None = None,
            limit: int = 100, before_id: int | None = None,
            tables: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Newest first; `tables`: only these tables (None: all)."""
    return rows(
        conn,
        "SELECT id, at, actor, action, table_name, row_key, before, after FROM audit_log"
        " WHERE (%(t)s::text IS NULL OR table_name = %(t)s) AND (%(k)s::text IS NULL OR row_key = %(k)s)"
        " AND (%(ts)s::text[] IS NULL OR table_name = ANY(%(ts)s::text[]))"
        " AND (%(a)s::text IS NULL OR actor = %(a)s) AND (%(b)s::bigint IS NULL OR id < %(b)s)"
        " ORDER BY id DESC LIMIT %(l)s",
        {"t": table, "k": key, "a": actor, "b": before_id, "l": limit, "ts": list(tables) if tables else None},
    )


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """Only what changed, for people reading the log."""
    b, a = before or {}, after or {}
    return {k: (b.get(k), a.get(k)) for k in sorted(set(b) | set(a)) if b.get(k) != a.get(k)}
