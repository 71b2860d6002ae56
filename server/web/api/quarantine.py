"""Refused agent messages (the ingest's `quarantine`), for operators: what was refused, from whom
(the agent id the message claimed), on which topic, and why (the reason code of protocols/errors.py
with its detail). The same rows as `jishi-server quarantine` and the page `/quarantine` (all three
through server/web/services/quarantine.py's `listing`); payloads are not served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.web.auth import require_role
from server.web.deps import Db, Who
from server.web.services.quarantine import DEFAULT_LIMIT, AgentQuery, LimitQuery, ReasonQuery, listing

router = APIRouter(prefix="/api/v1", tags=["agents"])


@router.get("/quarantine", summary="Refused agent messages with their reason, newest first (operator)")
def list_quarantine(who: Who, db: Db, reason: ReasonQuery = None, agent_id: AgentQuery = None,
                    limit: LimitQuery = DEFAULT_LIMIT) -> dict[str, Any]:
    require_role(who, "operator")
    with db.read() as conn:
        return listing(conn, reason=reason, agent_id=agent_id, limit=limit)
