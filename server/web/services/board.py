"""The live board: each instrument's state now, which organisation is at it, today's hours; and
the hub that tells open boards when something changed.

The source is the ingest's `live_state` (migration 002, server/ingest/live.py): ingest updates a row in
the transaction that stores the records and queues `NOTIFY jishi_live, '<row as JSON>'`, which
PostgreSQL delivers on commit. The web runs in its own processes, so each LISTENs; notifications are
coalesced into batches, each batch re-read (committed by then) joined with the registry in one
query, and every tile pushed to the streams of its unit (`LiveHub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from server import clock
from server.store.conn import Conn
from server.store.times import TZ
from server.web.db import rows

log = logging.getLogger(__name__)
CHANNEL = "jishi_live"

_TILE_COLUMNS = """
SELECT i.id, i.unit_id, i.name, i.location,
       EXISTS (SELECT 1 FROM agents a WHERE a.instrument_id = i.id AND a.revoked_at IS NULL) AS has_agent,
       l.agent_id, l.state, l.state_since, l.session_id, l.org_name, l.today, l.today_running_s,
       l.last_t, l.last_received_at, l.online,
       -- the live row keeps the session it last saw; a session derived as ended is nobody there
       EXISTS (SELECT 1 FROM user_sessions us WHERE us.agent_id = l.agent_id AND us.session_id = l.session_id
               AND us.end_at IS NOT NULL) AS session_ended
"""
_TILES = _TILE_COLUMNS + """
FROM instruments i LEFT JOIN live_state l ON l.instrument_id = i.id
WHERE {where}
ORDER BY i.id
"""
# One statement per kind of filter, not one with "IS NULL OR" branches: psycopg prepares a statement
# after a few uses and PostgreSQL then plans it once for any parameters; that generic plan of the
# branched form read all 5,000 instruments of a region for one tile (8.5 ms for a catalog page's 50
# tiles, 0.1 ms by the primary key).
_TILES_BY = {
    (False, False): _TILES.format(where="true"),
    (True, False): _TILES.format(where="i.unit_id = %(u)s"),
    (False, True): _TILES.format(where="i.id = ANY(%(ids)s::text[])"),
    (True, True): _TILES.format(where="i.unit_id = %(u)s AND i.id = ANY(%(ids)s::text[])"),
}


def _iso(d: datetime | None) -> str | None:
    return None if d is None else d.astimezone(TZ).isoformat()


def free_now(status: str) -> str:
    """The public catalog's answer: yes / no / off / unknown."""
    return {"idle": "yes", "running": "no", "fault": "no", "off": "off"}.get(status, "unknown")


def tile(r: dict[str, Any], now: datetime, stale: timedelta, with_user: bool = True) -> dict[str, Any]:
    """One instrument's tile; `status` is a state, or `offline` (agent silent or dead), or `no_agent`."""
    status: str
    since: datetime | None
    if r["state"] is None:
        status, since = ("unknown" if r["has_agent"] else "no_agent"), None
    elif not r["online"]:
        status, since = "offline", r["last_received_at"]
    elif r["last_received_at"] is not None and now - r["last_received_at"] > stale:
        status, since = "offline", r["last_received_at"]
    else:
        status, since = r["state"], r["state_since"]
    local = now.astimezone(TZ)
    today = local.date()
    seconds = float(r["today_running_s"] or 0.0) if r["today"] == today else 0.0
    if status == "running":
        # the stored hours reach the last record; the run goes on since (never before today's start)
        day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        counted_to = max(x for x in (r.get("last_t"), r["state_since"], day_start) if x is not None)
        seconds += max(0.0, (now - counted_to).total_seconds())
    user_org: str | None = None
    if (with_user and r["session_id"] is not None and not r.get("session_ended")
            and status not in ("offline", "no_agent")):
        user_org = r["org_name"] or ""  # "" : someone is there, identity not mapped yet
    return {
        "id": r["id"],
        "unit_id": r["unit_id"],
        "name": r["name"],
        "location": r["location"],
        "agent_id": r["agent_id"],
        "status": status,
        "since": _iso(since),
        "user_present": user_org is not None,
        "user_org": user_org,
        "today_hours": round(seconds / 3600, 2),
        "free": free_now(status),
        "alarm": status in ("offline", "fault"),  # drawn to stand out: someone has to go and look
    }


