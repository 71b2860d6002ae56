"""Computed evaluation views kept for a short while, per web worker, so that 50 people opening the
overview or a unit report do not each evaluate the region or the unit again.

A result is used again only while
- it is younger than `web.report_cache_s` (derived hours that ingest stores meanwhile show within
  that time; the board's live tiles are never cached), or `web.report_cache_past_s` for a period
  that has ended (only late arrivals from agents' spools change it), and
- nothing audited has changed since it was computed: every registry change, price, service record,
  expert score, proposal or period closing writes the audit log (migrations 020/021), so its newest
  id (other than logins) is a change stamp shared by all workers, read with one index lookup per
  request.

The cache is bounded (`web.report_cache_entries`, least recently used out first) and computes each
key once at a time: a request arriving while the same result is being computed waits for it
instead of computing it again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import date
from typing import Any, TypeVar

from server.store.conn import Conn
from server.web.db import Database

T = TypeVar("T")


# Logins and logouts are audited too (web_sessions) but change no figure: they do not count.
_STAMP = "SELECT id FROM audit_log WHERE table_name <> 'web_sessions' ORDER BY id DESC LIMIT 1"


def change_stamp(conn: Conn) -> int:
    """The newest audit log id of a change other than a login: moves with every audited change of
    the registry or the evaluation's inputs, in any process."""
    row = conn.execute(_STAMP).fetchone()
    return int(row[0]) if row is not None else 0


class Results:
    """The computed results of one worker (app.state.results)."""

    def __init__(self, ttl_s: float, max_entries: int, past_ttl_s: float | None = None) -> None:
        self.ttl_s = ttl_s
        self.past_ttl_s = ttl_s if past_ttl_s is None else past_ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self._busy: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.computed = 0  # how many times a result was computed (tests, bench)

    def _fresh(self, key: Hashable, stamp: int, ttl: float) -> tuple[bool, Any]:
        with self._lock:
            got = self._entries.get(key)
            if got is not None and got[1] == stamp and time.monotonic() - got[0] < ttl:
                self._entries.move_to_end(key)
                return True, got[2]
            return False, None

    def get(self, db: Database, key: Hashable, compute: Callable[[Conn], T], ttl_s: float | None = None) -> T:
        """The result for `key`, computed by `compute` (with a connection of its own) unless one
        younger than `ttl_s` (default: the cache's) is kept. No connection is held while waiting
        for another request's computation."""
        ttl = self.ttl_s if ttl_s is None else ttl_s
        if ttl <= 0 or self.max_entries <= 0:
            with db.read() as conn:
                return compute(conn)
        with db.read() as conn:
            stamp = change_stamp(conn)
        hit, value = self._fresh(key, stamp, ttl)
        if hit:
            return value  # type: ignore[no-any-return]
        with self._lock:
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:  # one computation per key; the others wait and take its result
            hit, value = self._fresh(key, stamp, ttl)
            if hit:
                return value  # type: ignore[no-any-return]
            started = time.monotonic()
            with db.read() as conn:
                result = compute(conn)
            with self._lock:
                self.computed += 1
                self._entries[key] = (started, stamp, result)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                self._busy.pop(key, None)
            return result

    def ttl_for(self, period_end: date, today: date) -> float:
        """How long a result over a period may be reused: longer once the period has ended."""
        return self.past_ttl_s if period_end <= today else self.ttl_s
