"""Computed evaluation views kept for a short while, so that 50 people opening the overview or a
unit report do not each evaluate the region or the unit again: per web worker in memory, and
shared by the workers in the database (migration 038, `web_results`), so that N workers do not
each compute the same view either.

A result is used again only while
- it is younger than `web.report_cache_s` (derived hours that ingest stores meanwhile show within
  that time; the board's live tiles are never cached), or `web.report_cache_past_s` for a period
  that has ended (only late arrivals from agents' spools change it), and
- nothing audited has changed since it was computed: every registry change, price, service record,
  expert score, proposal or period closing writes the audit log (migrations 020/021), so its newest
  id (other than logins) is a change stamp shared by all workers, read with one index lookup per
  request; a result is kept, in memory and in the table, with the stamp it was computed under
  and used only under that stamp.

One computation per key at a time, across workers: a request arriving while the same result is
being computed waits for it (in its worker: a lock; across workers: a PostgreSQL advisory lock on
the key) and takes the stored result instead of computing it again.

Who may see a result is checked by the page before it asks (the key names the unit); the cache
never decides access. Stored results are JSON (never pickle) and only those that come back from
JSON exactly as they were are shared; the others stay in their worker.

`derived()` keeps, beside a result, what a page makes of it per language (translated texts,
charts, the rendered tables), so a kept report is not rendered again for each request either.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, TypeVar

from server.store.conn import Conn
from server.web import timing
from server.web.db import Database
from server.web.services.evaluation import ShownRows

T = TypeVar("T")
D = TypeVar("D")

# Logins and logouts are audited too (web_sessions) but change no figure: they do not count.
_STAMP = "SELECT id FROM audit_log WHERE table_name <> 'web_sessions' ORDER BY id DESC LIMIT 1"

# the shared results (migration 038); on the primary only (an UNLOGGED table is not on a replica)
_SHARED_GET = """
SELECT value, extract(epoch FROM now() - computed_at)::float8 FROM web_results
WHERE key = %s AND stamp = %s AND computed_at > now() - make_interval(secs => %s)
"""
_SHARED_PUT = """
INSERT INTO web_results (key, stamp, computed_at, value) VALUES (%s, %s, now(), %s)
ON CONFLICT (key) DO UPDATE SET stamp = EXCLUDED.stamp, computed_at = EXCLUDED.computed_at, value = EXCLUDED.value
"""
# rows no worker may use any more (older than the longest reuse): the table stays as small as the
# set of views asked for recently
_SHARED_PRUNE = "DELETE FROM web_results WHERE computed_at < now() - make_interval(secs => %s)"
_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 38))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 38))"

_TUPLE, _SHOWN = "\x00tuple", "\x00shown"


def change_stamp(conn: Conn) -> int:
    """The newest audit log id of a change other than a login: moves with every audited change of
    the registry or the evaluation's inputs, in any process."""
    row = conn.execute(_STAMP).fetchone()
    return int(row[0]) if row is not None else 0


def _tagged(v: Any) -> Any:
    if isinstance(v, ShownRows):
        return {_SHOWN: v.shown, "n": v.total}
    if isinstance(v, tuple):
        return {_TUPLE: [_tagged(x) for x in v]}
    if isinstance(v, dict):
        return {k: _tagged(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_tagged(x) for x in v]
    return v


def _untag(d: dict[str, Any]) -> Any:
    if _SHOWN in d:
        return ShownRows(d[_SHOWN], d["n"])
    if _TUPLE in d:
        return tuple(d[_TUPLE])
    return d


def decode(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob), object_hook=_untag)


def encode(value: Any) -> bytes | None:
    """The result as compressed JSON, or None when JSON would not give it back exactly (a type
    JSON does not have, a dict key that is not text): such a result is not shared."""
    try:
        blob = zlib.compress(json.dumps(_tagged(value), ensure_ascii=False, separators=(",", ":")).encode(), 1)
    except (TypeError, ValueError):
        return None
    return blob if decode(blob) == value else None


class _Entry:
    __slots__ = ("derived", "stamp", "started", "value")

    def __init__(self, started: float, stamp: int, value: Any) -> None:
        self.started = started
        self.stamp = stamp
        self.value = value
        self.derived: dict[Hashable, Any] = {}


