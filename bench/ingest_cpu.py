"""Where a record's time goes in ingest: CPU per record of each phase, in one process, no broker.

    .venv/bin/python bench/ingest_cpu.py [--agents 10] [--days 30] [--batch 40] [--profile]

The backlog of bench/ingest_drain.py (envelopes of 500 records, agents interleaved) is opened
(`open_any`: the pure checks of the "open" thread) and then run through `Pipeline.process` in
batches of `--batch` envelopes against a durable PostgreSQL. CPU time, not wall time: the box
is shared, and CPU per record is what two ingest processes and PostgreSQL divide two cores by.
Printed: the open phase, the database thread's Python, and the PostgreSQL backend serving it
(from /proc). `--profile` adds a cProfile of the database phase (inflates Python calls).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from ingest_common import SimAgent, backlog_envelopes, fresh_db, machine, services

from server.config import Settings
from server.ingest.service import GC_THRESHOLDS
from server.ingest.verify import Incoming, Opening, Refused, open_any
from server.ingest.worker import Pipeline


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as `jishi-server ingest` does
    gc.freeze()
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    fleet = [SimAgent(f"bench-{i}", "bench-unit", f"bench-i{i}") for i in range(args.agents)]
    envs = backlog_envelopes(fleet, args.days)
    msgs = [Incoming(t, p, time.time(), i) for i, (t, p) in enumerate(envs)]

    t = time.process_time()
    opened: list[Opening | Refused] = [open_any(m) for m in msgs]
    t_open = time.process_time() - t
    total = sum(len(o.body["records"]) for o in opened if isinstance(o, Opening))
    print(f"{total:,} records in {len(msgs):,} envelopes")
    print(f"open (canonical parse, schema, record hashes, own chain): {t_open / total * 1e6:.2f} us CPU/record")

    with services(fast=False) as (pg, _broker):
        dsn = fresh_db(pg, "cpu")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for a in fleet:
                a.register(conn)
            pipe = Pipeline(Settings(), "cpu")
            pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            prof = cProfile.Profile()
            b0, t, w = backend_cpu(pid), time.process_time(), time.perf_counter()
            if args.profile:
                prof.enable()
            for i in range(0, len(msgs), args.batch):
                pipe.process(conn, msgs[i:i + args.batch], opened[i:i + args.batch])
            prof.disable()
            t_db, w = time.process_time() - t, time.perf_counter() - w
            b_db = backend_cpu(pid) - b0
            n = int(conn.execute("SELECT count(*) FROM records").fetchone()[0])  # type: ignore[index]
            assert n == total, f"stored {n} of {total}"
    print(f"database thread, Python (registry, signature, book, COPY, derive, live): {t_db / n * 1e6:.2f}"
          " us CPU/record")
    print(f"PostgreSQL backend: {b_db / n * 1e6:.2f} us CPU/record; wall of the database phase"
          f" {w / n * 1e6:.2f} us/record")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
