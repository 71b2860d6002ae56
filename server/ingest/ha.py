"""HA mode: acknowledge only what a synchronous standby holds.

Ingest acks a batch after its COMMIT, and the agent then frees its spool. On a replicated database
that is safe only if the COMMIT returned after a standby had the WAL: otherwise a primary that dies
right after the COMMIT takes acknowledged records with it. With ``database.ha`` each new connection
is checked here; a server that cannot promise it counts as unavailable (the worker backs off and
acks nothing, the broker and the agents keep the messages) until it can: after a failover that is
when the new primary has a synchronous standby again.
"""

from __future__ import annotations

from typing import Any

import psycopg


class NotSynchronous(psycopg.OperationalError):
    """The server would acknowledge a COMMIT that no standby has."""


def require_synchronous(conn: psycopg.Connection[Any]) -> None:
    """Make this session's COMMITs wait for the synchronous standby's flush; raise NotSynchronous if
    the server is a standby or names no synchronous standby (its COMMITs would wait for nobody)."""
    conn.execute("SET synchronous_commit = on")
    row = conn.execute(
        "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')"
    ).fetchone()
    assert row is not None
    in_recovery, names = bool(row[0]), str(row[1]).strip()
    if in_recovery:
        raise NotSynchronous("HA mode: the server is a standby (read-only)")
    if not names:
        raise NotSynchronous("HA mode: the server has no synchronous standby (synchronous_standby_names is empty);"
                             " acknowledging nothing until it has one")
