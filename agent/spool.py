"""The durable queue: every record is written here, with its seq and hash, before any publish.

SQLite in WAL mode with `synchronous=FULL`: a commit is on disk when `append` returns. The
sequence number and the previous hash are read, the record built, hashed and inserted, and the
counters advanced in ONE transaction, so a crash (kill -9, power loss) can never leave a hole
nor reuse a seq. Rows are trimmed only at or below the server's acknowledgement; the size and
age limits drop `sample` records first, then `heartbeat` records, never state, session,
lifecycle or overflow records, and write a `spool_overflow` record naming exactly what went.

One `Spool` object per thread (sqlite3 connections are not shared across threads).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.canonical import canonical
from protocols.chain import GENESIS

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records(
  seq INTEGER PRIMARY KEY, type TEXT NOT NULL, t INTEGER NOT NULL, body BLOB NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_type ON records(type, seq);
CREATE TABLE IF NOT EXISTS sessions(
  source TEXT PRIMARY KEY, session TEXT NOT NULL, method TEXT NOT NULL, user TEXT NOT NULL, started INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outputs(t INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""
DROPPABLE = ("sample", "heartbeat")  # in this order; everything else is kept whatever the limit
MAX_RANGES_PER_RECORD = 256

Builder = Callable[[int, str], dict[str, Any]]
"""Builds a record given its seq and the previous record's hash."""


class SpoolError(RuntimeError):
    pass


@dataclass(frozen=True)
class Stats:
    boot: int
    next_seq: int
    first_seq: int  # lowest seq still held; == next_seq when empty
    acked: int
    count: int  # exact only from stats(exact=True), else next_seq - first_seq
    bytes: int  # -1 unless stats(exact=True)
    last_hash: str


@dataclass(frozen=True)
class Row:
    seq: int
    type: str
    body: bytes
    hash: str


