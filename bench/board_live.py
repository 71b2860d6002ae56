"""Live board latency: from an agent's publish to the tile on an open board, at a real fleet's load.

N instruments in 50 units, each a simulated agent that sends every record live in its own signed
envelope (bench/ingest_common.py `live_schedule`): a heartbeat every `--period` s (the agent's
default, 300 s: ~17 envelopes/s for 5,000 instruments) and every `--burst-every` s a burst in which
`--burst` of the instruments change state within one second. Through Mosquitto, `jishi-server
ingest` and `jishi-server web` (`--web-workers`), which serves one live stream per unit
(`/api/v1/units/{unit}/live/stream`, an operator's session) read by a separate process as the
browser's EventSource reads it. Figures: publish -> received by ingest (envelopes.received_at),
-> committed (a `LISTEN jishi_live` follower on another connection: NOTIFY is delivered at commit),
-> the `tile` event showing a state change (latency = arrival minus the change's record time, the
publish time; one host, one clock), and the web's own share (commit seen -> tile).

With `--ref REV` the same fleet is served alternately by REV's ingest and web and by this tree's,
`--rounds` times each, `--seconds` per phase, so old and new figures come from one run.

    .venv/bin/python bench/board_live.py --instruments 5000 --ref ce8f825 --rounds 2 --seconds 90

The old steady load (every instrument every 10 s, a tenth of them a change): `--period 10 --burst 0
--steady-changes 0.1`. Before the phases every agent sends one envelope (its progress row), not counted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from ingest_common import (
    ROOT,
    LiveFleet,
    SimAgent,
    fleet_publisher,
    fresh_db,
    live_schedule,
    machine,
    register_fleet,
    services,
    start_ingest,
    stop,
    wait,
    write_ingest_config,
)
from web_load import checkout, free_port, wait_up

from server.ingest.live import follow

PASSWORD = "bench-password-1"
UNITS = 50


def read_streams(url: str, units: list[str], count_from: float, seconds: float, out: Any) -> None:
    """In its own process: log in, open one stream per unit, note (instrument, since ms, arrival) of
    each tile whose `since` moved to a time after `count_from`."""
    import httpx

    lat: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    end = time.time() + seconds
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/api/v1/auth/login", json={"login": "bench-op", "password": PASSWORD})
        r.raise_for_status()
        cookies = c.cookies

    def one(unit: str) -> None:
        last: dict[str, str] = {}
        with httpx.Client(base_url=url, cookies=cookies, timeout=None) as c, \
                c.stream("GET", f"/api/v1/units/{unit}/live/stream") as resp:
            name = ""
            for line in resp.iter_lines():
                now = time.time()
                if now > end:
                    return
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name in ("tile", "snapshot"):
                    doc = json.loads(line[5:])
                    for t in doc if name == "snapshot" else [doc]:
                        since = t.get("since")
                        if name == "tile" and since and last.get(t["id"]) not in (None, since):
                            s = datetime.fromisoformat(since).timestamp()
                            if s > count_from:
                                with lock:
                                    lat.append((t["id"], round(s * 1000), now))
                        if since:
                            last[t["id"]] = since

    threads = [threading.Thread(target=one, args=(u,), daemon=True) for u in units]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 30)
    with lock:
        out.put(lat)


def start_web(code: Path, dsn: str, workers: int | None, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(code), "JISHI_WEB_DSN": dsn}
    env.pop("JISHI_CONFIG", None)
    if workers is not None:
        env["JISHI_WEB_WORKERS"] = str(workers)
    cmd = [sys.executable, "-c", "import sys; from server.cli import main; sys.exit(main())", "web", "--port",
           str(port), "--insecure-cookies", "--log-level", "warning"]
    with log.open("ab") as f:
        proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return proc, url


def pcts(lat: list[float]) -> str:
    if not lat:
        return "no samples"
    s = sorted(lat)

    def p(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] * 1000

    return f"p50 {p(.5):>5.0f}  p95 {p(.95):>5.0f}  p99 {p(.99):>5.0f}  max {s[-1] * 1000:>6.0f} ms  (n {len(s):,})"


def register(dsn: str, fleet: list[SimAgent]) -> None:
    from server.web.auth import hash_password

    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT audit_as('bench:board_live', true)")
        register_fleet(conn, fleet)
        conn.execute("INSERT INTO web_accounts (login, display_name, role, password_hash)"
                     " VALUES ('bench-op', 'bench', 'operator', %s)", (hash_password(PASSWORD),))


def received_lags(dsn: str, since: float, until: float) -> list[float]:
    """publish (the record's time) -> received by ingest, for envelopes received in [since, until]."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM e.received_at - r.t)::float8 FROM envelopes e"
            " JOIN records r ON r.envelope_id = e.id AND r.seq = e.last_seq AND r.t > to_timestamp(%s - 60)"
            " WHERE e.received_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)", (since, since, until)).fetchall()
    return [r[0] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=90, help="per phase")
    ap.add_argument("--period", type=float, default=300.0, help="heartbeat (the agent's default: 300 s)")
    ap.add_argument("--burst", type=float, default=0.1, help="fraction of instruments changing state in a burst")
    ap.add_argument("--burst-every", type=float, default=30.0)
    ap.add_argument("--steady-changes", type=float, default=0.0, help="fraction of heartbeats that are changes")
    ap.add_argument("--workers", type=int, default=1, help="ingest processes")
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--ref", help="alternate with this git revision's ingest and web (the previous figure)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    fleet = [SimAgent(f"live-{i}", f"lu{i % UNITS}", f"li{i}") for i in range(args.instruments)]
    units = sorted({a.unit for a in fleet})
    codes = [("this tree", ROOT)]
    if args.ref:
        codes.insert(0, (args.ref, checkout(args.ref)))
    phases = [c for _ in range(args.rounds) for c in codes]
    results: dict[str, dict[str, list[float]]] = {label: {} for label, _ in codes}
    loads: list[float] = []
    with services(fast=False) as (pg, broker):
        dsn = fresh_db(pg, "bench_board")
        register(dsn, fleet)
        tmp = Path(tempfile.mkdtemp(prefix="jishi-board-"))
        group = f"board-{int(time.time())}"
        configs = [write_ingest_config(tmp / f"w{k}.toml", dsn, broker, f"{group}-{k}", group,
                                       gap_check_every_s=5.0, batch_max_wait_ms=50)  # the default
               for k in range(args.workers)]
        seen: list[tuple[float, float]] = []  # (arrival, last_t) of every row the follower saw
        committed: dict[tuple[str, int], float] = {}  # (instrument, state since ms) -> seen by the follower
        stop_evt = threading.Event()

        def listen() -> None:
            for row in follow(dsn, stop=stop_evt):
                if row.get("last_t") is None:
                    continue
                now = time.time()
                seen.append((now, datetime.fromisoformat(row["last_t"]).timestamp()))
                if row.get("state_since"):
                    key = (row["instrument_id"], round(datetime.fromisoformat(row["state_since"]).timestamp() * 1000))
                    committed.setdefault(key, now)

        threading.Thread(target=listen, daemon=True).start()
        pub = fleet_publisher(broker, f"{group}-pub")
        live = LiveFleet(pub, fleet, args.period)
        # every agent's first envelope creates its progress row: sent before the phases, not counted
        procs = [start_ingest(c, tmp / f"prime{k}.log") for k, c in enumerate(configs)]
        time.sleep(3)
        live.play([(k * 10.0 / len(fleet), k, False) for k in range(len(fleet))])
        wait(lambda: len(seen) >= len(fleet), 300, 0.5)
        for p in procs:
            stop(p)
        ctx = mp.get_context("spawn")
        for n, (label, code) in enumerate(phases):
            web, url = start_web(code, dsn, args.web_workers, tmp / f"web{n}.log")
            procs = [start_ingest(c, tmp / f"w{n}-{k}.log", code) for k, c in enumerate(configs)]
            q = ctx.Queue()
            t0 = time.time() + 6
            reader = ctx.Process(target=read_streams, args=(url, units, t0, args.seconds + 8, q), daemon=True)
            reader.start()
            events = live_schedule(len(fleet), args.period, args.seconds, args.burst, args.burst_every, seed=n,
                                   steady_changes=args.steady_changes)
            sent = live.play(events, t0)
            got = q.get(timeout=120)
            t1 = time.time()
            reader.join(30)
            for p in procs:
                stop(p)
            web.terminate()
            web.wait(30)
            load = os.getloadavg()[0]
            loads.append(load)
            r = results[label]
            r.setdefault("received", []).extend(received_lags(dsn, t0, t1))
            r.setdefault("committed", []).extend(a - t for a, t in list(seen) if t0 <= t <= t1)
            r.setdefault("tile", []).extend(a - s / 1000 for _i, s, a in got)
            r.setdefault("web", []).extend(a - committed[(i, s)] for i, s, a in got if (i, s) in committed)
            print(f"phase {n + 1} ({label}): {sent:,} envelopes in {args.seconds} s, {len(got):,} tiles;"
                  f" load average {load:.1f}", flush=True)
            print(f"  publish -> tile on the board: {pcts([a - s / 1000 for _i, s, a in got])}", flush=True)
        stop_evt.set()
        pub.loop_stop()
        pub.disconnect()
    print(f"\n{args.instruments} instruments in {UNITS} units; heartbeat every {args.period:.0f} s; every"
          f" {args.burst_every:.0f} s {args.burst:.0%} of them change state within 1 s; steady changes"
          f" {args.steady_changes:.0%}; {args.workers} ingest process(es); one stream per unit;"
          f" {args.rounds} phase(s) of {args.seconds} s per code; load average during the phases"
          f" {min(loads):.1f}-{max(loads):.1f}")
    for label, _ in codes:
        r = results[label]
        print(f"{label}:")
        print(f"  publish -> received by ingest          {pcts(r['received'])}")
        print(f"  publish -> committed (LISTEN follower) {pcts(r['committed'])}")
        print(f"  publish -> tile on the board           {pcts(r['tile'])}")
        print(f"     of which the web (commit -> tile)   {pcts(r['web'])}")


if __name__ == "__main__":
    main()
