"""One unit's report as its page builds it (issue 17, report6), against the full report, interleaved,
with the load average.

Ways, each round in a rotating order, all on the same database:
- ``page``: this tree's `unit_report(rows=200)`, what the unit's report page builds (the long
  per-record lists fetched only as far as the page draws them, every figure over all records);
- ``full``: this tree's full report (what the XLSX, the JSON and the evidence use);
- ``old`` (with ``--old-tree DIR``, e.g. an unpacked ``git archive 1445bc7``): the full report of
  that tree, in a worker process of its own started once (so it is as warm as this one) and told
  to run one report per round;
- ``old-page`` (with ``--old-tree DIR``; report7): that tree's `unit_report(rows=200)` (a tree that
  has it: report6's merge or later), in a second worker process the same way.

Each round checks that what the page draws of every way (`services.evaluation.page_view(rep, 200)`:
summary, figures, notes, each table's first 200 rows and row count; compared as a hash of its JSON)
is IDENTICAL, that `page` and `full` have equal summary and figures (`data`), and that the full
reports of `full` and `old` are IDENTICAL (the JSON of `as_dict`, every row).

    mkdir -p /tmp/r7-old && git archive a58e39e | tar -x -C /tmp/r7-old
    python bench/unit_page.py --workdir /tmp/jishi-s3/eval-r5k --old-tree /tmp/r7-old [--rounds 10]
    python bench/unit_page.py --dsn URL ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

NOW = datetime(2026, 1, 10, tzinfo=UTC)  # the report's generation time, the same for every way
MAX_ROWS = 200  # server/web/pages/main.py


def view_hash(view: dict[str, Any]) -> str:
    """A page view as the hash of its JSON (ShownRows as its rows and count)."""

    def other(o: Any) -> Any:
        if hasattr(o, "shown") and hasattr(o, "total"):
            return {"shown": o.shown, "total": o.total}
        return str(o)

    return hashlib.sha256(json.dumps(view, default=other, sort_keys=True).encode()).hexdigest()


def worker(dsn: str, unit: str, year: int, rows: int | None) -> None:
    """The old tree's side: one report per line read (full, or the page's with `rows`), answered
    with its time and view hash."""
    from server.evaluation import privacy, rubric
    from server.evaluation.period import Period
    from server.evaluation.report import unit_report
    from server.web.services.evaluation import page_view

    with psycopg.connect(dsn) as conn:
        pseudonyms = privacy.load(conn)
        conn.commit()
        rb, period = rubric.load(), Period.year(year)
        for _ in sys.stdin:
            t = time.perf_counter()
            rep = (unit_report(conn, period, unit, rb, pseudonyms, now=NOW) if rows is None
                   else unit_report(conn, period, unit, rb, pseudonyms, now=NOW, rows=rows))
            took = time.perf_counter() - t
            conn.rollback()
            answer = {"s": took, "hash": view_hash(page_view(rep, MAX_ROWS)), "whole": view_hash(rep.as_dict())}
            print(json.dumps(answer), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn")
    ap.add_argument("--workdir", type=Path, help="a kept cluster of bench/evaluation_region.py (its pg directory)")
    ap.add_argument("--old-tree", type=Path, help="a source tree (e.g. git archive 1445bc7) whose full report runs too")
    ap.add_argument("--unit", default="U1")
    ap.add_argument("--year", type=int, default=2025)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-rows", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.dsn, args.unit, args.year, args.worker_rows)
        return
    server = None
    dsn = args.dsn
    if dsn is None:
        from sim.devstack import PostgresServer

        server = PostgresServer(args.workdir / "pg", fast=True).start()
        dsn = server.dsn("bench")
    try:
        run(dsn, args.unit, args.year, args.rounds, args.old_tree)
    finally:
        if server is not None:
            server.stop()


def run(dsn: str, unit: str, year: int, rounds: int, old_tree: Path | None) -> None:
    from server.evaluation import privacy, rubric
    from server.evaluation.period import Period
    from server.evaluation.report import unit_report
    from server.web.services.evaluation import page_view

    workers: dict[str, subprocess.Popen[str]] = {}
    if old_tree is not None:
        env = {**os.environ, "PYTHONPATH": str(old_tree.absolute())}
        for way, extra in (("old", []), ("old-page", ["--worker-rows", str(MAX_ROWS)])):
            workers[way] = subprocess.Popen(
                [sys.executable, str(Path(__file__).absolute()), "--worker", "--dsn", dsn, "--unit", unit,
                 "--year", str(year), *extra],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=old_tree,
            )
    ways = ["page", "full", *workers]
    times: dict[str, list[float]] = {w: [] for w in ways}
    same = True
    rb, period = rubric.load(), Period.year(year)
    try:
        with psycopg.connect(dsn) as conn:
            pseudonyms = privacy.load(conn)
            conn.commit()
            print("load average at start", os.getloadavg())
            for attempt in range(rounds + 1):  # the first round warms the caches, not counted
                hashes: dict[str, str] = {}
                wholes: dict[str, str] = {}  # the full reports' JSON (what the API and the XLSX carry)
                reps = {}
                for way in ways[attempt % len(ways):] + ways[:attempt % len(ways)]:
                    if way in workers:
                        old = workers[way]
                        assert old.stdin is not None and old.stdout is not None
                        old.stdin.write("go\n")
                        old.stdin.flush()
                        answer = json.loads(old.stdout.readline())
                        took, hashes[way] = answer["s"], answer["hash"]
                        if way == "old":  # the old page's whole report is a page, not the full one
                            wholes[way] = answer["whole"]
                    else:
                        t = time.perf_counter()
                        rep = unit_report(conn, period, unit, rb, pseudonyms, now=NOW,
                                          rows=MAX_ROWS if way == "page" else None)
                        took = time.perf_counter() - t
                        conn.rollback()
                        reps[way] = rep
                        hashes[way] = view_hash(page_view(rep, MAX_ROWS))
                        if way == "full":
                            wholes[way] = view_hash(rep.as_dict())
                    if attempt:
                        times[way].append(took)
                ok = len(set(hashes.values())) == 1 and len(set(wholes.values())) == 1
                ok = ok and (reps["full"].summary, reps["full"].data) == (reps["page"].summary, reps["page"].data)
                same = same and ok
                if attempt:
                    print(f"  round {attempt}: " + ", ".join(f"{w} {times[w][-1]:.3f} s" for w in ways)
                          + f", {'IDENTICAL' if ok else 'DIFFERENT'}")
            full, page = reps["full"], reps["page"]
            for t_full, t_page in zip(full.tables, page.tables, strict=True):
                if t_page.total is not None:
                    print(f"  table {t_full.key}: {len(t_full.rows)} rows; the page's report fetched"
                          f" {len(t_page.rows)} of {t_page.total}")
    finally:
        for old in workers.values():
            assert old.stdin is not None
            old.stdin.close()
            old.wait(timeout=30)
    print(f"unit {unit}, {rounds} rounds, load average at end {os.getloadavg()}")
    for way in ways:
        v = times[way]
        print(f"  {way}: median {statistics.median(v):.3f} s (min {min(v):.3f}, max {max(v):.3f})")
    print(f"page views {' vs '.join(ways)}" + (", full reports full vs old" if old_tree else "") + ":",
          "IDENTICAL" if same else "DIFFERENT")


if __name__ == "__main__":
    main()
