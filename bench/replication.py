"""What synchronous replication costs ingest, and what asynchronous replication loses on failover.

    .venv/bin/python bench/replication.py [--agents 20] [--days 10] [--rounds 2] [--kills 3] [--commits 2000]

One run, one replicated PostgreSQL+TimescaleDB (sim/pgha.py: primary 'a' and hot standby 'b' on
loopback, durable: fsync on) and one Mosquitto:

0. the bare cost: one-row COMMITs on the primary, timed with the standby synchronous and
   asynchronous, alternately `--rounds` times.
1. throughput: the same backlog drained by one ingest process with the standby synchronous
   (COMMIT waits for the standby's flush: HA mode) and asynchronous, alternately `--rounds` times
   (the machine is shared: alternation evens out its load). Two shapes: a backlog flushed in big
   envelopes (500 records), and live traffic (1 record per envelope, a commit every few messages).
2. failover: `--kills` times per mode, the primary is killed (SIGKILL, every process) while 20
   agents stream records, the standby is promoted, and the acks the agents had received are
   checked against what the promoted standby holds: acked records lost.

Only loopback: the synchronous round trip here is far shorter than between two machines (add the
network's round trip per COMMIT; docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import paho.mqtt.client as mqtt
import psycopg
from ingest_common import DAY_MS, SimAgent, machine, start_ingest, stop, typical_day, wait, write_ingest_config
from paho.mqtt.enums import CallbackAPIVersion

from protocols import topics
from server.db.migrate import apply
from server.ingest.service import Ingest
from sim.devstack import MosquittoServer
from sim.pgha import PgCluster
from tests.server.helpers import Publisher, TestAgent, register, settings_for

MODES = ("sync", "async")


def cluster(root: Path, name: str) -> PgCluster:
    c = PgCluster(root / name, fast=False)
    c.start_primary("a")
    c.add_standby("b", "a", synchronous=True)
    return c


def set_mode(c: PgCluster, mode: str) -> None:
    c.set_synchronous("a", ["b"] if mode == "sync" else [])


# -- the bare cost: one COMMIT ------------------------------------------------------------------------


def commit_latency(c: PgCluster, n: int) -> tuple[float, float]:
    """Median and 99th percentile (ms) of a one-row INSERT's COMMIT on the primary: the round trip
    synchronous replication adds (WAL to the standby, its flush, its reply), without ingest around it."""
    times: list[float] = []
    with psycopg.connect(c.nodes["a"].dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS commit_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        for _ in range(n):
            t = time.perf_counter()
            conn.execute("INSERT INTO commit_probe DEFAULT VALUES")
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]


# -- throughput -------------------------------------------------------------------------------------


def backlog(agents: int, days: int, per_envelope: int) -> tuple[list[SimAgent], list[tuple[str, bytes]], int]:
    day0 = (int(time.time() * 1000) // DAY_MS - days - 1) * DAY_MS
    fleet = [SimAgent(f"rep-{i}", "rep-unit", f"rep-i{i}") for i in range(agents)]
    now = int(time.time() * 1000)
    per_agent = []
    total = 0
    for a in fleet:
        recs = [r for d in range(days) for r in typical_day(a, day0 + d * DAY_MS)]
        total += len(recs)
        top = topics.topic(a.unit, a.instrument, topics.Kind.REC)
        per_agent.append([(top, a.envelope(recs[i:i + per_envelope], now)) for i in range(0, len(recs), per_envelope)])
    envelopes = [lst[k] for k in range(max(map(len, per_agent))) for lst in per_agent if k < len(lst)]
    return fleet, envelopes, total


def drain(c: PgCluster, broker: MosquittoServer, fleet: list[SimAgent], envelopes: list[tuple[str, bytes]],
          total: int, label: str, work: Path, batch_max_messages: int) -> float:
    """Queue the backlog in ingest's broker session, start ingest, time it to the last derived record."""
    db = f"rep_{label}"
    c.nodes["a"].drop_database(db)
    dsn = c.nodes["a"].create_database(db)
    apply(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for a in fleet:
            a.register(conn)
    cfg = write_ingest_config(work / f"{label}.toml", c.dsn(db), broker, f"rep-{label}", f"rep-{label}",
                              batch_max_messages=batch_max_messages)
    cfg.write_text(cfg.read_text().replace('log_level = "WARNING"', 'log_level = "INFO"'))
    log = work / f"{label}.log"
    proc = start_ingest(cfg, log)  # creates the persistent session
    wait(lambda: "subscribed to" in log.read_text(errors="replace"), 60)
    stop(proc)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rep-pub-{label}", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(200)
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for info in [pub.publish(t, p, qos=1) for t, p in envelopes]:
        info.wait_for_publish(300)
    pub.loop_stop()
    pub.disconnect()
    with psycopg.connect(dsn, autocommit=True) as conn:
        def derived() -> int:
            return int(conn.execute("SELECT coalesce(sum(derived_seq), 0) FROM agent_progress").fetchone()[0])  # type: ignore[index]

        t0 = time.monotonic()
        proc = start_ingest(cfg, work / f"{label}.log")
        done = wait(lambda: derived() >= total, 900, every=0.05)
        stop(proc)
        n, distinct = conn.execute("SELECT count(*), count(DISTINCT (agent_no, seq)) FROM records").fetchone()  # type: ignore[misc]
    assert n == distinct == total, f"{label}: stored {n} ({distinct} distinct) of {total}"
    c.nodes["a"].drop_database(db)
    return total / (done - t0)


# -- failover ---------------------------------------------------------------------------------------


def failover(root: Path, broker: MosquittoServer, mode: str, k: int, agents: int = 20,
             records: int = 300) -> dict[str, Any]:
    """Kill the primary under load; (acked before the kill, acked records missing on the promoted standby)."""
    c = PgCluster(root / f"fo-{mode}-{k}", fast=False)
    try:
        apply(c.start_primary("a").create_database("jishi"))
        c.add_standby("b", "a", synchronous=mode == "sync")
        tag = f"{mode}{k}-{int(time.time())}"
        fleet = [TestAgent(f"fo{i}-{tag}", unit=f"u-{tag}") for i in range(agents)]
        t0 = int(time.time() * 1000) - records * 60_000
        for ag in fleet:
            register(c.nodes["a"].dsn("jishi"), ag, org=f"org-{tag}")
            for j in range(records):
                ag.heartbeat(t0 + j * 60_000, "running", period_ms=60_000)
        items = [(ag.topic(), ag.seal(ag.made[i:i + 2])) for i in range(0, records, 2) for ag in fleet]
        s = settings_for(c.dsn("jishi"), broker, client_id=f"fo-{tag}", batch_max_messages=5)
        s.mqtt.share_group = f"fo-{tag}"
        s.database.ha = mode == "sync"
        ing = Ingest(s).start()
        pub = Publisher(broker, client_id=f"fo-pub-{tag}")
        ids = {a.agent for a in fleet}

        def acked() -> dict[str, int]:
            out: dict[str, int] = {}
            for topic, payload in list(pub.received):
                if topic.endswith("/ack") and payload:
                    body = orjson.loads(payload)
                    if body["agent"] in ids:
                        out[body["agent"]] = max(out.get(body["agent"], 0), int(body["acked"]))
            return out

        def stream() -> None:
            for t, p in items:
                pub.publish(t, p)

        sender = threading.Thread(target=stream, daemon=True)
        try:
            assert ing.wait_connected()
            sender.start()
            wait(lambda: sum(acked().values()) >= agents * records // 3, 120, every=0.01)
            c.kill9("a")
            seen = acked()
            c.promote("b")
            rows = c.query("b", "SELECT p.agent_id, p.watermark FROM agent_progress p WHERE agent_id = ANY(%s)",
                           (sorted(ids),), dbname="jishi")
            held = {str(a): int(w) for a, w in rows}
            lost = sum(max(0, n - held.get(a, 0)) for a, n in seen.items())
        finally:
            ing.stop()
            pub.close()
        return {"acked": sum(seen.values()), "lost": lost}
    finally:
        c.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--commits", type=int, default=2000, help="one-row COMMITs timed per mode and round")
    args = ap.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    root = Path(tempfile.mkdtemp(prefix="jishi-rep-"))
    root.chmod(0o755)
    work = root / "work"
    work.mkdir()
    broker = MosquittoServer(root / "mqtt", autosave_interval=300).start()
    try:
        c = cluster(root, "tp")
        try:
            for r in range(args.rounds):
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    set_mode(c, mode)
                    p50, p99 = commit_latency(c, args.commits)
                    print(f"  one-row COMMIT, {mode} round {r + 1}: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
                          f" (load {os.getloadavg()[0]:.1f})")
            for shape, per_env, batch in (("backlog", 500, 40), ("live", 1, 500)):
                days = args.days if per_env > 1 else max(1, args.days // 5)
                fleet, envelopes, total = backlog(args.agents, days, per_env)
                rates: dict[str, list[float]] = {m: [] for m in MODES}
                for r in range(args.rounds):
                    for mode in MODES if r % 2 == 0 else MODES[::-1]:
                        set_mode(c, mode)
                        rates[mode].append(drain(c, broker, fleet, envelopes, total, f"{shape}_{mode}_{r}", work,
                                                 batch))
                        print(f"  {shape} {mode} round {r + 1}: {rates[mode][-1]:,.0f} records/s"
                              f" (load {os.getloadavg()[0]:.1f})")
                best = {m: max(v) for m, v in rates.items()}
                print(f"{shape}: {total:,} records in {len(envelopes):,} envelopes of {per_env}; best of "
                      f"{args.rounds}: synchronous {best['sync']:,.0f} records/s, asynchronous "
                      f"{best['async']:,.0f} records/s (synchronous / asynchronous {best['sync'] / best['async']:.2f})")
        finally:
            c.stop()
        for mode in MODES:
            results = [failover(root, broker, mode, k) for k in range(args.kills)]
            print(f"failover, {mode}: {args.kills} kills of the primary under load; acked before the kill "
                  f"{[r['acked'] for r in results]}, acked records missing on the promoted standby "
                  f"{[r['lost'] for r in results]}")
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
