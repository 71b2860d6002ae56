"""Apply the ordered SQL migrations in `migrations/` once each, recorded in `schema_migrations`,
then `grants.sql` (the application roles' rights) every time, so new tables are never left open."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6A69736869  # "jishi": one migrator at a time


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("server.db") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in names]


def grants_sql() -> str:
    """The role grants applied after the migrations (server/db/grants.sql)."""
    return (resources.files("server.db") / "grants.sql").read_text(encoding="utf-8")


def apply(dsn: str) -> list[str]:
    """Apply pending migrations in name order; return the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in migration_files():
                if name in done:
                    continue
                log.info("applying migration %s", name)
                with conn.transaction():
                    conn.execute(sql.encode("utf-8"))
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied_now.append(name)
            with conn.transaction():
                conn.execute(grants_sql().encode("utf-8"))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
