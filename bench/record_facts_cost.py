"""What migration 040's window trigger costs a derive statement (issue 17, fourth round).

040 makes `record_checks_windows_changed` (037) also recompute each touched record's sessions and
whether its applicant was seen, from the record's window rows after the statement. A derive
statement pays for it when the running segments it writes lie inside service records' windows (029
then changes their window rows). This times such statements on a region database
(bench/evaluation_region.py): running segments inside 130 windows extended by one second, as the
derive writer extends an open segment, with 037's trigger function (old) and 040's (new)
interleaved in the same run, each statement in a transaction that is rolled back.

    python bench/record_facts_cost.py --dsn URL [--rounds 15] [--segments 1 20 200]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

MIGRATIONS = Path(__file__).resolve().parents[1] / "server" / "db" / "migrations"


def trigger_function(migration: str) -> str:
    """record_checks_windows_changed() as the migration defines it."""
    text = (MIGRATIONS / migration).read_text()
    m = re.search(r"CREATE (?:OR REPLACE )?FUNCTION record_checks_windows_changed\(\).*?END \$\$;", text, re.S)
    assert m is not None, migration
    return m.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def targets(conn: psycopg.Connection[Any], n: int) -> list[tuple[str, Any]]:
    """n running segments that end inside a 130 record's window (so extending them changes its
    window rows)."""
    return conn.execute(
        """
        SELECT DISTINCT ON (w.seg_start, w.agent_id) w.agent_id, w.seg_start
        FROM record_window_usage w JOIN service_records r ON r.id = w.record_id
        JOIN usage_segments s ON (s.agent_id, s.start_at) = (w.agent_id, w.seg_start)
        WHERE r.user_type = 130 AND w.session_id <> '' AND s.end_at + interval '1 second' < r.end_at
        ORDER BY w.seg_start DESC, w.agent_id LIMIT %s
        """,
        (n,),
    ).fetchall()


def timed(conn: psycopg.Connection[Any], function_sql: str | None, segs: list[tuple[str, Any]]) -> float:
    """One derive-like statement in a transaction rolled back; seconds of the statement."""
    keys = ([a for a, _ in segs], [b for _, b in segs])
    window_us = (
        "SELECT sum(w.us) FROM record_window_usage w"
        " WHERE (w.agent_id, w.seg_start) IN (SELECT * FROM unnest(%s::text[], %s::timestamptz[]))"
    )
    with conn.transaction(force_rollback=True):
        if function_sql is not None:
            conn.execute(function_sql.encode())
        before = conn.execute(window_us, keys).fetchone()
        t = time.perf_counter()
        conn.execute(
            "UPDATE usage_segments s SET end_at = s.end_at + interval '1 second'"
            " FROM unnest(%s::text[], %s::timestamptz[]) z (agent_id, start_at)"
            " WHERE (s.agent_id, s.start_at) = (z.agent_id, z.start_at)",
            keys,
        )
        elapsed = time.perf_counter() - t
        assert conn.execute(window_us, keys).fetchone() != before, "the statement changed no window rows"
        return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--segments", type=int, nargs="+", default=[1, 20, 200])
    args = ap.parse_args()
    old_fn, new_fn = trigger_function("037_evaluation_rollups.sql"), trigger_function("040_record_facts.sql")
    print("load average at start", os.getloadavg())
    with psycopg.connect(args.dsn) as conn:
        conn.execute("SET jit = off")
        for n in args.segments:
            segs = targets(conn, n)
            times: dict[str, list[float]] = {"old (037)": [], "new (040)": []}
            for _ in range(args.rounds):
                times["old (037)"].append(timed(conn, old_fn, segs))
                times["new (040)"].append(timed(conn, new_fn, segs))
            print(f"{len(segs):4d} segments per statement: " + ", ".join(
                f"{k} median {statistics.median(v) * 1000:.1f} ms (min {min(v) * 1000:.1f})" for k, v in times.items()
            ))  # fmt: skip
    print("load average at end", os.getloadavg())


if __name__ == "__main__":
    main()