class Results:
    """The computed results of one worker (app.state.results), backed by the shared table."""

    def __init__(self, ttl_s: float, max_entries: int, past_ttl_s: float | None = None,
                 shared: bool = True, computing: int = 2) -> None:
        self.ttl_s = ttl_s
        self.past_ttl_s = ttl_s if past_ttl_s is None else past_ttl_s
        self.max_entries = max_entries
        self.shared = shared
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._busy: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self._computing = threading.BoundedSemaphore(max(1, computing))
        """evaluations computed at once in this worker: each holds a connection for seconds and
        contends for the GIL with every page of the worker; more at once than cores only starve the
        cheap pages (pool waits) without finishing the evaluations sooner"""
        self.computed = 0  # how many times this worker computed a result (tests, bench)
        self.from_shared = 0  # how many it took from the shared table

    def _fresh(self, key: Hashable, stamp: int, ttl: float) -> _Entry | None:
        with self._lock:
            got = self._entries.get(key)
            if got is not None and got.stamp == stamp and time.monotonic() - got.started < ttl:
                self._entries.move_to_end(key)
                return got
            return None

    def _keep(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            self._busy.pop(key, None)

    def get(self, db: Database, key: Hashable, compute: Callable[[Conn], T], ttl_s: float | None = None,
            *, light: bool = False) -> T:
        """The result for `key`, computed by `compute` (with a connection of its own) unless one
        younger than `ttl_s` (default: the cache's) is kept. No connection is held while waiting
        for another request of this worker computing it. `light`: a computation of milliseconds
        (the board's utilization), which does not queue behind reports for an evaluation slot."""
        return self._get(db, key, compute, ttl_s, light).value  # type: ignore[no-any-return]

    def derived(self, db: Database, key: Hashable, compute: Callable[[Conn], T], variant: Hashable,
                make: Callable[[T], D], ttl_s: float | None = None) -> D:
        """`make(result)` for the result of `key` (as `get`), kept with that result (and dropped
        with it) under `variant`, e.g. a page's language."""
        entry = self._get(db, key, compute, ttl_s)
        with self._lock:
            if variant in entry.derived:
                return entry.derived[variant]  # type: ignore[no-any-return]
        made = make(entry.value)
        with self._lock:
            entry.derived[variant] = made
        return made

    def _get(self, db: Database, key: Hashable, compute: Callable[[Conn], Any], ttl_s: float | None,
             light: bool = False) -> _Entry:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        if ttl <= 0 or self.max_entries <= 0:
            with db.read() as conn, timing.phase("eval"):
                return _Entry(time.monotonic(), 0, compute(conn))
        with db.read() as conn:
            stamp = change_stamp(conn)
        hit = self._fresh(key, stamp, ttl)
        if hit is not None:
            return hit
        with self._lock:
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:  # one computation per key in this worker; the others wait and take its result
            hit = self._fresh(key, stamp, ttl)
            if hit is not None:
                return hit
            entry = self._shared(db, key, stamp, ttl, compute, light) if self.shared else None
            if entry is None:
                with self._slot(light):
                    started = time.monotonic()
                    with db.read() as conn, timing.phase("eval"):
                        entry = _Entry(started, stamp, compute(conn))
                self.computed += 1
            self._keep(key, entry)
            return entry

    @contextmanager
    def _slot(self, light: bool = False) -> Iterator[None]:
        """One of this worker's evaluation slots (the time waited for it: `queue` in Server-Timing);
        none for a light computation."""
        if light:
            yield
            return
        asked = time.perf_counter()
        with self._computing:
            timing.add("queue", time.perf_counter() - asked)
            yield

    def _shared(self, db: Database, key: Hashable, stamp: int, ttl: float,
                compute: Callable[[Conn], Any], light: bool = False) -> _Entry | None:
        """The result from the shared table, or computed here (one worker at a time per key: the
        others wait on the key's advisory lock, then read what it stored); None: `key` cannot be
        named in the table (not JSON), so it is computed per worker."""
        try:
            name = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        if len(name) > 500:
            return None
        # the primary: the table is not on a replica
        with timing.phase("shared"), db.pool.connection() as conn:
            got = self._read_shared(conn, name, stamp, ttl)
        if got is not None:
            return got
        with self._slot(light), db.pool.connection() as conn:
            try:
                with timing.phase("shared"):
                    conn.execute(_LOCK, (name,))  # waits while another worker computes it
                    got = self._read_shared(conn, name, stamp, ttl)
                if got is not None:
                    return got
                started = time.monotonic()
                if db.replica_pool is None:
                    with timing.phase("eval"):
                        value = compute(conn)
                else:
                    with db.read() as rconn, timing.phase("eval"):
                        value = compute(rconn)
                self.computed += 1
                with timing.phase("shared"):
                    blob = encode(value)
                    if blob is not None:
                        conn.execute(_SHARED_PUT, (name, stamp, blob))
                        conn.execute(_SHARED_PRUNE, (max(self.ttl_s, self.past_ttl_s),))
                    conn.commit()
                return _Entry(started, stamp, value)
            finally:
                conn.rollback()  # nothing else is left open; the advisory lock is the session's
                conn.execute(_UNLOCK, (name,))
                conn.commit()

    def _read_shared(self, conn: Conn, name: str, stamp: int, ttl: float) -> _Entry | None:
        row = conn.execute(_SHARED_GET, (name, stamp, ttl)).fetchone()
        conn.commit()  # no transaction left open while computing or waiting
        if row is None:
            return None
        value = decode(row[0])
        self.from_shared += 1
        return _Entry(time.monotonic() - max(0.0, float(row[1])), stamp, value)

    def ttl_for(self, period_end: date, today: date) -> float:
        """How long a result over a period may be reused: longer once the period has ended."""
        return self.past_ttl_s if period_end <= today else self.ttl_s
