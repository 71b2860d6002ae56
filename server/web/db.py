"""The web's database access: one connection pool, reads, and audited writes.

Every write runs in a transaction that first declares the authenticated principal with
`audit_as()` (migration 021; only the web and admin roles may call it); the audit triggers record
it with the database role, so no route can forget who, and no other connection can claim it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from server.store.conn import Conn


class Database:
    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8) -> None:
        self.dsn = dsn
        self.pool: ConnectionPool[Conn] = ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, check=ConnectionPool.check_connection
        )

    def open(self) -> None:
        self.pool.open(wait=True, timeout=30)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def read(self) -> Iterator[Conn]:
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def write(self, actor: str | None) -> Iterator[Conn]:
        """A transaction whose changes the audit log attributes to `actor`; None only for
        bookkeeping that is not audited (failed logins), which then declares nobody."""
        with self.pool.connection() as conn, conn.transaction():
            if actor is not None:
                conn.execute("SELECT audit_as(%s)", (actor,))
            yield conn


def rows(conn: Conn, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        return cur.fetchall()


def one(conn: Conn, sql: str, params: Any = None) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        return cur.fetchone()
