"""Evidence bundle size, build and verify time: version 1 (every envelope in full) against version 2
(record stream + signed heads), on the demo's instruments for one year (bench/RESULTS.md, "Evidence").

    .venv/bin/python -m bench.evidence_size [--instruments 6] [--shape backlog|live] [--year 2025]

The records are the simulated agents' (sim/history.py, the demo's seed), sealed as the demo's
backfill does (`backlog`: 500 records an envelope, received when sent) or as a live agent does
(`live`: one record an envelope, received 0.2 s after it). Both bundles are written from the same
envelopes by the same code the server uses (server/exports/compact.py for v2), without the
database, so the figures are the format's: reading the envelopes from PostgreSQL costs both the
same. Build = compaction/packing + zip; verify = `jishi verify`'s verify_bundle (CPU seconds of
this process, and wall seconds).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

from protocols.signing import generate
from server.exports.verify import verify_bundle
from sim.catalog import INSTRUMENTS, PEOPLE
from sim.evidence import SimAgent, seal, write_v1, write_v2
from sim.history import VirtualAgent, profile
from sim.model import TZ
from sim.model import generate as truth_of

SEED = 7
MB = 1_000_000


def _timed(fn: object, *args: object) -> tuple[object, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)  # type: ignore[operator]
    return out, time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instruments", type=int, default=6)
    ap.add_argument("--shape", choices=["backlog", "live"], default="backlog")
    ap.add_argument("--year", type=int, default=2025)
    args = ap.parse_args()
    t0 = int(datetime(args.year, 1, 1, tzinfo=TZ).timestamp() * 1000)
    t1 = int(datetime(args.year + 1, 1, 1, tzinfo=TZ).timestamp() * 1000)
    period = (str(args.year), f"{args.year}-01-01T00:00:00+08:00", f"{args.year + 1}-01-01T00:00:00+08:00")
    per = 500 if args.shape == "backlog" else 1
    agents: list[SimAgent] = []
    n_records = 0
    specs = [s for s in INSTRUMENTS if s.unit_id == INSTRUMENTS[0].unit_id][: args.instruments]
    for spec in specs:
        va = VirtualAgent(f"{spec.id}-a1", spec, truth_of(spec, PEOPLE, t0, t1, SEED), profile(spec), seed=SEED)
        recs = va.run()
        key = generate()
        agents.append(SimAgent(f"{spec.id}-a1", spec.id, key,
                               seal(f"{spec.id}-a1", spec.unit_id, spec.id, key, recs, per), recs[-1]["seq"]))
        n_records += len(recs)
    n_env = sum(len(a.envelopes) for a in agents)
    print(f"load average at start {os.getloadavg()[0]:.2f}; {len(agents)} instruments, {n_records:,} records, "
          f"{n_env:,} envelopes ({args.shape}), {args.year}")
    with tempfile.TemporaryDirectory() as d:
        for version, write in ((1, write_v1), (2, write_v2)):
            path = Path(d) / f"v{version}.zip"
            kw = (path, specs[0].unit_id, *period, agents)
            if version == 2:
                _, bc, bw = _timed(lambda p, u, lb, t0, t1, ag: write_v2(p, u, lb, t0, t1, ag, expected=False), *kw)
            else:
                _, bc, bw = _timed(write, *kw)
            res, vc, vw = _timed(verify_bundle, path)
            size = path.stat().st_size
            ok = not res.problems and not any(a.problems for a in res.agents)  # type: ignore[attr-defined]
            print(f"v{version}: {size / MB:.2f} MB, {size / MB / len(agents):.2f} MB per instrument-year; "
                  f"build {bc:.1f} s CPU ({bw:.1f} s wall); verify {vc:.1f} s CPU ({vw:.1f} s wall); "
                  f"signatures and chain {'ok' if ok else 'FAILED'}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
