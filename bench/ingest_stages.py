"""Where a record's time goes, stage by stage: ingest's Python and what PostgreSQL spends on it.

    .venv/bin/python bench/ingest_stages.py [--agents 10] [--days 30] [--batch 40] [--sql SQL]
    BENCH_CODE=/path/to/an/older/checkout .venv/bin/python bench/ingest_stages.py   # its code and migrations

The backlog of bench/ingest_drain.py (envelopes of 500 records) is opened stage by stage (the
pure checks of the "open" thread, each stage timed on its own over all envelopes), then run
through `Pipeline.process` in batches of `--batch` envelopes against a durable PostgreSQL with
the database thread's steps wrapped: for each, the Python thread's CPU, the PostgreSQL
backend's CPU (/proc/<pid>/schedstat, ns) and wall time. "commit + rest" is the transaction's
end plus everything not wrapped; "other PostgreSQL processes" is the WAL writer, checkpointer
and background workers over the whole database phase. No broker: MQTT receive is measured by
bench/ingest_drain.py (ingest's CPU there minus this).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import os
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("BENCH_CODE") or str(Path(__file__).resolve().parents[1]))

import orjson
import psycopg
from ingest_common import SimAgent, backlog_envelopes, compiled_modules, fresh_db, machine, sched_s, services

from protocols import fastcheck
from protocols.canonical import dumps_sorted
from protocols.validate import check_records, open_envelope
from server.config import Settings
from server.ingest import worker as worker_mod
from server.ingest.book import Book

try:
    from server.ingest.service import GC_THRESHOLDS
except ImportError:  # older code: what its `jishi-server ingest` set
    GC_THRESHOLDS = (50_000, 20, 100)
from server.ingest.verify import Incoming, Opening, Refused, open_any
from server.ingest.worker import Pipeline

STAGES: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # thread CPU, backend CPU, wall (s)
_backend_pid = 0


def postgres_others(postmaster: int, backend: int) -> float:
    """CPU of every child of the postmaster but our backend (WAL writer, checkpointer, ...)."""
    total = 0.0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == backend:
            continue
        try:
            if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                total += sched_s(int(p.name))
        except (OSError, ValueError):
            continue
    return total


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        c, b, w = time.thread_time(), sched_s(_backend_pid), time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            s = STAGES[name]
            s[0] += time.thread_time() - c
            s[1] += sched_s(_backend_pid) - b
            s[2] += time.perf_counter() - w
    return wrapper


def wrap_pipeline() -> list[str]:
    """Wrap the database thread's steps; returns those that could not be wrapped. A class compiled by
    mypyc (bench/mypyc_tree.sh) refuses new methods; a call inside a compiled group goes straight to
    the callee, so its wrapper sees nothing: the totals (database phase, backend) stay exact."""
    w: Any = worker_mod  # patched in place: the names the pipeline calls
    q = w.queries
    refused: list[str] = []

    def wrap(obj: Any, name: str, label: str) -> None:
        try:
            setattr(obj, name, timed(label, getattr(obj, name)))
        except (TypeError, AttributeError):
            refused.append(f"{getattr(obj, '__name__', obj)}.{name}")

    for name in ("registry_for", "lock_progress", "gaps_of", "stored_hashes", "next_envelope_ids", "insert_gaps",
                 "save_progress"):
        wrap(q, name, f"db: {name}")
    wrap(w, "authenticate", "signature + registry checks")
    wrap(w, "copy_envelopes", "COPY envelopes (raw bytes)")
    for name in ("copy_records_binary", "packed_record_rows", "copy_packed_records",  # older code: the first
                 "finish_rows", "copy_prepared_records"):  # ingest10: rows prepared in the open thread
        if hasattr(w, name):
            wrap(w, name, "COPY records (build rows + COPY)")
    wrap(Book, "judge", "book: judge")
    wrap(Book, "accept", "book: accept")
    wrap(Book, "settle", "book: settle")
    wrap(w.incremental, "advance", "derive: advance (Python + reads)")
    wrap(w.incremental, "write_many", "derive: write_many (upserts)")
    wrap(w.live, "rows_after_derivation", "live state")
    wrap(w.quarantine, "record", "quarantine/future/energy")
    for name in ("upsert_sessions", "upsert_segments", "upsert_coverage"):
        wrap(q, name, f"  derive upsert: {name}")
    wrap(Pipeline, "_derive", "derive: all (Rec per record, advance)")
    wrap(Pipeline, "_write_new", "write new (rows, both COPYs)")
    wrap(w.future, "flag", "future flag")
    return refused


TOP: tuple[str, ...] = (
       "registry_for", "lock_progress", "gaps_of", "stored_hashes", "next_envelope_ids", "insert_gaps", "save_progress",
       "signature + registry checks", "book: judge", "book: accept", "book: settle", "derive: write_many (upserts)",
       "live state", "quarantine/future/energy", "derive: all (Rec per record, advance)",
       "write new (rows, both COPYs)", "future flag")
TOP = tuple(f"db: {k}" if k[0].islower() and " " not in k else k for k in TOP)


def open_stages(msgs: list[Incoming]) -> dict[str, float]:
    """Each step of opening, timed over all envelopes (CPU s): the reference way (dicts), and the
    way the tree's ingest opens since "typed" (validate.open_typed) after it."""
    out: dict[str, float] = {}
    payloads = [m.payload for m in msgs]

    def timed(label: str, step: Callable[[], Any]) -> Any:
        t = time.process_time()
        result = step()
        out[label] = time.process_time() - t
        return result

    def records_of(bodies: list[Any]) -> list[list[str]]:
        try:
            return [check_records(None, b, p) for b, p in zip(bodies, payloads, strict=True)]
        except TypeError:  # older code: no wire bytes to slice
            return [check_records(None, b) for b in bodies]

    bodies = timed("dicts: orjson parse", lambda: [orjson.loads(p) for p in payloads])
    assert timed("dicts: canonical check (encode whole body, compare)",
                 lambda: all(dumps_sorted(b) == p for b, p in zip(bodies, payloads, strict=True)))
    assert timed("dicts: schema (fastcheck structs)", lambda: all(map(fastcheck.accepts, bodies)))
    timed("dicts: record hashes + own chain (check_records)", lambda: records_of(bodies))
    timed("dicts:   of which: encode + SHA-256 per record",
          lambda: [hashlib.sha256(dumps_sorted(r)).hexdigest() for b in bodies for r in b["records"]])
    timed("dicts: open_envelope (parse+canonical+types+schema)",  # each dropped at once, as before "typed"
          lambda: all(open_envelope(p, defer_records=True) for p in payloads))
    bodies.clear()
    if hasattr(fastcheck, "decode"):
        from protocols.validate import open_typed
        from server.ingest.prepared import prepare
        envs = timed("typed: msgspec decode into structs", lambda: [fastcheck._decode(p) for p in payloads])
        assert timed("typed: canonical check (encode again sorted, compare)",
                     lambda: all(fastcheck._encode_sorted(e) == p for e, p in zip(envs, payloads, strict=True)))
        assert timed("typed: string checks (fastcheck._sound)", lambda: all(map(fastcheck._sound, envs)))
        opened = timed("typed: open_typed (the three above)", lambda: [open_typed(p) for p in payloads])
        hashes = timed("typed: record hashes + own chain (check_records)", lambda: records_of([o.body for o in opened]))
        timed("typed: prepare (Recs and COPY rows)",
              lambda: [prepare(o.body["records"], h, 0) for o, h in zip(opened, hashes, strict=True)])
    return out


