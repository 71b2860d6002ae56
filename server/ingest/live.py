"""Latest state per instrument, pushed to whoever follows it.

Ingest updates `live_state` inside the transaction that stores the records, and the same
statement queues `NOTIFY jishi_live, '<row as JSON>'`, which PostgreSQL delivers exactly when the
transaction commits: a web process in another process (or host) follows with `follow()` and can
never see a state that was rolled back. Inside the ingest process, `LiveHub` hands the same rows
to in-process subscribers after commit. New subscribers start from `snapshot()`.

A row: instrument_id, unit_id, agent_id, state, state_since, session_id, identifier (as the
agent saw the user), org_name (when the identifier maps to a platform user), today (the local
date), today_running_s (verified running seconds today, from usage_segments), last_seq, last_t,
last_received_at, online (false after the agent's death message), updated_at.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg

from protocols.derive import Carry
from server.db import queries
from server.store.conn import Conn
from server.store.times import ms_to_dt

CHANNEL = "jishi_live"
LiveRow = dict[str, Any]


def day_bounds(now: datetime, tz: str) -> tuple[date, datetime, datetime]:
    """The local date of `now` in `tz` and its [start, end) instants."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    start = datetime(local.year, local.month, local.day, tzinfo=zone)
    return local.date(), start, start + timedelta(days=1)


def rows_after_derivation(
    conn: Conn, items: Sequence[tuple[str, str, str, Carry, datetime | None]], now: datetime, tz: str
) -> list[LiveRow]:
    """Live rows for (instrument_id, unit_id, agent_id, carry, last_received_at) after derivation."""
    if not items:
        return []
    today, start, end = day_bounds(now, tz)
    running = queries.running_s_by_instrument(conn, start, end, [i[0] for i in items])
    keys = [(i[1], i[3].session.method, i[3].session.identifier) for i in items if i[3].session is not None]
    orgs = queries.org_names(conn, keys)
    rows = []
    for instrument_id, unit_id, agent_id, carry, received in items:
        s = carry.session
        rows.append({
            "instrument_id": instrument_id, "unit_id": unit_id, "agent_id": agent_id, "state": carry.state,
            "state_since": ms_to_dt(carry.state_since), "session_id": s.session_id if s else None,
            "identifier": s.identifier if s else None,
            "org_name": orgs.get((unit_id, s.method, s.identifier)) if s else None,
            "today": today, "today_running_s": running.get(instrument_id, 0.0), "last_seq": carry.last_seq,
            "last_t": ms_to_dt(carry.last_t), "last_received_at": received, "online": True,
        })
    return queries.upsert_live(conn, rows, CHANNEL)


def set_online(
    conn: Conn, items: Sequence[tuple[str, str, str, bool, datetime]], now: datetime, tz: str
) -> list[LiveRow]:
    """Mark instruments' agents online (birth) or offline (death)."""
    return queries.set_live_online(conn, items, day_bounds(now, tz)[0], CHANNEL)


def snapshot(conn: Conn, instrument_ids: Sequence[str] | None = None) -> list[LiveRow]:
    return queries.live_snapshot(conn, instrument_ids)


class LiveHub:
    """In-process pub/sub of live rows; each subscriber gets its own bounded queue.

    A subscriber that does not keep up loses its oldest rows rather than slowing ingest down
    (it can always re-read `snapshot()`).
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self._subs: list[queue.Queue[LiveRow]] = []
        self._lock = threading.Lock()
        self._maxsize = maxsize

    def subscribe(self) -> queue.Queue[LiveRow]:
        q: queue.Queue[LiveRow] = queue.Queue(self._maxsize)
        with self._lock:
            self._subs.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[LiveRow]) -> None:
        with self._lock:
            if q in self._subs:
                self._subs.remove(q)

    def publish(self, rows: Sequence[LiveRow]) -> None:
        with self._lock:
            subs = list(self._subs)
        for q in subs:
            for row in rows:
                while True:
                    try:
                        q.put_nowait(row)
                        break
                    except queue.Full:
                        try:
                            q.get_nowait()
                        except queue.Empty:
                            pass


def follow(dsn: str, *, timeout: float | None = None, stop: threading.Event | None = None,
           listening: threading.Event | None = None) -> Iterator[LiveRow]:
    """Yield the current rows, then every row committed from now on (LISTEN jishi_live).

    LISTEN starts before the snapshot is read, so nothing committed in between is missed (a row
    may come twice; the later one is current). Ends after `timeout` seconds without a row, or
    when `stop` is set. `listening` is set once LISTEN is in place.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        if listening is not None:
            listening.set()
        yield from snapshot(conn)
        last = time.monotonic()
        while stop is None or not stop.is_set():
            for note in conn.notifies(timeout=0.2):
                last = time.monotonic()
                yield orjson.loads(note.payload)
            if timeout is not None and time.monotonic() - last > timeout:
                return
