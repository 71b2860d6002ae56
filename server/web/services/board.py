"""The live board: each instrument's state now, which organisation is at it, today's hours; and
the hub that tells open boards when something changed.

The source is the ingest's `live_state` (migration 002, server/ingest/live.py): ingest updates a row in
the transaction that stores the records and queues `NOTIFY jishi_live, '<row as JSON>'`, which
PostgreSQL delivers on commit. The web runs in its own process, so it LISTENs; on a notification
it re-reads that instrument's row (committed by then) joined with the registry, and pushes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg

from server import clock
from server.store.conn import Conn
from server.store.times import TZ
from server.web.db import rows

log = logging.getLogger(__name__)
CHANNEL = "jishi_live"

_TILES = """
SELECT i.id, i.unit_id, i.name, i.location,
       EXISTS (SELECT 1 FROM agents a WHERE a.instrument_id = i.id AND a.revoked_at IS NULL) AS has_agent,
       l.agent_id, l.state, l.state_since, l.session_id, l.org_name, l.today, l.today_running_s,
       l.last_t, l.last_received_at, l.online,
       -- the live row keeps the session it last saw; a session derived as ended is nobody there
       EXISTS (SELECT 1 FROM user_sessions us WHERE us.agent_id = l.agent_id AND us.session_id = l.session_id
               AND us.end_at IS NOT NULL) AS session_ended
FROM instruments i LEFT JOIN live_state l ON l.instrument_id = i.id
WHERE (%(u)s::text IS NULL OR i.unit_id = %(u)s) AND (%(ids)s::text[] IS NULL OR i.id = ANY(%(ids)s::text[]))
ORDER BY i.id
"""


def instrument_of(payload: str) -> str | None:
    """The instrument a jishi_live notification concerns (a live_state row as JSON)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    iid = doc.get("instrument_id") if isinstance(doc, dict) else None
    return iid if isinstance(iid, str) else None


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
    found = rows(conn, _TILES, {"u": unit_id, "ids": ids})
    return [tile(r, now, timedelta(seconds=stale_s), with_user) for r in found]


def year_utilization(conn: Conn, unit_id: str, now: datetime | None = None) -> dict[str, float | None]:
    """Each instrument's verified utilization this calendar year so far (rated hours count the
    days begun, as the evaluation does), for the board's low-use line."""
    from server.evaluation.indicators import compute
    from server.evaluation.period import Period

    now = now or clock.now()
    ev = compute(conn, Period.year(now.astimezone(TZ).year), [unit_id], now=now)
    return {f.id: f.utilization.verified for f in ev.unit_instruments(unit_id)}


class LiveHub:
    """LISTENs on jishi_live and fans instrument ids out to the open boards (asyncio queues)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._subs: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def subscribe(self) -> asyncio.Queue[str]:
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[str]) -> None:
        self._subs.discard(q)

    def publish(self, instrument_id: str) -> None:
        for q in list(self._subs):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(instrument_id)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="jishi-live-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    async for n in conn.notifies():
                        iid = instrument_of(n.payload)
                        if iid is None:
                            log.warning("ignoring %s notification without instrument_id: %.200s", CHANNEL, n.payload)
                        else:
                            self.publish(iid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarted or went away: retry, never die
                self.listening.clear()
                log.warning("live listener lost its connection (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
