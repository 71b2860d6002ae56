"""The derive writer's upserts alone, and what each trigger on them costs the PostgreSQL backend.

    PYTHONPATH=. .venv/bin/python bench/ingest_derive_writes.py [--agents 10] [--days 30] [--rounds 3]
    BENCH_CODE=/path/to/an/older/checkout ...   # its queries and migrations

The stage bench's backlog (bench/ingest_stages.py) is ingested once; its sessions and segments, as
the derive writer wrote them, are then upserted again with `queries.upsert_sessions` and
`queries.upsert_segments` into fresh databases, in as many statements as the stage bench has
transactions (time slices of the rows, sessions first), once per variant: as migrated, and with
some triggers disabled (ALTER TABLE .. DISABLE TRIGGER), so that the difference is what they cost.
Variants alternate within each round. Printed: backend CPU (/proc/<pid>/schedstat) per ingested
record of each upsert, the rollup's row count and sum (the same in every variant that keeps 013's
triggers), and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("BENCH_CODE") or str(Path(__file__).resolve().parents[1]))

import psycopg
from ingest_common import SimAgent, backlog_envelopes, fresh_db, machine, sched_s, services

from server.config import Settings
from server.db import queries
from server.ingest.verify import Incoming, open_any
from server.ingest.worker import Pipeline

VARIANTS = {
    "as migrated": "",
    "all their triggers off": "ALTER TABLE usage_segments DISABLE TRIGGER USER;"
                              " ALTER TABLE user_sessions DISABLE TRIGGER USER",
    "013 rollup off (037 too)": "ALTER TABLE usage_segments DISABLE TRIGGER usage_segments_rollup_insert;"
                                " ALTER TABLE usage_segments DISABLE TRIGGER usage_segments_rollup_update",
    "037 classed off": "ALTER TABLE usage_rollup DISABLE TRIGGER USER",
    "029 windows off": "ALTER TABLE usage_segments DISABLE TRIGGER usage_segments_record_windows_insert;"
                       " ALTER TABLE usage_segments DISABLE TRIGGER usage_segments_record_windows_update",
    "sessions-added off": "ALTER TABLE user_sessions DISABLE TRIGGER user_sessions_added",
}
SESSIONS = "agent_id, instrument_id, session_id, method, identifier, start_at, end_at, end_reason, start_seq"
SEGMENTS = "agent_id, instrument_id, start_at, end_at, state, watched, arrival, session_id, start_seq"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--batch", type=int, default=40, help="envelopes per ingest transaction (as the stage bench)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    code = Path(sys.path[0])
    print(f"machine: {machine()}; code: {code}")
    fleet = [SimAgent(f"bench-{i}", "bench-unit", f"bench-i{i}") for i in range(args.agents)]
    envs = backlog_envelopes(fleet, args.days)
    msgs = [Incoming(t, p, time.time(), i) for i, (t, p) in enumerate(envs)]
    opened = [open_any(m) for m in msgs]
    n_records = 500 * len(msgs)
    statements = (len(msgs) + args.batch - 1) // args.batch
    cpu: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in VARIANTS}
    with services(fast=False) as (pg, _broker):
        dsn = fresh_db(pg, "writes", code)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for a in fleet:
                a.register(conn)
            pipe = Pipeline(Settings(), "writes")
            for i in range(0, len(msgs), args.batch):
                pipe.process(conn, msgs[i:i + args.batch], opened[i:i + args.batch])
            sessions: list[tuple[Any, ...]] = conn.execute(
                f"SELECT {SESSIONS} FROM user_sessions ORDER BY start_at, agent_id").fetchall()
            segments: list[tuple[Any, ...]] = conn.execute(
                f"SELECT {SEGMENTS} FROM usage_segments ORDER BY start_at, agent_id").fetchall()
        print(f"{n_records:,} records: {len(segments):,} segments, {len(sessions):,} sessions,"
              f" upserted again in {statements} statements each")
        cuts: list[datetime | None] = [segments[len(segments) * k // statements][2] for k in range(1, statements)]
        cuts.append(None)
        for rnd in range(args.rounds):
            for name, ddl in VARIANTS.items():
                dsn = fresh_db(pg, "writes", code)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for a in fleet:
                        a.register(conn)
                    if ddl:
                        conn.execute(ddl)
                    pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
                    lo: datetime | None = None
                    c_sessions = c_segments = 0.0
                    for hi in cuts:
                        def inside(t: datetime, lo: datetime | None = lo, hi: datetime | None = hi) -> bool:
                            return (lo is None or t >= lo) and (hi is None or t < hi)
                        with conn.transaction():
                            b = sched_s(pid)
                            queries.upsert_sessions(conn, [s for s in sessions if inside(s[5])])
                            c_sessions += sched_s(pid) - b
                            b = sched_s(pid)
                            queries.upsert_segments(conn, [s for s in segments if inside(s[2])])
                            c_segments += sched_s(pid) - b
                        lo = hi
                    cpu[name][0].append(c_sessions / n_records * 1e6)
                    cpu[name][1].append(c_segments / n_records * 1e6)
                    if rnd == 0:
                        rows, total = conn.execute("SELECT count(*), sum(seconds) FROM usage_rollup").fetchone()  # type: ignore[misc]
                        print(f"  {name:<26} usage_rollup: {rows} rows, {total} s")
    print("backend us per ingested record, one figure per round")
    for name, (s, g) in cpu.items():
        print(f"  {name:<26} upsert_sessions {' '.join(f'{x:.3f}' for x in s)}"
              f"   upsert_segments {' '.join(f'{x:.3f}' for x in g)}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
