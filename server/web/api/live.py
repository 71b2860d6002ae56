"""Live state of a unit's instruments: a snapshot, and a server-sent event stream that pushes a
tile as soon as a change announced on `jishi_live` has been read (server/web/services/board.py,
`LiveHub`: one read per batch of changes for all the streams of a worker)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from server.config import WebSettings
from server.web import auth, scope
from server.web.db import Database
from server.web.deps import Db, Settings, Who
from server.web.errors import ApiError
from server.web.services import board

router = APIRouter(prefix="/api/v1", tags=["live"])


def snapshot(db: Database, settings: WebSettings, hub: board.LiveHub, unit_id: str,
             ids: list[str] | None = None) -> list[dict[str, Any]]:
    with db.read() as conn:
        return board.tiles(conn, unit_id=unit_id, ids=ids, stale_s=settings.live_stale_s)


@router.get("/units/{unit_id}/live", summary="Every instrument of the unit as a live tile")
def live(unit_id: str, request: Request, who: Who, db: Db, settings: Settings) -> dict[str, Any]:
    with db.read() as conn:
        u = scope.unit(conn, who, unit_id)
    return {"unit": {"id": u["id"], "name": u["name"]},
            "tiles": snapshot(db, settings, request.app.state.hub, unit_id)}


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def _still_allowed(db: Database, request: Request, unit_id: str) -> bool:
    try:
        with db.read() as conn:
            p = auth.resolve(conn, request)
    except ApiError:
        return False
    return p is not None and p.can_read_unit(unit_id)


def _scope(db: Database, who: auth.Principal, unit_id: str) -> None:
    with db.read() as conn:
        scope.unit(conn, who, unit_id)


@router.get("/units/{unit_id}/live/stream", summary="Server-sent events: `snapshot`, then `tile` on every change",
            response_class=StreamingResponse)
async def live_stream(unit_id: str, request: Request, who: Who, db: Db, settings: Settings) -> StreamingResponse:
    await run_in_threadpool(_scope, db, who, unit_id)  # never wait for a pool connection on the event loop
    hub: board.LiveHub = request.app.state.hub

    async def events() -> AsyncIterator[str]:
        sub = hub.subscribe(unit_id)  # before the snapshot: a change committed meanwhile is not lost
        try:
            tiles = await run_in_threadpool(snapshot, db, settings, hub, unit_id)
            yield "retry: 2000\n\n"
            yield _event("snapshot", tiles)
            last_full = time.monotonic()
            while True:
                try:
                    first = await asyncio.wait_for(sub.queue.get(), timeout=settings.sse_keepalive_s)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    if sub.overflow or time.monotonic() - last_full >= settings.live_refresh_s:
                        # Periodic full refresh: today's hours tick, silent agents turn offline, and
                        # a session that expired or lost its rights ends the stream.
                        if not await run_in_threadpool(_still_allowed, db, request, unit_id):
                            yield _event("expired", {})
                            return
                        sub.overflow = False
                        tiles = await run_in_threadpool(snapshot, db, settings, hub, unit_id)
                        last_full = time.monotonic()
                        yield _event("snapshot", tiles)
                    else:
                        yield ": keepalive\n\n"
                    continue
                # the hub built each tile once for every stream of the unit; send the newest of each
                latest = {first["id"]: first}
                while not sub.queue.empty():
                    t = sub.queue.get_nowait()
                    latest[t["id"]] = t
                yield "".join(_event("tile", t) for t in latest.values())
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
