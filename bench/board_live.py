"""Live board latency: from an agent's publish to the tile on an open board.

The load of bench/ingest_live.py (N instruments in 50 units, one signed envelope each every 10 s, a
state change every tenth time) through the broker and ingest; `jishi-server web` (with
`--web-workers`) serves one live stream per unit (`/api/v1/units/{unit}/live/stream`, an operator's
session), read by a separate process. Latency = arrival of the `tile` event that shows a state
change minus the change's record time (`since`, the publish time; one host, one clock). Beside it,
in the same run, the latency to a plain `LISTEN jishi_live` follower (the figure ingest_live.py
reports), and optionally the same streams served by the code of `--web-ref` (the previous figure).

    .venv/bin/python bench/board_live.py [--instruments 5000] [--seconds 120] [--web-workers 2]
                                         [--web-ref 1cc2bf5]

The first 20 s are left out (each agent's first envelope creates its progress row).
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
    SimAgent,
    fleet_publisher,
    fresh_db,
    machine,
    publish_fleet,
    services,
    start_ingest,
    stop,
    write_ingest_config,
)
from web_load import checkout, free_port, wait_up

from protocols.signing import public_to_b64
from server.ingest.live import follow

WARMUP_S = 20
ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password-1"
UNITS = 50


def read_streams(url: str, units: list[str], t_start: float, seconds: float, out: Any) -> None:
    """In its own process: log in, open one stream per unit, note (arrival - since) of each tile
    whose `since` moved after the warm-up."""
    import httpx

    lat: list[tuple[str, int, float]] = []  # (instrument, since in ms, arrival)
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
                            if s - t_start > WARMUP_S:
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

    return f"n {len(s):,}: p50 {p(.5):.0f} ms, p95 {p(.95):.0f} ms, p99 {p(.99):.0f} ms, max {s[-1] * 1000:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--period", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1, help="ingest processes")
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--web-ref", help="also serve streams with this git revision's web (its defaults)")
    args = ap.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average {os.getloadavg()[0]:.1f}")
    fleet = [SimAgent(f"live-{i}", f"lu{i % UNITS}", f"li{i}") for i in range(args.instruments)]
    units = sorted({a.unit for a in fleet})
    with services(fast=False) as (pg, broker):
        dsn = fresh_db(pg, "bench_board")
        from server.web.auth import hash_password

        with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT audit_as('bench:board_live', true)")
            conn.execute("INSERT INTO organisations (id, name) VALUES ('o', 'Bench')")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO units (id, org_id, name) VALUES (%s, 'o', 'u')", [(u,) for u in units])
                cur.executemany("INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i')",
                                [(a.instrument, a.unit) for a in fleet])
                cur.executemany("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)",
                                [(a.agent, a.instrument) for a in fleet])
                cur.executemany("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                                [(a.kid, a.agent, public_to_b64(a.key)) for a in fleet])
            conn.execute("INSERT INTO web_accounts (login, display_name, role, password_hash)"
                         " VALUES ('bench-op', 'bench', 'operator', %s)", (hash_password(PASSWORD),))
        tmp = Path(tempfile.mkdtemp(prefix="jishi-board-"))
        webs = [("this tree", ROOT, args.web_workers)]
        if args.web_ref:
            webs.insert(0, (f"{args.web_ref}", checkout(args.web_ref), None))
        servers = [(label, *start_web(code, dsn, w, tmp / "web.log")) for label, code, w in webs]
        group = f"board-{int(time.time())}"
        procs = [start_ingest(write_ingest_config(tmp / f"w{k}.toml", dsn, broker, f"{group}-{k}", group,
                                                  batch_max_messages=500, batch_max_wait_ms=20,
                                                  gap_check_every_s=5.0), tmp / f"w{k}.log")
                 for k in range(args.workers)]
        lat: list[float] = []
        committed: dict[tuple[str, int], float] = {}  # (instrument, state since ms) -> seen by the follower
        stop_evt = threading.Event()
        t_start = time.time() + 3

        def listen() -> None:
            for row in follow(dsn, stop=stop_evt):
                if row.get("last_t") is None:
                    continue
                now = time.time()
                t = datetime.fromisoformat(row["last_t"]).timestamp()
                if t - t_start > WARMUP_S:
                    lat.append(now - t)
                if row.get("state_since"):
                    key = (row["instrument_id"], round(datetime.fromisoformat(row["state_since"]).timestamp() * 1000))
                    committed.setdefault(key, now)

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        ctx = mp.get_context("spawn")
        outs = []
        readers = []
        for _label, _proc, url in servers:
            q = ctx.Queue()
            rp = ctx.Process(target=read_streams, args=(url, units, t_start, args.seconds + 5, q), daemon=True)
            rp.start()
            readers.append(rp)
            outs.append(q)
        time.sleep(3)  # ingest subscribed, streams open
        pub = fleet_publisher(broker, f"{group}-pub")
        sent = publish_fleet(pub, fleet, args.period, args.seconds)
        results = [q.get(timeout=120) for q in outs]
        stop_evt.set()
        pub.loop_stop()
        pub.disconnect()
        for p in procs:
            stop(p)
        for _label, proc, _url in servers:
            proc.terminate()
            proc.wait(30)
        load = os.getloadavg()
    print(f"{args.instruments} instruments in {UNITS} units x 1 envelope / {args.period:.0f} s for {args.seconds} s "
          f"({args.instruments / args.period:.0f} envelopes/s, {sent:,} sent), {args.workers} ingest process(es), "
          f"one stream per unit; load average at the end {load[0]:.1f} {load[1]:.1f}")
    print(f"publish -> LISTEN follower (every row):          {pcts(lat)}")
    for (label, _p, _u), got in zip(servers, results, strict=True):
        workers = "its defaults" if label != "this tree" else f"{args.web_workers} web worker(s)"
        print(f"publish -> tile on the board ({label}, {workers}): {pcts([a - s / 1000 for _i, s, a in got])}")
        web = [a - committed[(i, s)] for i, s, a in got if (i, s) in committed]
        print(f"   of which the web (commit seen by the follower -> tile on the board): {pcts(web)}")


if __name__ == "__main__":
    main()
