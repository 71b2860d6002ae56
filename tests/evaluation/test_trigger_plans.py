"""Migration 041's trigger functions keep their statements' plans for the backend's life, made with
the transition table of the first call. Whatever that first call's size, later calls of another
size in the same backend keep the rollup (013), the record windows (029) and the classed rollup and
record checks (037) exactly what the stored rows give afresh: here one connection writes every
segment of the scenario in one statement and then rewrites segments one by one (INSERT, UPDATE,
DELETE, and INSERT .. ON CONFLICT, which fires both), the other connection the other way round.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.evaluation.test_evaluation_rollups import recomputed, stored
from tests.evaluation.test_record_windows import expected_windows, ingested, stored_windows  # noqa: F401
from tests.evaluation.test_rollup import expected_rollup, stored_rollup

COLUMNS = ("agent_id, instrument_id, start_at, end_at, state, watched, arrival, session_id, start_seq,"
           " method, identifier")


def assert_exact(conn: psycopg.Connection[Any]) -> None:
    assert stored_rollup(conn) == expected_rollup(conn)
    assert stored_windows(conn) == expected_windows(conn)
    assert stored(conn) == recomputed(conn)


def rewrite_whole(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    conn.execute("DELETE FROM usage_segments")
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO usage_segments ({COLUMNS}) SELECT * FROM unnest(%s::text[], %s::text[],"
                    " %s::timestamptz[], %s::timestamptz[], %s::text[], %s::bool[], %s::text[], %s::text[],"
                    " %s::bigint[], %s::text[], %s::text[])", [list(c) for c in zip(*rows, strict=True)])
    conn.commit()


def rewrite_one_by_one(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    running = [r for r in rows if r[4] == "running"][:6]
    for r in running:
        conn.execute("DELETE FROM usage_segments WHERE agent_id = %s AND start_at = %s", (r[0], r[2]))
        conn.execute(f"INSERT INTO usage_segments ({COLUMNS}) VALUES ({', '.join(['%s'] * 11)})", r)
        # longer, then back: the UPDATE trigger and the upsert's
        conn.execute("UPDATE usage_segments SET end_at = end_at + interval '1 hour' WHERE agent_id = %s"
                     " AND start_at = %s", (r[0], r[2]))
        conn.execute(f"INSERT INTO usage_segments ({COLUMNS}) VALUES ({', '.join(['%s'] * 11)})"
                     " ON CONFLICT (agent_id, start_at) DO UPDATE SET end_at = EXCLUDED.end_at", r)
        conn.commit()


@pytest.mark.parametrize("big_first", [True, False])
def test_plans_made_at_one_size_serve_another(ingested: str, big_first: bool) -> None:  # noqa: F811
    with psycopg.connect(ingested) as conn:
        rows = conn.execute(f"SELECT {COLUMNS} FROM usage_segments ORDER BY agent_id, start_at").fetchall()
        before = (stored_rollup(conn), stored_windows(conn), stored(conn))
        assert all(before[2]) and any(r[4] == "running" for r in rows)
        steps = (rewrite_whole, rewrite_one_by_one) if big_first else (rewrite_one_by_one, rewrite_whole)
        for step in steps:
            step(conn, rows)
            assert_exact(conn)
        assert (stored_rollup(conn), stored_windows(conn), stored(conn)) == before
