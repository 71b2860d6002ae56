"""What the PostgreSQL backend spends to store envelopes.raw, by how the column is stored.

    PYTHONPATH=. .venv/bin/python bench/ingest_envelope_storage.py [--agents 10] [--days 30] [--rounds 4]

The stage bench's backlog (envelopes of 500 records, ~116 kB each) is COPied (binary, 40 envelopes
per transaction, as ingest's batches) into a table shaped like `envelopes` whose `raw` is stored
as migration 039 keeps it (lz4), with pglz, and uncompressed (STORAGE EXTERNAL, as before 039).
The variants alternate within each round, so the box's load falls on all of them alike. Printed:
backend CPU per record (/proc/<pid>/schedstat), WAL and table bytes per envelope, load average.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from ingest_common import SimAgent, backlog_envelopes, machine, sched_s, services

VARIANTS = {
    "lz4 (039, now)": "ALTER TABLE e ALTER COLUMN raw SET STORAGE EXTENDED, ALTER COLUMN raw SET COMPRESSION lz4",
    "pglz": "ALTER TABLE e ALTER COLUMN raw SET STORAGE EXTENDED, ALTER COLUMN raw SET COMPRESSION pglz",
    "none (EXTERNAL)": "ALTER TABLE e ALTER COLUMN raw SET STORAGE EXTERNAL",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    fleet = [SimAgent(f"bench-{i}", "bench-unit", f"bench-i{i}") for i in range(args.agents)]
    envs = [p for _t, p in backlog_envelopes(fleet, args.days)]
    n = 500 * len(envs)
    cpu: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with services(fast=False) as (pg, _broker), psycopg.connect(pg.create_database("envstore"),
                                                                 autocommit=True) as conn:
        pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        for rnd in range(args.rounds):
            for name, ddl in VARIANTS.items():
                conn.execute("DROP TABLE IF EXISTS e")
                conn.execute("CREATE TABLE e (id int8 PRIMARY KEY, agent_no int4, received_at timestamptz,"
                             " first_seq int8, last_seq int8, raw bytea)")
                conn.execute(ddl)
                conn.execute("CHECKPOINT")
                lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                b = sched_s(pid)
                for i in range(0, len(envs), 40):
                    with conn.transaction(), conn.cursor().copy("COPY e FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(["int8", "int4", "timestamptz", "int8", "int8", "bytea"])
                        for j, p in enumerate(envs[i:i + 40]):
                            cp.write_row((i + j, 1, None, 1, 2, p))
                cpu[name].append((sched_s(pid) - b) / n * 1e6)
                if rnd == 0:
                    wal, size, how = conn.execute(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s), pg_total_relation_size('e'),"
                        " (SELECT string_agg(DISTINCT coalesce(pg_column_compression(raw), 'none'), ',') FROM e)",
                        (lsn0,)).fetchone()  # type: ignore[misc]
                    got = sum(map(len, envs)) / len(envs) / 1024
                    print(f"{name:<18} WAL {wal / len(envs) / 1024:6.1f} kB/envelope, stored"
                          f" {size / len(envs) / 1024:6.1f} kB (received {got:.1f}), as {how}")
    for name, v in cpu.items():
        print(f"{name:<18} backend us/record: {' '.join(f'{x:.3f}' for x in v)}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
