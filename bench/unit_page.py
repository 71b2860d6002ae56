"""One unit's report as its page builds it (issue 17, report6): the full report (every record, the
way before report6, which the XLSX, the JSON and the evidence still use) against the report built
for a page (`unit_report(rows=200)`: the long per-record lists fetched only as far as the page draws
them, every figure summed over all records in SQL), interleaved, with the load average.

Each round checks that the page view (`services.evaluation.page_view`, what the page draws: summary,
every figure, notes and the first 200 rows of each table with its row count) of both is IDENTICAL,
and that the paged report's summary and figures (`data`) equal the full report's.

    python bench/unit_page.py --workdir /tmp/jishi-s3/eval-r5k [--unit U1] [--rounds 8]
    python bench/unit_page.py --dsn URL ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from server.evaluation import privacy, rubric
from server.evaluation.period import Period
from server.evaluation.report import unit_report
from server.web.services.evaluation import page_view
from sim.devstack import PostgresServer

NOW = datetime(2026, 1, 10, tzinfo=UTC)  # the report's generation time, the same for both ways
MAX_ROWS = 200  # server/web/pages/main.py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn")
    ap.add_argument("--workdir", type=Path, help="a kept cluster of bench/evaluation_region.py (its pg directory)")
    ap.add_argument("--unit", default="U1")
    ap.add_argument("--year", type=int, default=2025)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    server = None
    dsn = args.dsn
    if dsn is None:
        server = PostgresServer(args.workdir / "pg", fast=True).start()
        dsn = server.dsn("bench")
    try:
        run(dsn, args.unit, Period.year(args.year), args.rounds)
    finally:
        if server is not None:
            server.stop()


def run(dsn: str, unit: str, period: Period, rounds: int) -> None:
    rb = rubric.load()
    times: dict[str, list[float]] = {"full": [], "page": []}
    same = True
    with psycopg.connect(dsn) as conn:
        pseudonyms = privacy.load(conn)
        conn.commit()
        print("load average at start", os.getloadavg())
        for attempt in range(rounds + 1):  # the first round warms the cache, not counted
            ways = [("full", None), ("page", MAX_ROWS)]
            views = {}
            reps = {}
            for way, rows in ways if attempt % 2 else ways[::-1]:
                t = time.perf_counter()
                rep = unit_report(conn, period, unit, rb, pseudonyms, now=NOW, rows=rows)
                took = time.perf_counter() - t
                conn.rollback()
                if attempt:
                    times[way].append(took)
                reps[way] = rep
                views[way] = page_view(rep, MAX_ROWS)
            ok = views["full"] == views["page"] and reps["full"].summary == reps["page"].summary \
                and reps["full"].data == reps["page"].data
            same = same and ok
            print(f"  round {attempt}: full {times['full'][-1] if attempt else 0:.3f} s,"
                  f" page {times['page'][-1] if attempt else 0:.3f} s, {'IDENTICAL' if ok else 'DIFFERENT'}")
        full, page = reps["full"], reps["page"]
        for t_full, t_page in zip(full.tables, page.tables, strict=True):
            n = len(t_full.rows) if t_full.total is None else t_full.total
            m = len(t_page.rows) if t_page.total is None else t_page.total
            if n > MAX_ROWS or len(t_page.rows) != n:
                print(f"  table {t_full.key}: {n} rows; the page's report fetched {len(t_page.rows)} of {m}")
    print(f"unit {unit}, {rounds} rounds, load average at end {os.getloadavg()}")
    for way in ("full", "page"):
        v = times[way]
        print(f"  {way}: median {statistics.median(v):.3f} s (min {min(v):.3f}, max {max(v):.3f})")
    print("page views full vs page:", "IDENTICAL" if same else "DIFFERENT")


if __name__ == "__main__":
    main()
