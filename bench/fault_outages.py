"""Long outages in real time: the broker down (default 30 min) or the database down (default 10 min)
under real agents and a real `jishi-server ingest`, then everything must arrive exactly once and
the machine-hours must be those of the known schedule.

    .venv/bin/python bench/fault_outages.py broker                 # broker killed for 30 minutes
    .venv/bin/python bench/fault_outages.py db                     # PostgreSQL stopped for 10 minutes
    .venv/bin/python bench/fault_outages.py broker --minutes 2     # shorter

The suite runs the same scenarios short (tests/faults/test_broker_outage.py, test_db_unreachable.py;
their docstrings say why the duration does not change the behaviour). Here everything runs with
the production settings that matter for long outages: the agents' reconnect back-off 1 s .. 120 s,
ingest's database retry 0.5 s .. 30 s, resend after 30 s, gaps given up after 600 s, durable
PostgreSQL; agents poll a simulated Modbus meter every 0.2 s (the schedule: --run-s running,
--idle-s idle, over and over) and send a heartbeat every --heartbeat s.

Printed: the backlog in the agents' spools during the outage, ingest's retries and CPU time, the
time from the end of the outage until every backlog is stored, and per agent: records made,
stored, stored twice, gaps, refusals, running seconds measured vs true, unwatched intervals (UTC
start, seconds).
Exit status 0 when nothing was lost, nothing stored twice and nothing refused.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.db.migrate import apply
from sim.devstack import MosquittoServer, PostgresServer
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, write_config
from tests.faults.common import Schedule, enrol, meter_toml, outcome, progress, spool_meta
from tests.faults.test_db_unreachable import cpu_seconds
from tests.server.procs import IngestProc
from tests.server.procs import write_config as ingest_config


def say(msg: str) -> None:
    print(f"[outage {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["broker", "db"])
    ap.add_argument("--minutes", type=float, help="outage length (default: broker 30, db 10)")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--heartbeat", type=float, default=5.0, help="agents' heartbeat, s (default 5)")
    ap.add_argument("--run-s", type=float, default=60.0)
    ap.add_argument("--idle-s", type=float, default=45.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds of normal flow before and after")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    minutes = args.minutes if args.minutes is not None else (30.0 if args.what == "broker" else 10.0)
    root = Path(tempfile.mkdtemp(prefix="jishi-outage-"))
    root.chmod(0o755)
    pg = PostgresServer(root / "pg")
    broker = MosquittoServer(root / "mqtt", autosave_interval=5)
    meters: list[ModbusMeter] = []
    agents: list[tuple[str, Path, AgentProc, Schedule]] = []
    ingest: IngestProc | None = None
    figures: dict[str, Any] = {"what": args.what, "minutes": minutes, "agents": args.agents}
    ok = False
    try:
        pg.start()
        broker.start()
        dsn = pg.create_database("jishi")
        apply(dsn)
        icfg = ingest_config(root / "ingest.toml", dsn, broker, "outage-ingest", "outage", retry_initial_s=0.5,
                             retry_max_s=30.0, resend_after_s=30.0, gap_give_up_after_s=600.0,
                             gap_check_every_s=5.0)
        ingest = IngestProc(icfg).start()
        time.sleep(2.0)
        for i in range(args.agents):
            meter = ModbusMeter(watts=40.0)
            meters.append(meter)
            d = root / f"agent{i}"
            d.mkdir()
            agent_id = f"outage-{i}"
            cfg = write_config(d, agent_id=agent_id, broker=broker, detectors=meter_toml(meter), running="power",
                               period=0.2, heartbeat=args.heartbeat)
            # the production back-off (tests use 0.2 .. 1 s)
            cfg.write_text(cfg.read_text().replace("backoff_min_s = 0.2", "backoff_min_s = 1.0")
                           .replace("backoff_max_s = 1.0", "backoff_max_s = 120.0"))
            enrol(dsn, d, agent_id)
            sched = Schedule(meter, run_s=args.run_s, idle_s=args.idle_s).start()
            agents.append((agent_id, cfg, AgentProc(cfg).start(), sched))
        say(f"{args.agents} agents running; {args.warmup:.0f} s of normal flow, then the {args.what} goes down "
            f"for {minutes:g} min (work dir {root})")
        time.sleep(args.warmup)
        log_from = len(ingest.output())
        at_start = {a: spool_meta(c)["next_seq"] for a, c, _, _ in agents}
        assert ingest.proc is not None
        cpu0 = cpu_seconds(ingest.proc.pid)
        t_down = time.time()
        if args.what == "broker":
            broker.kill()
        else:
            pg.stop()
        backlog_max = 0
        while time.time() < t_down + minutes * 60:
            time.sleep(min(60.0, t_down + minutes * 60 - time.time()))
            metas = {a: spool_meta(c) for a, c, _, _ in agents}
            backlog = sum(m["next_seq"] - 1 - m["acked"] for m in metas.values())
            backlog_max = max(backlog_max, backlog)
            alive = sum(1 for _, _, p, _ in agents if p.alive())
            say(f"{(time.time() - t_down) / 60:5.1f} min down: {backlog} records waiting in the spools, "
                f"{alive}/{len(agents)} agents alive, ingest {'alive' if ingest.alive else 'DEAD'}, "
                f"ingest CPU {cpu_seconds(ingest.proc.pid) - cpu0:.1f} s")
        cpu = cpu_seconds(ingest.proc.pid) - cpu0
        waiting = {a: spool_meta(c)["next_seq"] - 1 for a, c, _, _ in agents}
        t_up = time.time()
        if args.what == "broker":
            broker.start()
        else:
            pg.start()
        say(f"{args.what} back after {(t_up - t_down) / 60:.1f} min; waiting for the backlog")
        while any(progress(dsn, a)[0] < n for a, n in waiting.items()):
            if time.time() > t_up + 900:
                say("backlog not stored within 15 min")
                break
            time.sleep(0.5)
        drain_s = time.time() - t_up
        say(f"backlog of {sum(waiting.values()) - sum(at_start.values()) + len(agents)} records stored "
            f"{drain_s:.1f} s after the {args.what} came back")
        time.sleep(args.warmup)
        for _, _, p, sched in agents:
            sched.stop()
            p.stop(60)
        last = {a: spool_meta(c)["next_seq"] - 1 for a, c, _, _ in agents}
        deadline = time.time() + 300
        while any(progress(dsn, a) != (n, n) for a, n in last.items()) and time.time() < deadline:
            time.sleep(0.5)
        log = ingest.output()[log_from:]
        retries = re.findall(r"database unavailable \((.+?)\); retrying in ([0-9.]+) s", log)
        rows = []
        ok = True
        for a, _, p, sched in agents:
            got = outcome(dsn, a)
            t_first, t_last = got["coverage"][0][2], got["coverage"][-1][3]
            truth = sched.running_s(t_first, t_last)
            unwatched = [(st, reason, time.strftime("%H:%M:%S", time.gmtime(a_)), round(b_ - a_, 1))
                         for st, reason, a_, b_ in got["coverage"] if st != "watching" and t_first <= a_ < t_last]
            reconnects = len(re.findall(r"WARNING jishi\.publisher: mqtt ", p.text()))
            row = {"agent": a, "records_made": last[a], "records_stored": got["records"],
                   "stored_twice": got["records"] - got["distinct"], "lost": last[a] - got["distinct"],
                   "gaps": got["gaps"], "refused": len(got["quarantine"]),
                   "running_s": round(got["running_s"], 1), "true_running_s": round(truth, 1),
                   "unwatched": unwatched, "failed_connects": reconnects,
                   "traceback": "Traceback" in p.text()}
            ok &= (row["lost"] == 0 and row["stored_twice"] == 0 and not got["gaps"] and not row["refused"]
                   and not unwatched)
            rows.append(row)
        figures |= {
            "outage_utc": [time.strftime("%H:%M:%S", time.gmtime(t)) for t in (t_down, t_up)],
            "outage_s": round(t_up - t_down, 1), "backlog_records_max": backlog_max, "drain_s": round(drain_s, 1),
            "ingest_alive": ingest.alive, "ingest_cpu_s_during_outage": round(cpu, 2),
            "ingest_db_retries": len(retries), "ingest_retry_delays_first": [float(d) for _, d in retries[:8]],
            "ingest_retry_reason_example": retries[0][0] if retries else "",
            "ingest_traceback": "Traceback" in ingest.output(), "per_agent": rows, "ok": ok,
        }
        print(json.dumps(figures, indent=1, ensure_ascii=False))
        if args.out:
            args.out.write_text(json.dumps(figures, indent=1, ensure_ascii=False))
    finally:
        for _, _, p, sched in agents:
            sched.stop()
            if p.alive():
                p.kill()
        for m in meters:
            m.close()
        if ingest is not None:
            ingest.stop()
        broker.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