class Spool:
    def __init__(self, path: Path, agent: str, readonly: bool = False) -> None:
        self.path = path
        self.agent = agent
        if readonly:
            uri = path.resolve().as_uri() + "?mode=ro"  # file:///C:/... on Windows
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=True)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA cache_size=-512")
            with self.tx():
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                owner = self._meta("agent")
                if owner is None:
                    for key, value in (("agent", agent), ("boot", 0), ("next_seq", 1), ("last_hash", GENESIS),
                                       ("acked", 0), ("created", int(time.time() * 1000))):
                        self._set(key, value)
                elif owner != agent:
                    raise SpoolError(f"spool {path} belongs to agent {owner!r}, not {agent!r}: "
                                     "use another data_dir or the original agent id")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock at once, so reads inside are current."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set(self, key: str, value: Any) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value))

    def meta(self, key: str, default: Any = None) -> Any:
        value = self._meta(key)
        return default if value is None else value

    def set_meta(self, key: str, value: Any) -> None:
        with self.tx():
            self._set(key, value)

    # ---- writing records ----------------------------------------------------------------------

    def start_boot(self) -> int:
        """Increment and return the boot counter (once per agent start)."""
        with self.tx():
            boot = int(self._meta("boot")) + 1
            self._set("boot", boot)
        return boot

    def append(self, build: Builder) -> Row:
        """Assign the next seq and prev hash, build, hash and store a record: all or nothing."""
        with self.tx():
            return self._append(build)

    def _append(self, build: Builder) -> Row:
        seq = int(self._meta("next_seq"))
        prev = str(self._meta("last_hash"))
        record = build(seq, prev)
        if record.get("seq") != seq or record.get("prev") != prev:
            raise SpoolError("builder must use the seq and prev it is given")
        body = canonical(record)
        digest = hashlib.sha256(body).hexdigest()
        self.db.execute("INSERT INTO records(seq, type, t, body, hash) VALUES(?, ?, ?, ?, ?)",
                        (seq, record["type"], record["t"], body, digest))
        self._set("next_seq", seq + 1)
        self._set("last_hash", digest)
        return Row(seq, str(record["type"]), body, digest)

    # ---- reading ------------------------------------------------------------------------------

    def stats(self, exact: bool = False) -> Stats:
        """Counters of the spool. Cheap by default (index lookups only: called often, also with a
        large backlog); `exact` also counts rows and bytes, which reads the whole table."""
        first = self.db.execute("SELECT min(seq) FROM records").fetchone()[0]
        next_seq = int(self.meta("next_seq", 1))
        first_seq = int(first) if first is not None else next_seq
        if exact:
            count, size = self.db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM records").fetchone()
        else:
            count, size = next_seq - first_seq, -1  # an upper bound: holes left by the limit are counted
        return Stats(boot=int(self.meta("boot", 0)), next_seq=next_seq, first_seq=first_seq,
                     acked=int(self.meta("acked", 0)), count=int(count), bytes=int(size),
                     last_hash=str(self.meta("last_hash", GENESIS)))

    def read(self, first: int, max_records: int, max_bytes: int, last: int | None = None) -> list[Row]:
        """Records from `first` on, contiguous in seq (stops at a hole), within both limits."""
        rows: list[Row] = []
        size = 0
        expect = first
        upper = last if last is not None else 2**62
        cur = self.db.execute("SELECT seq, type, body, hash FROM records WHERE seq >= ? AND seq <= ? "
                              "ORDER BY seq LIMIT ?", (first, upper, max_records))
        for seq, typ, body, digest in cur:
            if rows and seq != expect:
                break
            if rows and size + len(body) > max_bytes:
                break
            rows.append(Row(seq, typ, body, digest))
            size += len(body)
            expect = seq + 1
        cur.close()
        return rows

    def next_held(self, seq: int) -> int | None:
        row = self.db.execute("SELECT min(seq) FROM records WHERE seq >= ?", (seq,)).fetchone()
        return None if row[0] is None else int(row[0])

    # ---- acknowledgement and limits -------------------------------------------------------------

    def ack(self, acked: int) -> int:
        """Server says every seq <= acked is durable: trim them. Returns rows deleted."""
        with self.tx():
            next_seq = int(self._meta("next_seq"))
            if acked >= next_seq:
                raise SpoolError(f"ack {acked} is beyond the last record {next_seq - 1}")
            old = int(self._meta("acked"))
            if acked > old:
                self._set("acked", acked)
            cur = self.db.execute("DELETE FROM records WHERE seq <= ?", (acked,))
            return cur.rowcount

    def enforce_limits(self, max_bytes: int, max_age_ms: int, now_ms: int, overflow: Callable[
            [int, str, list[dict[str, Any]]], dict[str, Any]]) -> list[tuple[int, int]]:
        """Drop the oldest droppable records while over size or age; record what was dropped.

        `overflow(seq, prev, dropped_ranges)` builds the `spool_overflow` record. Returns the dropped
        (first, last) ranges. Size is brought down to 90 % of the limit so this does not run on
        every check once the limit is reached.
        """
        with self.tx():
            size = int(self.db.execute("SELECT coalesce(sum(length(body)), 0) FROM records").fetchone()[0])
            cutoff = now_ms - max_age_ms
            target = max_bytes * 9 // 10 if size > max_bytes else size
            drop: list[tuple[int, str]] = []
            for typ in DROPPABLE:
                cur = self.db.execute("SELECT seq, hash, length(body), t FROM records WHERE type=? ORDER BY seq",
                                      (typ,))
                for seq, digest, length, t in cur:
                    if not (size > target or t < cutoff):
                        break
                    drop.append((seq, digest))
                    size -= length
                cur.close()
            if not drop:
                return []
            drop.sort()
            ranges: list[dict[str, Any]] = []
            for seq, digest in drop:
                if ranges and ranges[-1]["last"] == seq - 1:
                    ranges[-1]["last"] = seq
                    ranges[-1]["last_hash"] = digest
                else:
                    ranges.append({"first": seq, "last": seq, "last_hash": digest})
            self.db.executemany("DELETE FROM records WHERE seq=?", [(s,) for s, _ in drop])
            for i in range(0, len(ranges), MAX_RANGES_PER_RECORD):
                chunk = ranges[i:i + MAX_RANGES_PER_RECORD]

                def build(seq: int, prev: str, chunk: list[dict[str, Any]] = chunk) -> dict[str, Any]:
                    return overflow(seq, prev, chunk)

                self._append(build)
            return [(r["first"], r["last"]) for r in ranges]

    # ---- identity sessions and outputs (local state, not records) --------------------------------

    def open_sessions(self) -> dict[str, tuple[str, str, str, int]]:
        """source -> (session id, method, user, started ms) of sessions open at the last stop."""
        cur = self.db.execute("SELECT source, session, method, user, started FROM sessions")
        return {row[0]: (row[1], row[2], row[3], int(row[4])) for row in cur}

    def session_opened(self, source: str, session: str, method: str, user: str, started: int) -> None:
        with self.tx():
            self.db.execute("INSERT OR REPLACE INTO sessions VALUES(?, ?, ?, ?, ?)",
                            (source, session, method, user, started))

    def session_closed(self, source: str) -> None:
        with self.tx():
            self.db.execute("DELETE FROM sessions WHERE source=?", (source,))

    def output(self, t: int, path: str, size: int, sha256: str) -> None:
        with self.tx():
            self.db.execute("INSERT INTO outputs VALUES(?, ?, ?, ?)", (t, path, size, sha256))
