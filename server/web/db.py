"""The web's database access: one connection pool, reads, and audited writes; optionally a second,
read-only pool on a streaming replica.

Every write runs in a transaction that first declares the authenticated principal with
`audit_as()` (migration 021; only the web and admin roles may call it); the audit triggers record
it with the database role, so no route can forget who, and no other connection can claim it.

With a replica (`web.read_dsn`), the reads of GET requests (pages, API listings, evaluations) go
there: they are most of the load and need no primary (docs/scaling.md). Everything else stays on the
primary: every write (`write()`), every read of a request that changes something, and the
authentication of each request (server/web/auth.py reads through the app's own `Database`), so a
session just created is always found. Writes then commit with `synchronous_commit = remote_apply`:
with the replica as synchronous standby, the page a form redirects to already shows the change.
A replica that cannot be reached within a few seconds is skipped (the primary serves the read).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from server.store.conn import Conn
from server.web import timing

log = logging.getLogger(__name__)

REPLICA_WAIT_S = 3.0
"""longest wait for a replica connection before the read goes to the primary"""


@dataclass(frozen=True)
class Replication:
    """What the operator page shows: the primary's standbys, and how far the replica is behind."""

    standbys: list[dict[str, Any]]
    """pg_stat_replication on the primary: name, state, sync_state, replay_lag_s (None without
    the pg_read_all_stats privilege)"""
    replica: str | None
    """the replica the reads go to (its cluster_name or address); None: reads on the primary"""
    replica_in_recovery: bool | None
    lag_s: float | None
    """seconds the replica's replay is behind (0 when it has replayed all it received); None: unknown"""


class Database:
    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8, read_dsn: str | None = None) -> None:
        self.dsn = dsn
        self.pool: ConnectionPool[Conn] = ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, check=ConnectionPool.check_connection,
            kwargs={"cursor_factory": timing.TimedCursor},  # each statement's time into Server-Timing
        )
        self.replica_pool: ConnectionPool[Conn] | None = None
        """read-only pool on `read_dsn` (a streaming replica); opened without waiting, so the web
        starts, and serves from the primary, while the replica is unreachable"""
        if read_dsn:
            self.replica_pool = ConnectionPool(
                read_dsn, min_size=1, max_size=max_size, open=False, check=ConnectionPool.check_connection,
                kwargs={"options": "-c default_transaction_read_only=on", "cursor_factory": timing.TimedCursor},
            )
        self._reads = self.pool
        """the pool read() takes from: the primary's, or the replica's in a view from for_reads()"""

    def open(self) -> None:
        self.pool.open(wait=True, timeout=30)
        if self.replica_pool is not None:
            self.replica_pool.open(wait=False)

    def close(self) -> None:
        if self.replica_pool is not None:
            self.replica_pool.close()
        self.pool.close()

    def for_reads(self) -> Database:
        """A view of this database whose read() takes the replica (when there is one); write() and
        the pools are shared. server/web/deps.py hands it to GET requests."""
        if self.replica_pool is None:
            return self
        view = copy.copy(self)
        view._reads = self.replica_pool
        return view

    @contextmanager
    def read(self) -> Iterator[Conn]:
        with ExitStack() as stack:
            conn: Conn | None = None
            waited = time.perf_counter()
            if self._reads is not self.pool:
                try:
                    conn = stack.enter_context(self._reads.connection(timeout=REPLICA_WAIT_S))
                except (PoolTimeout, psycopg.OperationalError) as exc:
                    log.warning("replica unavailable (%s): reading from the primary", type(exc).__name__)
            if conn is None:
                conn = stack.enter_context(self.pool.connection())
            timing.add("pool", time.perf_counter() - waited)
            yield conn

    @contextmanager
    def write(self, actor: str | None) -> Iterator[Conn]:
        """A transaction whose changes the audit log attributes to `actor`; None only for
        bookkeeping that is not audited (failed logins), which then declares nobody."""
        waited = time.perf_counter()
        with self.pool.connection() as conn, conn.transaction():
            timing.add("pool", time.perf_counter() - waited)
            if self.replica_pool is not None:
                conn.execute("SET LOCAL synchronous_commit = remote_apply")
            if actor is not None:
                conn.execute("SELECT audit_as(%s)", (actor,))
            yield conn

    def replication(self) -> Replication:
        """The replication state for the operator page (docs/operations.md)."""
        with self.pool.connection() as conn:
            standbys = rows(conn, "SELECT application_name AS name, state, sync_state,"
                                  " extract(epoch FROM replay_lag)::float8 AS replay_lag_s"
                                  " FROM pg_stat_replication ORDER BY application_name")
        if self.replica_pool is None:
            return Replication(standbys, None, None, None)
        try:
            with self.replica_pool.connection(timeout=REPLICA_WAIT_S) as conn:
                got = one(conn, """
                    SELECT current_setting('cluster_name') AS name, pg_is_in_recovery() AS recovery,
                           CASE WHEN NOT pg_is_in_recovery() THEN 0
                                WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                                ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
                           END::float8 AS lag_s""")
        except (PoolTimeout, psycopg.OperationalError):
            return Replication(standbys, "", None, None)
        assert got is not None
        return Replication(standbys, str(got["name"]) or "replica", bool(got["recovery"]),
                           None if got["lag_s"] is None else float(got["lag_s"]))


def rows(conn: Conn, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        return cur.fetchall()


def one(conn: Conn, sql: str, params: Any = None) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        return cur.fetchone()
