"""Public catalog API: no login, no user identity."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.web.deps import Db, Settings
from server.web.errors import not_found
from server.web.services import catalog

router = APIRouter(prefix="/api/v1/public", tags=["public catalog"])


@router.get("/instruments", summary="Search the published instruments (no login)")
def search(db: Db, settings: Settings,
           q: Annotated[str | None, Query(max_length=100, examples=["衍射"])] = None,
           unit_id: Annotated[str | None, Query(max_length=64)] = None,
           classification: Annotated[str | None, Query(max_length=32)] = None,
           location: Annotated[str | None, Query(max_length=100)] = None,
           limit: Annotated[int, Query(ge=1, le=200)] = 50,
           offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> dict[str, Any]:
    with db.read() as conn:
        return catalog.search(conn, q=q, unit_id=unit_id, classification=classification, location=location,
                              limit=limit, offset=offset, stale_s=settings.live_stale_s)


@router.get("/instruments/{instrument_id}", summary="A published instrument with price list and free-now state")
def detail(instrument_id: str, db: Db, settings: Settings) -> dict[str, Any]:
    with db.read() as conn:
        r = catalog.detail(conn, instrument_id, settings.live_stale_s)
    if r is None:
        raise not_found("what.instrument", instrument_id)
    return r
