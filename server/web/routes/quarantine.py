"""Refused agent messages (the ingest's `quarantine`), for operators: what was refused, from whom
(the agent id the message claimed), on which topic, and why (the reason code of protocols/errors.py
with its detail). The same rows as `jishi-server quarantine`; payloads are not served."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.web.auth import require_role
from server.web.db import rows
from server.web.deps import Db, Who

router = APIRouter(prefix="/api/v1", tags=["agents"])


@router.get("/quarantine", summary="Refused agent messages with their reason, newest first (operator)")
def list_quarantine(who: Who, db: Db,
                    reason: Annotated[str | None, Query(max_length=64, examples=["replay"])] = None,
                    agent_id: Annotated[str | None, Query(max_length=200)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    require_role(who, "operator")
    with db.read() as conn:
        counts = rows(conn, "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY reason")
        found = rows(conn, "SELECT id, received_at, topic, kind, agent_id, reason, field, detail, payload_len"
                           " FROM quarantine WHERE (%(r)s::text IS NULL OR reason = %(r)s)"
                           " AND (%(a)s::text IS NULL OR agent_id = %(a)s) ORDER BY id DESC LIMIT %(l)s",
                     {"r": reason, "a": agent_id, "l": limit})
    return {"by_reason": {c["reason"]: c["n"] for c in counts}, "items": found}
