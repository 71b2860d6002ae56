"""Backlog drain: agents flush spools in big envelopes while ingest is down; how fast does ingest
take the backlog from the broker to committed, derived records? Compared with a plain binary COPY
of the same record rows into the same table in the same run (the ceiling).

    .venv/bin/python bench/ingest_drain.py [--agents 20] [--days 40] [--per-envelope 500] [--workers 1 2]
                                           [--old-ref REF [--rounds N]]

Everything on one host: PostgreSQL (durable: fsync on), Mosquitto and the ingest processes.
With --old-ref, the code at git REF (and its migrations) drains the same backlog too, each of
its runs next to this tree's run with the same number of processes: old and new figures from one
run, next to one ceiling, with the load average at each drain. With --rounds N each tree drains
N times, the order flipped every round (old first in the first), and the medians are compared:
on a shared virtual machine one pair of drains can differ by 10-25 % for the same code.

Each drain gives two figures, from the same run:
- "from spawn" (the figure of rounds 1-4): the clock starts when the ingest processes are spawned,
  and their CPU includes the process start (~0.4 s of imports each).
- "warm": the clock starts when the first ingest process is connected to the broker (its log's
  "connected to" line; the backlog is already queued, so messages flow from then on), and each
  process's CPU is counted from its own "connected to". Production ingest processes are
  long-running: their start is not throughput. Both are printed, so the figure is never
  redefined silently.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
import psycopg
from ingest_common import (
    DAY_MS,
    ROOT,
    SimAgent,
    checkout,
    compiled_modules,
    fresh_db,
    machine,
    services,
    start_ingest,
    stop,
    typical_day,
    wait,
    write_ingest_config,
)
from paho.mqtt.enums import CallbackAPIVersion

from protocols import topics
from server.ingest.store import copy_records
from server.store.codes import STATE_CODES, TYPE_CODES, short_hash
from server.store.times import ms_to_dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--days", type=int, default=40)
    ap.add_argument("--per-envelope", type=int, default=500)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--old-ref", help="also drain with the code at this git ref (e.g. main), interleaved")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --old-ref: drain each tree this many times, the order flipped each round "
                         "(old first, then this tree first, ...); medians and the paired ratios are printed")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an [ingest] setting for this tree's drains only (e.g. split_groups=2, "
                         "split_only_when_contended=false); repeatable")
    args = ap.parse_args()
    trees = [("this tree", ROOT)] + ([(args.old_ref, checkout(args.old_ref))] if args.old_ref else [])
    overrides: dict[str, int | str] = {k: int(v) if v.lstrip("-").isdigit() else v
                                       for k, v in (kv.split("=", 1) for kv in args.set)}
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")

    t = time.perf_counter()
    day0 = (int(time.time() * 1000) // DAY_MS - args.days - 1) * DAY_MS
    fleet = [SimAgent(f"bench-{i}", "bench-unit", f"bench-i{i}") for i in range(args.agents)]
    records = {a.agent: [r for d in range(args.days) for r in typical_day(a, day0 + d * DAY_MS)] for a in fleet}
    now = int(time.time() * 1000)
    per_agent = []
    for a in fleet:
        recs = records[a.agent]
        top = topics.topic(a.unit, a.instrument, topics.Kind.REC)
        per_agent.append([(top, a.envelope(recs[i:i + args.per_envelope], now))
                          for i in range(0, len(recs), args.per_envelope)])
    # a fleet flushing together: the agents' envelopes interleaved
    envelopes = [e for k in range(max(map(len, per_agent))) for lst in per_agent if k < len(lst) for e in [lst[k]]]
    total = sum(len(v) for v in records.values())
    size = sum(len(p) for _, p in envelopes)
    print(f"backlog: {args.agents} agents x {args.days} days = {total:,} records in {len(envelopes):,} envelopes "
          f"of {args.per_envelope} ({size / 2**20:.0f} MiB); generated and signed in {time.perf_counter() - t:.1f} s")

    with services(fast=False) as (pg, broker):
        # the median of three: one COPY of 600,000 rows varied from 316k to 406k rows/s on this box
        ceilings = [copy_ceiling(pg, fleet, records) for _ in range(3)]
        ceiling = sorted(ceilings)[1]
        print(f"ceiling: binary COPY of the same {total:,} record rows into records: {ceiling:,.0f} rows/s "
              f"(median of {', '.join(f'{c:,.0f}' for c in ceilings)})")
        for name, root in trees:
            imp = import_cpu_s(root)
            print(f"[{name}] an ingest process's imports: {imp:.2f} s CPU, in the drain's ingest CPU "
                  f"{imp / total * 1e6:.2f} us/record per process (not per record: a longer backlog dilutes it); "
                  f"compiled by mypyc: {', '.join(compiled_modules(root)) or 'none'}")
        results: dict[tuple[str, int], list[Drained]] = {}
        for w in args.workers:
            for r in range(args.rounds):
                # the old code first, then this tree; flipped every other round, so that neither
                # always has the place after the ceiling
                for name, root in (reversed(trees) if r % 2 == 0 else trees):
                    load = os.getloadavg()[0]
                    d = drain(pg, broker, fleet, envelopes, total, w, root, overrides if root == ROOT else {})
                    results.setdefault((name, w), []).append(d)
                    report(name, w, d, load, ceiling)
        for name, _ in trees:
            if (name, 1) in results and (name, 2) in results:
                one, two = median_of(results[name, 1]), median_of(results[name, 2])
                print(f"[{name}] two workers vs one: x{two.rate / one.rate:.2f} from spawn, "
                      f"x{two.warm_rate / one.warm_rate:.2f} warm")
        if args.old_ref:
            for w in args.workers:
                news, olds = results["this tree", w], results[args.old_ref, w]
                new_d, old_d = median_of(news), median_of(olds)
                pairs = " ".join(f"x{n.warm_rate / o.warm_rate:.2f}" for n, o in zip(news, olds, strict=True))
                each = f"median of {args.rounds} each" if args.rounds > 1 else "one each"
                print(f"{w} process(es), {each}: "
                      f"this tree / {args.old_ref} = x{new_d.rate / old_d.rate:.2f} from spawn, "
                      f"x{new_d.warm_rate / old_d.warm_rate:.2f} warm ({new_d.warm_rate / ceiling:.1%} against "
                      f"{old_d.warm_rate / ceiling:.1%} of the ceiling); CPU per record (warm, in all) "
                      f"{old_d.warm_us_ingest + old_d.us_pg:.2f} -> {new_d.warm_us_ingest + new_d.us_pg:.2f} us"
                      + (f"; warm ratio round by round: {pairs}" if args.rounds > 1 else ""))
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for _, root in trees[1:]:
        shutil.rmtree(root, ignore_errors=True)


def report(name: str, w: int, d: Drained, load: float, ceiling: float) -> None:
    print(f"[{name}] drain with {w} ingest process(es), load average {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; records stored twice: {d.dups}\n"
          f"    from spawn: {d.rate:,.0f} records/s end to end ({d.steady:,.0f}/s from first commit), "
          f"{d.rate / ceiling:.1%} of the COPY ceiling; CPU per record: ingest {d.us_ingest:.2f} us + "
          f"its PostgreSQL backends {d.us_pg:.2f} us = {d.us_ingest + d.us_pg:.2f} us\n"
          f"    warm:       {d.warm_rate:,.0f} records/s from connected, {d.warm_rate / ceiling:.1%} of "
          f"the COPY ceiling; CPU per record: ingest {d.warm_us_ingest:.2f} us + backends "
          f"{d.us_pg:.2f} us = {d.warm_us_ingest + d.us_pg:.2f} us (start: {d.start_s:.2f} s to "
          f"connected, {d.start_cpu_s:.2f} s CPU in all); Mosquitto {d.us_broker:.2f} us per record; "
          f"ingest CPU split over the processes: {' / '.join(f'{x:.0%}' for x in d.split)}; "
          f"cores busy (ingest + backends + Mosquitto, warm): "
          f"{(d.warm_us_ingest + d.us_pg + d.us_broker) * d.warm_rate / 1e6:.2f} of {os.cpu_count()}",
          flush=True)


def median_of(runs: list[Drained]) -> Drained:
    """The run with the median warm rate (the lower middle one of an even number)."""
    return sorted(runs, key=lambda d: d.warm_rate)[(len(runs) - 1) // 2]


def copy_ceiling(pg: Any, fleet: list[SimAgent], records: dict[str, list[dict[str, Any]]]) -> float:
    dsn = fresh_db(pg, "bench_ceiling")
    with psycopg.connect(dsn, autocommit=True) as conn:
        nos = {}
        for a in fleet:
            a.register(conn)
            nos[a.agent] = conn.execute("INSERT INTO agent_progress (agent_id) VALUES (%s) RETURNING agent_no",
                                        (a.agent,)).fetchone()[0]  # type: ignore[index]
        rows = [(ms_to_dt(r["t"]), r["seq"], 1, short_hash("0" * 16), nos[aid], TYPE_CODES[r["type"]],
                 STATE_CODES[r["state"]] if r["type"] in ("state", "heartbeat") else None)
                for aid, recs in records.items() for r in recs]
        checkpoint(conn)
        t = time.perf_counter()
        with conn.transaction():
            copy_records(conn, rows)
        return len(rows) / (time.perf_counter() - t)


def checkpoint(conn: psycopg.Connection[Any]) -> None:
    """Every run starts right after a checkpoint, so that none pays for the WAL of the run before
    it (the ceiling's COPY, the previous drain) with a checkpoint in its middle, after which its
    backends write each page's first change whole into the WAL."""
    conn.execute("CHECKPOINT")


class Drained(NamedTuple):
    rate: float
    """records/s from spawning the ingest processes to the last record derived (rounds 1-4's figure)"""
    steady: float
    """records/s from the first commit"""
    warm_rate: float
    """records/s from the first ingest process connected to the broker (backlog queued)"""
    dups: int
    us_ingest: float
    """CPU us per record of the ingest processes, process start included"""
    warm_us_ingest: float
    """the same, each process counted from its "connected to" (its start left out)"""
    us_pg: float
    """CPU us per record of the ingest processes' PostgreSQL backends"""
    us_broker: float
    """CPU us per record of Mosquitto from spawn to done (delivering the backlog; not in the sums)"""
    start_s: float
    """seconds from spawn to the first process connected"""
    start_cpu_s: float
    """CPU seconds of the processes up to their "connected to", all of them"""
    split: tuple[float, ...]
    """each ingest process's share of the ingest CPU after its start (how evenly the broker's
    shared subscription spread the backlog over the processes)"""


def drain(pg: object, broker: object, fleet: list[SimAgent], envelopes: list[tuple[str, bytes]], total: int,
          workers: int, root: Path = ROOT, settings: dict[str, int | str] | None = None) -> Drained:
    """Drain the backlog with `workers` ingest processes of the code at `root`: records/s end to end
    (from spawn and warm) and from the first commit, records stored twice, and CPU per record (us) of
    the ingest processes and of their PostgreSQL backends (less sensitive to a loaded box than the rates)."""
    dsn = fresh_db(pg, f"bench_drain{workers}", root)  # type: ignore[arg-type]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for a in fleet:
            a.register(conn)
        checkpoint(conn)
    tmp = Path(tempfile.mkdtemp(prefix="jishi-drain-"))
    group = f"drain{workers}-{int(time.time())}"
    configs = [write_ingest_config(tmp / f"w{k}.toml", dsn, broker, f"{group}-w{k}", group,  # type: ignore[arg-type]
                                   **{"batch_max_messages": 40, **(settings or {})}) for k in range(workers)]
    # create the persistent sessions, then stop ingest: the backlog queues in the broker. Wait
    # until each process has subscribed (a fixed sleep was too short on a loaded box: the
    # backlog then went to a group without members and was dropped)
    for c in configs:
        c.write_text(c.read_text().replace('log_level = "WARNING"', 'log_level = "INFO"'))
    procs = [start_ingest(c, tmp / f"w{k}.log", root) for k, c in enumerate(configs)]
    try:
        wait(lambda: all("subscribed to" in (tmp / f"w{k}.log").read_text() for k in range(workers)), 300)
    finally:
        for p in procs:
            stop(p)
    # the drain keeps INFO (a handful of lines): its "connected to" line is the warm clock's start
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{group}-pub", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(200)
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)  # type: ignore[attr-defined]
    pub.loop_start()
    infos = [pub.publish(tp, p, qos=1) for tp, p in envelopes]
    for i in infos:
        i.wait_for_publish(300)
    pub.loop_stop()
    pub.disconnect()
    time.sleep(1)

    with psycopg.connect(dsn, autocommit=True) as conn:
        def stored() -> int:
            return int(conn.execute("SELECT coalesce(sum(derived_seq), 0) FROM agent_progress").fetchone()[0])  # type: ignore[index]

        logs = [tmp / f"w{k}.drain.log" for k in range(workers)]
        broker_pid = broker.proc.pid  # type: ignore[attr-defined]
        broker0 = cpu_s(broker_pid)
        t0 = time.monotonic()
        procs = [start_ingest(c, logs[k], root) for k, c in enumerate(configs)]
        try:
            # each process's "connected to": its time and its CPU so far (its start), polled every 5 ms
            ready: dict[int, tuple[float, float]] = {}
            first = None
            deadline = t0 + 300
            while len(ready) < workers or first is None:
                for k, p in enumerate(procs):
                    if k not in ready and "connected to" in logs[k].read_text():
                        ready[k] = (time.monotonic(), cpu_s(p.pid))
                if first is None and stored() > 0:
                    first = time.monotonic()
                if time.monotonic() > deadline:
                    raise TimeoutError("the ingest processes did not connect and commit")
                time.sleep(0.005)
            done = wait(lambda: stored() >= total, 1200, every=0.05)
            backends = [int(r[0]) for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'jishi-ingest%'").fetchall()]
            each = [cpu_s(p.pid) - ready[k][1] for k, p in enumerate(procs)]
            cpu = (sum(map(cpu_s, (p.pid for p in procs))), sum(map(cpu_s, backends)), cpu_s(broker_pid) - broker0)
        finally:  # also when a condition times out: never leave ingest processes behind
            for p in procs:
                stop(p)
        dups = conn.execute("SELECT count(*) - count(DISTINCT (agent_no, seq)) FROM records").fetchone()[0]  # type: ignore[index]
        n = conn.execute("SELECT count(*) FROM records").fetchone()[0]  # type: ignore[index]
        assert n == total, f"stored {n} of {total}"
    warm_t0 = min(t for t, _ in ready.values())
    start_cpu = sum(c for _, c in ready.values())
    return Drained(total / (done - t0), total / (done - first), total / (done - warm_t0), int(dups),
                   cpu[0] / total * 1e6, (cpu[0] - start_cpu) / total * 1e6, cpu[1] / total * 1e6,
                   cpu[2] / total * 1e6, warm_t0 - t0, start_cpu, tuple(c / (sum(each) or 1) for c in each))


def import_cpu_s(root: Path, runs: int = 3) -> float:
    """CPU seconds of importing what `jishi-server ingest` imports before its first message
    (the fixed start cost inside the drain's ingest CPU), the least of `runs` fresh processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JISHI_")} | {"PYTHONPATH": str(root)}
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "import server.cli, server.ingest.service"], env=env, cwd=root,
                       check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (the drain's processes and backends are local)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
