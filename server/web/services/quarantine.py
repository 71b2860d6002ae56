"""Refused agent messages (the ingest's `quarantine`) as the API and the operator page show them.

One function, `listing`, over the named queries the CLI uses (`jishi-server quarantine`,
server/db/queries.py), so `GET /api/v1/quarantine`, the page `/quarantine` and the CLI show the
same rows. The query parameters are declared here once, so the API and the page validate alike.
Payload bytes are never read: only their original length.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from protocols.errors import Reason
from server.db.queries import quarantine_counts, recent_quarantine
from server.store.conn import Conn
from server.web.i18n import t_or

COLUMNS = ("id", "received_at", "topic", "kind", "agent_id", "reason", "field", "detail", "payload_len")

ReasonQuery = Annotated[str | None, Query(max_length=64, examples=["replay"],
                                          description="only this reason code (protocols/errors.py)")]
AgentQuery = Annotated[str | None, Query(max_length=200, description="only messages claiming this agent id")]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="newest rows to return")]
DEFAULT_LIMIT = 100

REASONS: tuple[str, ...] = tuple(r.value for r in Reason)


def listing(conn: Conn, *, reason: str | None = None, agent_id: str | None = None,
            limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """`{"by_reason": {code: n}, "items": [row, ...]}`: counts over the whole table (every reason,
    not only the filtered one), and the newest `limit` rows matching the filters."""
    counts = quarantine_counts(conn)
    found = recent_quarantine(conn, limit, reason, agent_id)
    return {"by_reason": {k: counts[k] for k in sorted(counts)},
            "items": [dict(zip(COLUMNS, r, strict=True)) for r in found]}


def reason_label(lang: str, code: str) -> str:
    """The reason's name in `lang`; an unknown code shows as itself."""
    return t_or(lang, f"quarantine.reason.{code}", code)
