"""The durable queue: every record is written here, with its seq and hash, before any publish.

SQLite in WAL mode with `synchronous=FULL`: a commit is on disk when `append` returns. The
sequence number and the previous hash are read, the record built, hashed and inserted, and the
counters advanced in ONE transaction, so a crash (kill -9, power loss) can never leave a hole
nor reuse a seq. Rows are trimmed only at or below the server's acknowledgement; the size and
age limits drop `sample` records first, then `heartbeat` records, never state, session,
lifecycle or overflow records, and write a `spool_overflow` record naming exactly what went.

A full disk (SQLITE_FULL / ENOSPC, whoever filled it) is handled the same way: a write that fails
for lack of space releases the spool's reserve file (`spool.db.reserve`, kept next to the
database so the clean-up itself has room: SQLite cannot even delete rows on a full disk),
checkpoints the WAL, drops the oldest `sample` then `heartbeat` records (declared in a
`spool_overflow` record, when the agent has given its builder as `overflow`) and tries once
more; if there is still no room it raises `SpoolFull`. The reserve is written again once space
has returned (`restore_reserve`, called with the limit checks). Every step is logged.

One `Spool` object per thread (sqlite3 connections are not shared across threads).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
RESERVE_BYTES = 1024 * 1024
"""kept free on the spool's disk (as a file) so that a full disk can be dealt with"""
DROP_ON_FULL_BYTES = 64 * 1024
"""record bytes dropped (oldest samples, then heartbeats) each time the disk is found full"""
MIN_FREE_PAGES = 16
"""while the disk is full, free pages kept inside the database so that writes never extend it"""
LAST_FREE_PAGES = 4
"""while the disk is full and fewer pages than this are free, whatever is droppable is dropped"""
WAL_AUTOCHECKPOINT = 100
CACHE_KIB = 128
"""SQLite page cache per connection (the agent's loop and its publisher hold one each). It fills up as
the spool is written and read, i.e. within hours of running or on publishing a backlog: 512 KiB each
added ~1.2 MB resident to the agent, 128 KiB ~0.45 MB, for the same drain time (bench/RESULTS.md
"agentmem5"). The spool is read in seq order, once; the OS keeps the file's pages cached anyway."""
"""pages (4 KiB): keeps the WAL well below the reserve, so the reserve always covers a checkpoint"""

log = logging.getLogger("jishi.spool")
T = TypeVar("T")

Builder = Callable[[int, str], dict[str, Any]]
"""Builds a record given its seq and the previous record's hash."""
OverflowBuilder = Callable[[int, str, list[dict[str, Any]]], dict[str, Any]]
"""Builds the `spool_overflow` record: (seq, prev, dropped ranges)."""


class SpoolError(RuntimeError):
    pass