def tiles(conn: Conn, *, unit_id: str | None, ids: list[str] | None = None, stale_s: int = 900,
          with_user: bool = True, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or clock.now()
    found = rows(conn, _TILES_BY[unit_id is not None, ids is not None], {"u": unit_id, "ids": ids})
    return [tile(r, now, timedelta(seconds=stale_s), with_user) for r in found]


def year_utilization(conn: Conn, unit_id: str, now: datetime | None = None) -> dict[str, float | None]:
    """Each instrument's verified utilization this calendar year so far (rated hours count the
    days begun, as the evaluation does), for the board's low-use line."""
    from server.evaluation.indicators import compute
    from server.evaluation.period import Period

    now = now or clock.now()
    ev = compute(conn, Period.year(now.astimezone(TZ).year), [unit_id], now=now)
    return {f.id: f.utilization.verified for f in ev.unit_instruments(unit_id)}


def unit_of(payload: str) -> tuple[str, str | None] | None:
    """(instrument, unit) of a jishi_live notification (a live_state row as JSON); None if neither."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("instrument_id"), str):
        return None
    unit = doc.get("unit_id")
    return doc["instrument_id"], unit if isinstance(unit, str) else None


class Subscription:
    """One open stream: the tiles of its unit as they change. `overflow` says the stream fell so far
    behind that tiles were dropped; it then sends a full snapshot instead."""

    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.overflow = False


class LiveHub:
    """LISTENs on jishi_live and fans changed tiles out to the open streams of this process.

    Every web worker runs one, so a stream works from any worker. Notifications are coalesced: while
    one batch of changed instruments is being read, the next accumulates; each batch is ONE query,
    on the hub's own connection (not the pages' pool or threads), for the instruments whose unit
    has an open stream in this process, and each tile is built once and handed to
    every stream of its unit, so the cost does not grow with the number of open boards, and a
    burst of changes costs one round trip, not one per change and per board.
    """

    def __init__(self, dsn: str, *, stale_s: int = 900) -> None:
        self.dsn = dsn
        self.stale_s = stale_s
        self._reader: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._subs: dict[str, set[Subscription]] = {}
        self._pending: dict[str, str | None] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()

    def subscribe(self, unit_id: str) -> Subscription:
        sub = Subscription(unit_id)
        self._subs.setdefault(unit_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.unit_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.unit_id]

    def notified(self, instrument_id: str, unit_id: str | None) -> None:
        """A change of `instrument_id` (in `unit_id`, if the notification said): read at the next batch."""
        if unit_id is not None and unit_id not in self._subs:
            return  # nobody watches that unit here
        self._pending[instrument_id] = unit_id
        self._wake.set()

    def deliver(self, tiles: list[dict[str, Any]]) -> None:
        for t in tiles:
            for sub in list(self._subs.get(t["unit_id"], ())):
                try:
                    sub.queue.put_nowait(t)
                except asyncio.QueueFull:
                    sub.overflow = True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(), name="jishi-live-listen"),
                       loop.create_task(self._fan_out(), name="jishi-live-fan-out")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _read(self, ids: list[str]) -> list[dict[str, Any]]:
        """The tiles of `ids`, on the hub's own connection: never waiting for a page's thread or a
        connection of the pool, however busy the pages are."""
        if self._reader is None or self._reader.closed:
            self._reader = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, row_factory=dict_row)
        async with self._reader.cursor() as cur:
            await cur.execute(_TILES_BY[False, True].encode(), {"ids": ids})
            found = await cur.fetchall()
        now, stale = clock.now(), timedelta(seconds=self.stale_s)
        return [tile(r, now, stale) for r in found]

    async def _fan_out(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch, self._pending = self._pending, {}
                ids = sorted(i for i, u in batch.items() if u is None or u in self._subs)
                if not ids:
                    continue
                try:
                    found = await self._read(ids)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the next batch or the streams' periodic refresh catches up
                    log.warning("live fan-out could not read %d tiles: %s", len(ids), exc)
                    if self._reader is not None:
                        await self._reader.close()
                    self._reader = None
                    continue
                self.deliver(found)
        finally:
            if self._reader is not None:
                await self._reader.close()

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    async for n in conn.notifies():
                        got = unit_of(n.payload)
                        if got is None:
                            log.warning("ignoring %s notification without instrument_id: %.200s", CHANNEL, n.payload)
                        else:
                            self.notified(*got)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarted or went away: retry, never die
                self.listening.clear()
                log.warning("live listener lost its connection (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
