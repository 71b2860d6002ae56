"""Bytes on disk per instrument-year at the agent's default settings.

    .venv/bin/python bench/ingest_storage.py [--instruments 5] [--days 365]

Each simulated instrument: agent up all day, a heartbeat every 300 s (288 a day), three
sessions a day each with a run of 1 h 22 min (1,500 h a year over 365 days), state changes
and session records: ~300 records a day, each sent live in its own signed envelope (the worst
case for overhead: a backlog would share envelopes). Everything goes through the ingest
pipeline (verification, dedupe, storage, derivation, live state) into a durable database; then
the daily packer moves the previous day's raw envelopes into one pack per agent, as in
production (the hot `envelopes` table holds the last day: its size at the end is what a running
system carries, not a per-year cost, but it is counted anyway).
Sizes are PostgreSQL's own (hypertable_size / pg_total_relation_size: heap, TOAST and indexes).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from ingest_common import DAY_MS, SimAgent, fresh_db, machine, services, typical_day

from protocols import topics
from server.config import Settings
from server.ingest.verify import Incoming
from server.ingest.worker import Pipeline
from server.store.archive import pack_old

TABLES = ["records", "envelopes", "envelope_packs", "usage_segments", "coverage", "user_sessions", "agent_progress",
          "gaps", "live_state"]


def sizes(conn: psycopg.Connection[object]) -> dict[str, int]:
    out = {}
    for t in TABLES:
        if t == "records":
            out[t] = int(conn.execute("SELECT hypertable_size('records')").fetchone()[0])  # type: ignore[index]
        else:
            out[t] = int(conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0])  # type: ignore[index]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=5)
    ap.add_argument("--days", type=int, default=365)
    args = ap.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    fleet = [SimAgent(f"st-{i}", "st-unit", f"st-i{i}") for i in range(args.instruments)]
    day0 = (int(time.time() * 1000) // DAY_MS - args.days - 2) * DAY_MS
    with services(fast=False) as (pg, _broker):
        dsn = fresh_db(pg, "bench_storage")
        settings = Settings(database={"dsn": dsn})
        pipe = Pipeline(settings, "storage")
        n_rec = n_env = raw_bytes = 0
        t_start = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for a in fleet:
                a.register(conn)
            for d in range(args.days):
                msgs = []
                for a in fleet:
                    top = topics.topic(a.unit, a.instrument, topics.Kind.REC)
                    for r in typical_day(a, day0 + d * DAY_MS):
                        raw = a.envelope([r], r["t"] + 200)
                        msgs.append(Incoming(top, raw, (r["t"] + 300) / 1000))
                        raw_bytes += len(raw)
                msgs.sort(key=lambda m: m.received)
                for k in range(0, len(msgs), 1000):
                    out = pipe.process(conn, msgs[k:k + 1000])
                    assert not out.rejections, out.rejections[:1]
                    n_rec += out.records
                    n_env += out.envelopes
                # the daily packer, as in production: yesterday's envelopes into one pack per agent
                with conn.transaction():
                    pack_old(conn, datetime.fromtimestamp((day0 + d * DAY_MS) / 1000, UTC), max_agents=10_000)
                if d % 60 == 59:
                    print(f"  day {d + 1}: {n_rec:,} records, {time.perf_counter() - t_start:.0f} s")
            conn.execute("VACUUM ANALYZE")
            bloated_hot = sizes(conn)["envelopes"]
            # a year squeezed into minutes leaves the hot table bloated (autovacuum cannot keep up with
            # a year of churn in 5 minutes); in production it holds about a day: compact it to measure that
            conn.execute("VACUUM FULL envelopes")
            packed = sizes(conn)
            detail = conn.execute(
                "SELECT table_bytes, index_bytes, toast_bytes FROM hypertable_detailed_size('records')").fetchone()
            before_reindex = packed["records"]
            conn.execute("REINDEX TABLE records")
            packed_reindexed = sizes(conn)["records"]
            n_packs = conn.execute("SELECT count(*), sum(n) FROM envelope_packs").fetchone()
            segs = conn.execute("SELECT count(*) FROM usage_segments").fetchone()[0]  # type: ignore[index]
            cov = conn.execute("SELECT count(*) FROM coverage").fetchone()[0]  # type: ignore[index]
            hours = conn.execute("SELECT sum(extract(epoch FROM end_at - start_at)) / 3600 / %s FROM usage_segments"
                                 " WHERE state = 'running' AND watched", (args.instruments,)).fetchone()[0]  # type: ignore[index]
    years = args.days / 365
    per = args.instruments * years
    print(f"{args.instruments} instruments x {args.days} days: {n_rec:,} records in {n_env:,} envelopes "
          f"({raw_bytes / n_env:.0f} B each on the wire), {segs:,} usage segments, {cov:,} coverage rows, "
          f"{hours:.0f} running h per instrument; ingest took {time.perf_counter() - t_start:.0f} s")
    print(f"packs: {n_packs}")
    print(f"{'table':16s} {'MB per instrument-year':>24s}")
    for t in TABLES:
        print(f"{t:16s} {packed[t] / per / 1e6:24.2f}")
    print(f"{'TOTAL':16s} {sum(packed.values()) / per / 1e6:24.2f}")
    print(f"(hot envelopes as left by the compressed-time run, before VACUUM FULL: {bloated_hot / per / 1e6:.2f})")
    print(f"bytes per record, everything included: {sum(packed.values()) / n_rec:.0f}; "
          f"packed envelopes: {packed['envelope_packs'] / n_env:.0f} B each")
    assert detail is not None
    print(f"records: heap {detail[0] / n_rec:.0f} B/record, indexes {detail[1] / n_rec:.0f} B/record "
          f"(after REINDEX of all chunks: total {packed_reindexed / per / 1e6:.2f} MB per instrument-year instead of "
          f"{before_reindex / per / 1e6:.2f})")


if __name__ == "__main__":
    main()