class SpoolFull(SpoolError):
    """The disk is full and nothing more could be freed: this write is not stored."""


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


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
    def __init__(self, path: Path, agent: str, readonly: bool = False, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = path
        self.agent = agent
        self.reserve = path.with_name(path.name + ".reserve")
        self.reserve_bytes = reserve_bytes
        self.overflow: OverflowBuilder | None = None
        """set by the agent: lets a full disk drop old samples and heartbeats, declared"""
        self.full_events = 0
        self.disk_full = False
        if readonly:
            uri = path.resolve().as_uri() + "?mode=ro"  # file:///C:/... on Windows
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=True)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            self._write(self._init_schema)
            self.restore_reserve()

    def _init_schema(self) -> None:
        with self.tx():
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            owner = self._meta("agent")
            if owner is None:
                for key, value in (("agent", self.agent), ("boot", 0), ("next_seq", 1), ("last_hash", GENESIS),
                                   ("acked", 0), ("created", int(time.time() * 1000))):
                    self._set(key, value)
            elif owner != self.agent:
                raise SpoolError(f"spool {self.path} belongs to agent {owner!r}, not {self.agent!r}: "
                                 "use another data_dir or the original agent id")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock at once, so reads inside are current.
        A COMMIT that fails (e.g. SQLITE_FULL) is rolled back too, never left open."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    # ---- a full disk ----------------------------------------------------------------------------

    def _write(self, job: Callable[[], T]) -> T:
        """Run a writing job; if the disk is full, make room once and try again."""
        try:
            result = job()
        except (sqlite3.OperationalError, OSError) as exc:
            if not _is_full(exc):
                raise
            self._make_room(exc)
            try:
                result = job()
            except (sqlite3.OperationalError, OSError) as again:
                if not _is_full(again):
                    raise
                raise SpoolFull(f"disk full at {self.path.parent}: record not stored ({again}); nothing left "
                                "to drop (state, session and lifecycle records are never dropped)") from again
        return result

    def _make_room(self, exc: BaseException) -> None:
        self.full_events += 1
        self.disk_full = True
        released = 0
        if self.reserve.exists():
            released = self.reserve.stat().st_size
            self.reserve.unlink()
        self._checkpoint()
        dropped: list[tuple[int, int]] = []
        if self.overflow is not None:
            try:
                with self.tx():
                    dropped = self._drop(self.overflow, DROP_ON_FULL_BYTES, None)
            except (sqlite3.OperationalError, OSError) as drop_exc:
                if not _is_full(drop_exc):
                    raise
                log.error("spool %s: disk full and even dropping old records failed (%s)", self.path, drop_exc)
            self._checkpoint()
        what = (f"dropped {sum(b - a + 1 for a, b in dropped)} oldest sample/heartbeat records {dropped[:8]} "
                "(declared in a spool_overflow record)" if dropped else "no sample/heartbeat records to drop")
        log.error("spool %s: DISK FULL (%s): released the %d-byte reserve, %s; state, session and lifecycle "
                  "records are kept. Free space on this disk.", self.path, exc, released, what)

    def _keep_free_pages(self) -> None:
        """While the disk is full, writes should reuse pages freed inside the database rather than
        extend it: a checkpoint that must copy a new page into the file finds no room, and until
        space returns the WAL cannot restart, so nothing (not even a delete) can be written. So
        old samples and heartbeats are dropped before the free pages run out (once enough have
        accumulated to be worth a `spool_overflow` record, or whatever there is when almost no
        page is free)."""
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0])
        if free >= MIN_FREE_PAGES or self.overflow is None:
            return
        if self.restore_reserve():  # space came back: nothing to do
            return
        droppable = int(self.db.execute(
            f"SELECT coalesce(sum(length(body)), 0) FROM records WHERE type IN ({','.join('?' * len(DROPPABLE))})",
            DROPPABLE).fetchone()[0])
        if not (droppable >= DROP_ON_FULL_BYTES // 4 or (free < LAST_FREE_PAGES and droppable > 0)):
            return
        try:
            with self.tx():
                dropped = self._drop(self.overflow, DROP_ON_FULL_BYTES, None)
        except (sqlite3.OperationalError, OSError) as exc:
            if not _is_full(exc):
                raise
            return  # the write that follows reports it
        self._checkpoint()
        if dropped:
            log.error("spool %s: disk still full: dropped %d more oldest sample/heartbeat records %s (declared)",
                      self.path, sum(b - a + 1 for a, b in dropped), dropped[:8])

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and restart it: the next writes reuse the WAL file from its
        start (its space on disk is kept, so a disk full again cannot take it away)."""
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def restore_reserve(self) -> bool:
        """Write the reserve file if it is missing; False while the disk has no room for it."""
        if self.reserve_bytes <= 0:
            return True
        try:
            if self.reserve.exists() and self.reserve.stat().st_size >= self.reserve_bytes:
                return True
            with self.reserve.open("wb") as f:
                f.write(b"\0" * self.reserve_bytes)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.reserve.unlink()
            if exc.errno != errno.ENOSPC:
                log.warning("spool %s: cannot write the reserve file: %s", self.path, exc)
            return False
        if self.disk_full:
            self.disk_full = False
            log.warning("spool %s: disk space is back (reserve of %d bytes restored after %d full event(s))",
                        self.path, self.reserve_bytes, self.full_events)
        return True

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
        def job() -> None:
            with self.tx():
                self._set(key, value)

        self._write(job)

    # ---- writing records ----------------------------------------------------------------------

    def start_boot(self) -> int:
        """Increment and return the boot counter (once per agent start)."""
        def job() -> int:
            with self.tx():
                boot = int(self._meta("boot")) + 1
                self._set("boot", boot)
            return boot

        return self._write(job)

    def append(self, build: Builder) -> Row:
        """Assign the next seq and prev hash, build, hash and store a record: all or nothing."""
        if self.disk_full:
            self._keep_free_pages()

        def job() -> Row:
            with self.tx():
                return self._append(build)

        return self._write(job)

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
        large backlog); `exact` also counts rows and bytes, which reads the whole table.

        Read in one snapshot: the publisher calls this on its own connection while the agent appends
        on another, and an empty table read before an append and `next_seq` read after it gave
        first_seq = the new next_seq, so the publisher's cursor skipped the appended record until
        resend_after_s (CI, 2026-12-03: a gateway's boot record after kill -9)."""
        with self._snapshot():
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

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction (WAL: one consistent view for all its statements), unless one is open."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def read(self, first: int, max_records: int, max_bytes: int, last: int | None = None) -> list[Row]:
        """Records from `first` on, contiguous in seq (stops at a hole), within both limits."""
        return [Row(*row) for row in self.scan(first, max_records, max_bytes, last)]

    def scan(self, first: int, max_records: int, max_bytes: int,
             last: int | None = None) -> Iterator[tuple[int, str, bytes, str]]:
        """`read`'s records one at a time as (seq, type, body, hash): the publisher copies each body
        into its envelope and drops it, so a batch's 500 rows are never alive at once (memory)."""
        size = 0
        taken = 0
        expect = first
        upper = last if last is not None else 2**62
        cur = self.db.execute("SELECT seq, type, body, hash FROM records WHERE seq >= ? AND seq <= ? "
                              "ORDER BY seq LIMIT ?", (first, upper, max_records))
        try:
            for row in cur:
                seq, body = row[0], row[2]
                if taken and (seq != expect or size + len(body) > max_bytes):
                    break
                yield row
                taken += 1
                size += len(body)
                expect = seq + 1
        finally:
            cur.close()

    def next_held(self, seq: int) -> int | None:
        row = self.db.execute("SELECT min(seq) FROM records WHERE seq >= ?", (seq,)).fetchone()
        return None if row[0] is None else int(row[0])

    # ---- acknowledgement and limits -------------------------------------------------------------

    def ack(self, acked: int) -> int:
        """Server says every seq <= acked is durable: trim them. Returns rows deleted."""
        def job() -> int:
            with self.tx():
                next_seq = int(self._meta("next_seq"))
                if acked >= next_seq:
                    raise SpoolError(f"ack {acked} is beyond the last record {next_seq - 1}")
                old = int(self._meta("acked"))
                if acked > old:
                    self._set("acked", acked)
                cur = self.db.execute("DELETE FROM records WHERE seq <= ?", (acked,))
                return cur.rowcount

        return self._write(job)

    def enforce_limits(self, max_bytes: int, max_age_ms: int, now_ms: int,
                       overflow: OverflowBuilder) -> list[tuple[int, int]]:
        """Drop the oldest droppable records while over size or age; record what was dropped.

        `overflow(seq, prev, dropped_ranges)` builds the `spool_overflow` record. Returns the dropped
        (first, last) ranges. Size is brought down to 90 % of the limit so this does not run on
        every check once the limit is reached. Also writes the reserve file back after a full disk.
        """
        self.overflow = overflow
        if self.disk_full or not self.reserve.exists():
            self.restore_reserve()

        def job() -> list[tuple[int, int]]:
            with self.tx():
                size = int(self.db.execute("SELECT coalesce(sum(length(body)), 0) FROM records").fetchone()[0])
                free = size - max_bytes * 9 // 10 if size > max_bytes else 0
                return self._drop(overflow, free, now_ms - max_age_ms)

        return self._write(job)

    def _drop(self, overflow: OverflowBuilder, free_bytes: int, cutoff: int | None) -> list[tuple[int, int]]:
        """Inside a transaction: delete the oldest droppable records totalling at least `free_bytes`
        (and all older than `cutoff`), and append the spool_overflow record(s) naming them."""
        drop: list[tuple[int, str]] = []
        freed = 0
        for typ in DROPPABLE:
            cur = self.db.execute("SELECT seq, hash, length(body), t FROM records WHERE type=? ORDER BY seq", (typ,))
            for seq, digest, length, t in cur:
                if not (freed < free_bytes or (cutoff is not None and t < cutoff)):
                    break
                drop.append((seq, digest))
                freed += length
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

    def _exec(self, sql: str, params: tuple[Any, ...]) -> None:
        def job() -> None:
            with self.tx():
                self.db.execute(sql, params)

        self._write(job)

    def session_opened(self, source: str, session: str, method: str, user: str, started: int) -> None:
        self._exec("INSERT OR REPLACE INTO sessions VALUES(?, ?, ?, ?, ?)", (source, session, method, user, started))

    def session_closed(self, source: str) -> None:
        self._exec("DELETE FROM sessions WHERE source=?", (source,))

    def output(self, t: int, path: str, size: int, sha256: str) -> None:
        self._exec("INSERT INTO outputs VALUES(?, ?, ?, ?)", (t, path, size, sha256))


class RunLock:
    """One agent process per spool: an OS file lock on `<spool>.lock`, held while the agent runs.

    Two processes on one spool would share a chain and fight over one MQTT client id; `jishi-agent
    check` and `calibrate` use the lock to leave a running agent's devices (a gateway's shared
    bus) alone. The OS drops the lock when the process dies, so kill -9 leaves nothing stale.
    """

    def __init__(self, spool_path: Path) -> None:
        self.path = spool_path.with_name(spool_path.name + ".lock")
        self._fh: Any = None

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if another process does."""
        if self._fh is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+b")  # held open for as long as the lock is
        try:
            _lock(fh.fileno())
        except OSError:
            fh.close()
            return False
        with contextlib.suppress(OSError):  # the pid is for people; a full disk must not stop the lock
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()).encode())
            fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """The pid written by the process holding the lock ('?' if unknown)."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                _unlock(self._fh.fileno())
            self._fh.close()
            self._fh = None


if sys.platform == "win32":
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
