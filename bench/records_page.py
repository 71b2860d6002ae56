"""The reconciliation statements of one unit's report page alone (issue 17, report7): an old tree's
`RECORDS_PAGE` against this tree's `RECORDS_PAGE` + `RECORDS_BY_ID`, interleaved, with the load
average; each round checks that both give the same rows (the page's records and every total).

    mkdir -p /tmp/r7-old && git archive a58e39e | tar -x -C /tmp/r7-old
    python bench/records_page.py --workdir /tmp/jishi-s3/eval-r5k --old-tree /tmp/r7-old [--rounds 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, required=True, help="a kept cluster of bench/evaluation_region.py")
    ap.add_argument("--old-tree", type=Path, required=True, help="a tree whose RECORDS_PAGE is one statement")
    ap.add_argument("--unit", default="U1")
    ap.add_argument("--year", type=int, default=2025)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()

    from server.evaluation import reconciliation as new
    from server.evaluation.indicators import params, tune
    from server.evaluation.period import Period
    from sim.devstack import PostgresServer

    spec = importlib.util.spec_from_file_location("old_reconciliation",
                                                  args.old_tree / "server/evaluation/reconciliation.py")
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)

    p = params(Period.year(args.year), [args.unit]) | {"tol": 0.5, "top": 200, "unit": args.unit, "rows": 200,
                                                       "offset": 0}
    server = PostgresServer(args.workdir / "pg", fast=True).start()
    times: dict[str, list[float]] = {"old": [], "new": []}
    same = True
    try:
        with psycopg.connect(server.dsn("bench")) as conn:
            tune(conn)  # the evaluation's session settings (jit off, work_mem, no memoize)
            print("load average at start", os.getloadavg())
            for attempt in range(args.rounds + 1):  # the first round warms the caches
                got: dict[str, Any] = {}
                for way in ("old", "new") if attempt % 2 else ("new", "old"):
                    t = time.perf_counter()
                    if way == "old":
                        rows = conn.execute(old.RECORDS_PAGE, p).fetchall()
                        records = [r[1:29] for r in rows if r[0] == "r"]
                        totals = sorted((r[0], r[2], r[3] or "", r[7], r[20], r[21], r[26], r[28], *r[29:36])
                                        for r in rows if r[0] != "r")
                    else:
                        rows = conn.execute(new.RECORDS_PAGE, p).fetchall()
                        ids = [r[1] for r in rows if r[0] == "r"]
                        records = [r[:28] for r in conn.execute(new.RECORDS_BY_ID, p | {"ids": ids}).fetchall()]
                        totals = sorted((r[0], r[2], r[3] or "", *r[4:9], *r[9:16]) for r in rows if r[0] != "r")
                    took = time.perf_counter() - t
                    got[way] = (records, totals)
                    if attempt:
                        times[way].append(took)
                ok = got["old"] == got["new"]
                same = same and ok
                if attempt:
                    print(f"  round {attempt}: old {times['old'][-1]:.4f} s, new {times['new'][-1]:.4f} s,"
                          f" {'IDENTICAL' if ok else 'DIFFERENT'}")
    finally:
        server.stop()
    print(f"unit {args.unit}, {args.rounds} rounds, load average at end {os.getloadavg()}")
    for way, v in times.items():
        print(f"  {way}: median {statistics.median(v):.4f} s (min {min(v):.4f}, max {max(v):.4f})")
    print("records and totals old vs new:", "IDENTICAL" if same else "DIFFERENT")


if __name__ == "__main__":
    main()
