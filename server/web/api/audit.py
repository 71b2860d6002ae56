"""The audit log: who changed what, when, before and after (read-only by design). Operators read
all of it; evaluators the registry facts that make the figures (no table that names a person)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.web import audit
from server.web.auth import require_role
from server.web.deps import Db, Who

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", summary="Audit entries, newest first")
def list_audit(who: Who, db: Db,
               table: Annotated[str | None, Query(max_length=64, examples=["instruments"])] = None,
               key: Annotated[str | None, Query(max_length=200)] = None,
               actor: Annotated[str | None, Query(max_length=200)] = None,
               before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    require_role(who, "operator", "evaluator")
    tables = None if who.role == "operator" else audit.EVALUATOR_TABLES
    with db.read() as conn:
        return audit.entries(conn, table=table, key=key, actor=actor, limit=limit, before_id=before_id,
                             tables=tables)
