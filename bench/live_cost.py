"""Where a live envelope's time goes in ingest: many instruments, one small envelope each.

    .venv/bin/python bench/live_cost.py [--instruments 5000] [--batches 1,10,50,500]

5,000 registered instruments in 50 units; every instrument sends one signed single-record
envelope per round (a heartbeat, a tenth of them a state change first: the live load of
bench/board_live.py). Round 0 (each agent's first envelope: creates its progress row) is not
measured. Each later round goes through the ingest's two phases with no broker: `open_any` (the
"open" thread: parse, schema, hashes) and `Pipeline.process` (the database thread: registry,
signature, progress locks, COPY, derive, live state + NOTIFY, commit) in transactions of
`--batches` envelopes, against a durable PostgreSQL. Printed per envelope: wall time of each
phase, CPU of the process and of its PostgreSQL backend, and a split of the database phase by
step (cProfile's cumulative times, scaled to the unprofiled wall time). A LISTEN follower on
another connection counts the notifications, and the web's tile read (server/web/services/board.py
`_TILES_BY[False, True]`, the hub's read by id) is timed for 1, 50 and 500 changed instruments.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from ingest_common import SimAgent, fresh_db, machine, register_fleet, services

from protocols import topics
from server.config import Settings
from server.ingest.verify import Incoming, Opening, Refused, open_any
from server.ingest.worker import Pipeline

UNITS = 50
# (label, function names whose cumulative time makes the step); first match wins per call
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("registry + signature (authenticate)", ("registry_for", "authenticate")),
    ("progress locks + gaps", ("_load_books",)),
    ("dedupe look-up (stored_hashes)", ("stored_hashes",)),
    ("judge + book", ("judge", "accept", "settle")),
    ("COPY envelopes + records", ("_write_new",)),
    ("derive + write derived rows", ("_derive", "write_many", "insert_gaps")),
    ("live state upsert + NOTIFY", ("rows_after_derivation", "set_online")),
    ("save progress", ("save_progress",)),
    ("quarantine/future/energy", ("record",)),
    ("commit", ("__exit__",)),
]


def register(dsn: str, fleet: list[SimAgent]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        register_fleet(conn, fleet)


def one_round(fleet: list[SimAgent], rnd: int, t0: int, rng: random.Random) -> list[Incoming]:
    """One envelope per instrument, in a random order, as the broker would interleave them."""
    order = list(range(len(fleet)))
    rng.shuffle(order)
    msgs = []
    for k, i in enumerate(order):
        a = fleet[i]
        t = t0 + rnd * 10_000 + k
        recs = []
        if rnd % 10 == i % 10:
            recs.append(a.record(t, "state", state="running" if rnd % 20 < 10 else "idle", prev_state="idle",
                                 rule="bench", evidence={}))
        recs.append(a.record(t, "heartbeat", state="idle", period_ms=10_000, evidence={}))
        msgs.append(Incoming(topics.topic(a.unit, a.instrument, topics.Kind.REC), a.envelope(recs, t), t / 1000, k))
    return msgs


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steps_of(prof: cProfile.Profile) -> dict[str, float]:
    st: Any = vars(pstats.Stats(prof))["stats"]  # (file, line, name) -> (cc, nc, tt, ct, callers)
    out: dict[str, float] = {}
    for label, names in STEPS:
        total = 0.0
        for (file, _line, name), (_cc, _nc, _tt, ct, callers) in st.items():
            if name not in names:
                continue
            if label.startswith("commit"):
                # the transaction's __exit__ called from Pipeline.process is the COMMIT
                total += sum(v[3] for (f, _l, n), v in callers.items() if n == "process")
                continue
            if label.startswith("quarantine") and not any(p in file for p in ("quarantine", "future", "energy")):
                continue
            if label.startswith("commit") or not any(p in file for p in ("server", "protocols")):
                continue
            total += ct
        out[label] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=5000)
    ap.add_argument("--batches", default="1,10,50,500", help="envelopes per transaction, one round each")
    ap.add_argument("--profile", action="store_true", help="also print the top functions of the last batch size")
    args = ap.parse_args()
    batches = [int(x) for x in args.batches.split(",")]
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    fleet = [SimAgent(f"live-{i}", f"lu{i % UNITS}", f"li{i}") for i in range(args.instruments)]
    rng = random.Random(1)
    t0 = int(time.time() * 1000) - 3_600_000
    rounds = [one_round(fleet, r, t0, rng) for r in range(1 + 2 * len(batches))]
    with services(fast=False) as (pg, _broker):
        dsn = fresh_db(pg, "live_cost")
        register(dsn, fleet)
        with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn, autocommit=True) as follower:
            follower.execute("LISTEN jishi_live")
            pipe = Pipeline(Settings(), "cost")
            pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            first = rounds[0]
            pipe.process(conn, first, [open_any(m) for m in first])  # progress rows: not measured
            sum(1 for _ in follower.notifies(timeout=0.5))
            print(f"{args.instruments} instruments, {len(first)} single-envelope messages per round"
                  " (a tenth with a state change); per envelope:")
            print(f"{'batch':>6} {'open us':>8} {'db wall us':>11} {'db cpu us':>10} {'pg cpu us':>10}"
                  f" {'tx/s':>7} {'notifies':>9}")
            split: dict[int, dict[str, float]] = {}
            for k, b in enumerate(batches):
                msgs = rounds[1 + 2 * k]
                t = time.process_time()
                opened: list[Opening | Refused] = [open_any(m) for m in msgs]
                t_open = time.process_time() - t
                assert all(isinstance(o, Opening) for o in opened)
                b0, c0, w0 = backend_cpu(pid), time.process_time(), time.perf_counter()
                for i in range(0, len(msgs), b):
                    pipe.process(conn, msgs[i:i + b], opened[i:i + b])
                wall, cpu, bcpu = time.perf_counter() - w0, time.process_time() - c0, backend_cpu(pid) - b0
                notes = sum(1 for _ in follower.notifies(timeout=0.5))
                n = len(msgs)
                print(f"{b:>6} {t_open / n * 1e6:>8.0f} {wall / n * 1e6:>11.0f} {cpu / n * 1e6:>10.0f}"
                      f" {bcpu / n * 1e6:>10.0f} {n / b / wall:>7.0f} {notes:>9}")
                # the profiled round (the next one) only for the split of the database phase
                msgs = rounds[2 + 2 * k]
                opened = [open_any(m) for m in msgs]
                prof = cProfile.Profile()
                w1 = time.perf_counter()
                prof.enable()
                for i in range(0, len(msgs), b):
                    pipe.process(conn, msgs[i:i + b], opened[i:i + b])
                prof.disable()
                pw = time.perf_counter() - w1
                sum(1 for _ in follower.notifies(timeout=0.5))
                split[b] = {s: v / pw * wall / n * 1e6 for s, v in steps_of(prof).items()}
                last_prof = prof
            print("\nsplit of the database phase, us per envelope (cProfile cumulative, scaled to the unprofiled"
                  " wall time):")
            print(f"{'step':<40}" + "".join(f"{b:>9}" for b in batches))
            for label, _ in STEPS:
                print(f"{label:<40}" + "".join(f"{split[b][label]:>9.0f}" for b in batches))
            if args.profile:
                pstats.Stats(last_prof).sort_stats("tottime").print_stats(30)
            from server.web.services import board

            changed = [a.instrument for i, a in enumerate(fleet) if i % 10 == 3]
            # as the hub's own connection does: psycopg prepares a query after 5 runs, then the
            # server may use a generic plan; the last 5 of 10 runs are timed
            queries_ = [("_TILES_BY[False, True]", board._TILES_BY[False, True].encode(), False)]
            for size in (1, 50, 500):
                ids = sorted(changed[:size])
                for label, sql, with_unit in queries_:
                    with psycopg.connect(dsn, autocommit=True) as c:
                        params: dict[str, Any] = {"u": None, "ids": ids} if with_unit else {"ids": ids}
                        times = []
                        for _ in range(10):
                            w = time.perf_counter()
                            got = c.execute(sql, params).fetchall()
                            times.append(time.perf_counter() - w)
                        assert len(got) == size
                    print(f"web tile read of {size:>3} changed instruments, {label:<26}: "
                          f"{sorted(times[5:])[2] * 1000:.1f} ms (median of runs 6-10)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