def main() -> None:
    global _backend_pid
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--gc", default=",".join(map(str, GC_THRESHOLDS)),
                    help="gc thresholds (default: as `jishi-server ingest` sets them), or 'off'")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="cProfile the database phase instead of timing it; print the N top functions by own time")
    ap.add_argument("--sql", default="", help="run this SQL on the fresh database first (to try a server-side lever)")
    args = ap.parse_args()
    if args.gc == "off":
        gc.disable()
    else:
        gc.set_threshold(*map(int, args.gc.split(",")))
    gc.freeze()
    gc_s = [0.0, 0.0]  # time in collections, and the start of the current one
    gc.callbacks.append(lambda phase, info: gc_s.__setitem__(1, time.thread_time()) if phase == "start"
                        else gc_s.__setitem__(0, gc_s[0] + time.thread_time() - gc_s[1]))
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    code = Path(sys.path[0])
    print(f"code: {code}; compiled by mypyc: {', '.join(compiled_modules(code)) or 'none'}")
    fleet = [SimAgent(f"bench-{i}", "bench-unit", f"bench-i{i}") for i in range(args.agents)]
    envs = backlog_envelopes(fleet, args.days)
    msgs = [Incoming(t, p, time.time(), i) for i, (t, p) in enumerate(envs)]

    stages = open_stages(msgs)
    t = time.process_time()
    opened: list[Opening | Refused] = [open_any(m) for m in msgs]
    t_open = time.process_time() - t
    total = sum(len(o.body["records"]) for o in opened if isinstance(o, Opening))
    print(f"{total:,} records in {len(msgs):,} envelopes ({sum(map(len, (m.payload for m in msgs))) / total:.0f}"
          " B/record on the wire)")
    print("\nopen thread (pure checks), us CPU per record")
    for k, v in stages.items():
        print(f"  {k:<52} {v / total * 1e6:6.2f}")
    print(f"  {'open_any, all of it':<52} {t_open / total * 1e6:6.2f}")

    with services(fast=False) as (pg, _broker):
        dsn = fresh_db(pg, "stages")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for a in fleet:
                a.register(conn)
            if args.sql:
                conn.execute(args.sql)
                # e.g. auto_explain with log_level = 'notice': the plans of slow statements, here
                conn.add_notice_handler(lambda d: print(f"NOTICE: {d.message_primary}"))
            pipe = Pipeline(Settings(), "stages")
            _backend_pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            postmaster = int(Path(f"/proc/{_backend_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            refused = wrap_pipeline()
            if refused:
                print(f"not wrapped (compiled classes): {', '.join(refused)}")
            o0 = postgres_others(postmaster, _backend_pid)
            c0, b0, w0 = time.thread_time(), sched_s(_backend_pid), time.perf_counter()
            prof = cProfile.Profile() if args.profile else None
            if prof is not None:
                prof.enable()
            for i in range(0, len(msgs), args.batch):
                pipe.process(conn, msgs[i:i + args.batch], opened[i:i + args.batch])
            if prof is not None:
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
            c, b, w = time.thread_time() - c0, sched_s(_backend_pid) - b0, time.perf_counter() - w0
            others = postgres_others(postmaster, _backend_pid) - o0
            n = int(conn.execute("SELECT count(*) FROM records").fetchone()[0])  # type: ignore[index]
            assert n == total, f"stored {n} of {total}"
            ratio = conn.execute("SELECT sum(pg_column_size(raw))::float / sum(octet_length(raw)) FROM envelopes"
                                 ).fetchone()[0]  # type: ignore[index]
            conn.execute("SELECT pg_stat_force_next_flush()")
            funcs = conn.execute("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions"
                                 " ORDER BY total_time DESC LIMIT 12").fetchall()
    print("\ndatabase thread, us per record          Python CPU   PostgreSQL backend CPU   wall")
    for k, (sc, sb, sw) in sorted(STAGES.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        print(f"  {k:<40} {sc / n * 1e6:8.2f}   {sb / n * 1e6:8.2f}               {sw / n * 1e6:8.2f}")
    wrapped = [v for k, v in STAGES.items() if k in TOP]
    rc = c - sum(s[0] for s in wrapped)
    rb = b - sum(s[1] for s in wrapped)
    rw = w - sum(s[2] for s in wrapped)
    print(f"  {'commit + rest (not wrapped)':<40} {rc / n * 1e6:8.2f}   {rb / n * 1e6:8.2f}               "
          f"{rw / n * 1e6:8.2f}")
    print(f"  {'TOTAL database phase':<40} {c / n * 1e6:8.2f}   {b / n * 1e6:8.2f}               {w / n * 1e6:8.2f}")
    print(f"other PostgreSQL processes (WAL writer, checkpointer, ...): {others / n * 1e6:.2f} us CPU/record")
    print(f"all in all: open {t_open / n * 1e6:.2f} + database thread {c / n * 1e6:.2f} + backend "
          f"{b / n * 1e6:.2f} + other PostgreSQL {others / n * 1e6:.2f} = "
          f"{(t_open + c + b + others) / n * 1e6:.2f} us CPU/record")
    print(f"garbage collector (gc {args.gc}), all phases: {gc_s[0] / n * 1e6:.2f} us CPU/record")
    print(f"envelopes.raw as stored / as received: {ratio:.2f}")
    if funcs:
        print("trigger and SQL functions (track_functions = 'pl'), us per record: total / self, calls")
        for name, calls, tot, own in funcs:
            print(f"  {name:<50} {tot * 1000 / n:6.2f} / {own * 1000 / n:6.2f}  {calls:,}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
