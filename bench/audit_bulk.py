"""Benchmark: one statement that writes many audited rows (the audit hash chain, migrations 021/036).

Every audited row becomes an audit_log row chained under the one-row `audit_chain_head`. Before
migration 036 each audit row also updated that head row, and each update in one transaction left a
version the next lookup had to walk: quadratic. This inserts N organisations (an audited, cheap
table) in one INSERT ... SELECT each, in its own transaction, times it, then runs the verifier.

    python bench/audit_bulk.py                       # private PostgreSQL under /tmp, N = 2k 10k 50k
    python bench/audit_bulk.py --sizes 2000 10000    # other sizes
    python bench/audit_bulk.py --dsn URL             # an existing, migrated database
    python bench/audit_bulk.py --timeout 600         # give up on one size after this many seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from server.db import audit
from server.db.migrate import apply
from sim.devstack import PostgresServer


def insert_bulk(dsn: str, n: int, tag: str, timeout_s: float) -> float | None:
    """Seconds to insert n audited rows in one statement (None: cancelled at the timeout)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(f"SET statement_timeout = '{int(timeout_s * 1000)}ms'")
        t = time.perf_counter()
        try:
            conn.execute(
                "INSERT INTO organisations (id, name, kind)"
                " SELECT %s || '-' || g, '批量' || g, 'enterprise' FROM generate_series(1, %s) g",
                (tag, n),
            )
        except psycopg.errors.QueryCanceled:
            return None
        conn.commit()
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 50000])
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="jishi-bench-"))
    workdir.chmod(0o755)
    server = None
    try:
        if args.dsn:
            dsn = args.dsn
        else:
            server = PostgresServer(workdir / "pg", fast=True).start()
            dsn = server.create_database("bench")
        apply(dsn)
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC {platform.node()}"
              f" {platform.processor() or platform.machine()} load average {os.getloadavg()}")
        print(f"{'N':>8} {'seconds':>9} {'rows/s':>9}")
        for i, n in enumerate(args.sizes):
            s = insert_bulk(dsn, n, f"bulk{i}x{n}", args.timeout)
            if s is None:
                print(f"{n:>8} {'>' + str(int(args.timeout)):>9} {'-':>9}  (cancelled)")
            else:
                print(f"{n:>8} {s:>9.2f} {n / s:>9.0f}")
        with psycopg.connect(dsn) as conn:
            t = time.perf_counter()
            breaks = audit.verify(conn)
            rows = conn.execute("SELECT count(*) FROM audit_log").fetchone()
        print(f"verifier: {'intact' if not breaks else breaks[:3]} over {rows[0] if rows else 0} audit rows"
              f" in {time.perf_counter() - t:.2f} s")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
