"""Live latency: many instruments, each sending one envelope every 10 s (a heartbeat, and every
tenth time a state change too); latency = from publish to the row being visible to a live-state
follower in another process/connection (NOTIFY jishi_live, delivered at commit).

    .venv/bin/python bench/ingest_live.py [--instruments 5000] [--seconds 600] [--workers 1]

The first 20 s (every agent's first envelope creates its progress row) are left out of the figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from ingest_common import (
    SimAgent,
    fleet_publisher,
    fresh_db,
    machine,
    publish_fleet,
    register_fleet,
    services,
    start_ingest,
    stop,
    write_ingest_config,
)

from server.ingest.live import follow

WARMUP_S = 20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--period", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    fleet = [SimAgent(f"live-{i}", f"lu{i % 50}", f"li{i}") for i in range(args.instruments)]
    with services(fast=False) as (pg, broker):
        dsn = fresh_db(pg, "bench_live")
        with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
            register_fleet(conn, fleet)
        tmp = Path(tempfile.mkdtemp(prefix="jishi-live-"))
        group = f"live-{int(time.time())}"
        procs = [start_ingest(write_ingest_config(tmp / f"w{k}.toml", dsn, broker, f"{group}-{k}", group,
                                                  batch_max_messages=500, batch_max_wait_ms=20,
                                                  gap_check_every_s=5.0), tmp / f"w{k}.log")
                 for k in range(args.workers)]
        lat: list[float] = []
        seen = 0
        stop_evt = threading.Event()
        t_start = time.time()

        def listen() -> None:
            nonlocal seen
            for row in follow(dsn, stop=stop_evt):
                if row.get("last_t") is None:
                    continue
                now = time.time()
                t = datetime.fromisoformat(row["last_t"]).timestamp()
                seen += 1
                if t - t_start > WARMUP_S:
                    lat.append(now - t)

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(3)  # ingest subscribed

        pub = fleet_publisher(broker, f"{group}-pub")
        sent = publish_fleet(pub, fleet, args.period, args.seconds)
        time.sleep(5)
        stop_evt.set()
        pub.loop_stop()
        pub.disconnect()
        for p in procs:
            stop(p)
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM envelopes").fetchone()[0]  # type: ignore[index]
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    print(f"{args.instruments} instruments x 1 envelope / {args.period:.0f} s for {args.seconds} s "
          f"({args.instruments / args.period:.0f} envelopes/s), {args.workers} ingest process(es)")
    print(f"published {sent:,} envelopes, stored {stored:,}, live rows seen {seen:,} "
          f"({len(lat):,} after the {WARMUP_S} s warm-up)")
    print(f"publish -> visible in live state: p50 {pct(0.5):.0f} ms, p95 {pct(0.95):.0f} ms, p99 {pct(0.99):.0f} ms,"
          f" max {lat[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
