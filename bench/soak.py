"""Soak: simulated days of several instruments at N x speed through the whole real system, with
random faults injected, and the final indicators compared with the simulator's ground truth.

    .venv/bin/python bench/soak.py                          # a week at 100x: ~101 min
    .venv/bin/python bench/soak.py --days 0.7 --speed 100   # ~10 min
    .venv/bin/python bench/soak.py --days 0.7 --out /tmp/soak.json   # figures also as JSON

What runs (private services in a temporary directory): PostgreSQL + TimescaleDB, Mosquitto, one
`jishi-server ingest` process, and per instrument a real `jishi-agent run` process reading a
simulated Modbus power meter (sim/modbus_meter.py) through a TCP proxy to the broker (so the
network can be cut). The seeded usage model (sim/model.py `generate`: working hours, sessions,
runs, internal and external users) gives each instrument's truth from --start for --days of
simulated time; a driver thread per instrument plays it --speed times faster: it sets the meter's
draw (off / standby / running) at every state change and checks users in and out through the
agent's check-in endpoint, as people at the PC do. Times are compressed, so the agent's heartbeat
(300 s), reconnect cap and idle timeout are divided by the speed too.

Faults, one at a time, every --fault-every seconds (real, with jitter), each kind once per round
in random order: the broker
killed (SIGKILL) and restarted, ingest killed (SIGKILL) and restarted, PostgreSQL restarted, an
agent killed (SIGKILL) and restarted, the agents' network cut; each lasts 3-30 s (real).

At the end: every agent is stopped cleanly, the server must hold every record the agents made
(nothing lost: no gap, watermark = last seq), each once, nothing refused; then per instrument the
running and external hours (server.db.queries.hours_by_instrument, as evaluators get them) are
compared with the truth. Killing an agent makes the time until it is back unwatched (by design:
nobody watched), so the truth is compared over the time the server counts as watched, and the
unwatched time is compared with the injected agent downtime. Printed as a table; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from protocols.signing import generate as new_key
from protocols.signing import key_id, public_to_b64, save_private
from server.db import queries
from server.db.migrate import apply
from sim.devstack import MosquittoServer, PostgresServer, TcpProxy, free_port
from sim.modbus_meter import ModbusMeter
from sim.model import HOUR, TZ, InstrumentSpec, Person, Power, Truth, generate, ms
from tests.agent.helpers import AgentProc
from tests.faults.common import progress, spool_meta
from tests.server.procs import IngestProc
from tests.server.procs import write_config as ingest_config

UNIT, ORG, EXT_ORG = "soak-u", "soak-org", "soak-ext"
POWER = Power(off_w=1.5, standby_w=120.0, running_w=900.0, noise=0.0)
WATTS = {"off": POWER.off_w, "idle": POWER.standby_w, "running": POWER.running_w, "fault": POWER.standby_w}
FAULTS = ("broker_kill", "ingest_kill", "db_restart", "agent_kill", "net_cut")


def say(msg: str) -> None:
    print(f"[soak {datetime.now():%H:%M:%S}] {msg}", flush=True)


@dataclass
class Station:
    """One instrument: its truth, meter, agent process (through a proxy) and the agent's downtime."""

    spec: InstrumentSpec
    truth: Truth
    dir: Path
    meter: ModbusMeter
    checkin_port: int
    agent: AgentProc | None = None
    down: list[list[float]] = field(default_factory=list)
    checkin_failures: int = 0

    @property
    def agent_id(self) -> str:
        return f"{self.spec.id}-a"

    @property
    def cfg(self) -> Path:
        return self.dir / "agent.toml"


def people() -> list[Person]:
    out = [Person(f"soak-in{i}", f"内部用户 {i}", ORG, UNIT, f"in{i}", False) for i in range(4)]
    out += [Person(f"soak-ex{i}", f"外部用户 {i}", EXT_ORG, UNIT, f"ex{i}", True) for i in range(4)]
    return out


def spec(i: int) -> InstrumentSpec:
    return InstrumentSpec(id=f"soak-i{i}", unit_id=UNIT, name=f"浸泡仪器 {i}", name_en=f"soak instrument {i}",
                          category="通用", original_value=500_000, detection="power", power=POWER,
                          sessions_per_week=30.0, runs_per_session=(1, 3), run_hours=1.0, external_share=0.4,
                          faults_per_year=0.0, forgotten_checkout=0.1, glitches_per_week=0.0,
                          left_on_overnight=0.2, confirm_s=0.0)


def agent_toml(st: Station, proxy_port: int, speed: float) -> str:
    return f"""
[agent]
id = "{st.agent_id}"
unit = "{UNIT}"
instrument = "{st.spec.id}"
key_file = "agent.key"
data_dir = "data"
sample_period_s = 0.2
heartbeat_s = {300 / speed}
log_level = "INFO"

[mqtt]
host = "127.0.0.1"
port = {proxy_port}
keepalive_s = 5
backoff_min_s = 0.2
backoff_max_s = {max(1.0, 120 / speed)}
connect_timeout_s = 3
resend_after_s = {max(5.0, 600 / speed)}

[state]
running = "power"
confirm_s = 0
post_run_s = 0

[identity]
os_session = false
checkin = true
checkin_port = {st.checkin_port}
idle_timeout_s = {3600 / speed}

[detectors.power]
kind = "power_meter"
port = "{st.meter.port}"
timeout_s = 0.1
retries = 1
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""


def register(dsn: str, stations: list[Station], persons: list[Person]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name, kind) VALUES (%s, '浸泡大学', 'university'),"
                     " (%s, '外部公司', 'enterprise')", (ORG, EXT_ORG))
        conn.execute("INSERT INTO units (id, org_id, name) VALUES (%s, %s, 'soak unit')", (UNIT, ORG))
        for p in persons:
            conn.execute("INSERT INTO platform_users (id, name, org_id) VALUES (%s, %s, %s)", (p.id, p.name, p.org_id))
            conn.execute("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, 'checkin', %s,"
                         " %s)", (UNIT, p.login, p.id))
        for st in stations:
            key = new_key()
            save_private(key, st.dir / "agent.key")
            conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, %s)",
                         (st.spec.id, UNIT, st.spec.name))
            conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (st.agent_id, st.spec.id))
            conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                         (key_id(key), st.agent_id, public_to_b64(key)))


class Clock:
    """Simulated time <-> real time."""

    def __init__(self, sim0: int, real0: float, speed: float) -> None:
        self.sim0, self.real0, self.speed = sim0, real0, speed

    def real(self, sim_ms: int) -> float:
        return self.real0 + (sim_ms - self.sim0) / 1000 / self.speed


def events(truth: Truth, persons: dict[str, Person]) -> list[tuple[int, str, str]]:
    """(sim ms, action, argument) in time order: power states, check-ins and check-outs."""
    ev: list[tuple[int, str, str]] = [(a, "power", s) for a, _, s in truth.states]
    for s in truth.sessions:
        ev.append((s.check_in, "checkin", s.identifier))
        if s.check_out is not None:
            ev.append((s.check_out, "checkout", s.identifier))
    order = {"checkout": 0, "power": 1, "checkin": 2}
    return sorted(ev, key=lambda e: (e[0], order[e[1]]))


def drive(st: Station, clock: Clock, persons: dict[str, Person], stop: threading.Event) -> None:
    from agent.identity.checkin import call

    for t, action, arg in events(st.truth, persons):
        if stop.wait(max(0.0, clock.real(t) - time.time())):
            return
        if action == "power":
            st.meter.watts = WATTS[arg]
            continue
        body = {"user": arg, "kind": "account"} if action == "checkin" else {}
        for _ in range(60):  # the agent may be down (a fault): the person tries again
            try:
                call(st.checkin_port, f"/{action}", body, timeout=3)
                break
            except OSError:
                if stop.wait(0.5):
                    return
        else:
            st.checkin_failures += 1


class Rig:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root, self.args = root, args
        self.pg = PostgresServer(root / "pg")
        self.broker = MosquittoServer(root / "mqtt", autosave_interval=5)
        self.proxy: TcpProxy | None = None
        self.ingest: IngestProc | None = None
        self.ingest_cfg = root / "ingest.toml"
        self.stations: list[Station] = []
        self.faults: list[dict[str, Any]] = []
        self.dsn = ""

    def start_agent(self, st: Station) -> None:
        st.agent = AgentProc(st.cfg).start()

    def inject(self, kind: str, rng: random.Random) -> None:
        dur = rng.uniform(3, 30)
        t0 = time.time()
        detail = ""
        if kind == "broker_kill":
            self.broker.kill()
            time.sleep(dur)
            self.broker.start()
        elif kind == "ingest_kill":
            assert self.ingest is not None
            self.ingest.kill9()
            time.sleep(dur)
            self.ingest = IngestProc(self.ingest_cfg).start()
        elif kind == "db_restart":
            self.pg.stop()
            time.sleep(dur)
            self.pg.start()
        elif kind == "agent_kill":
            st = rng.choice(self.stations)
            assert st.agent is not None
            st.agent.kill()
            time.sleep(dur)
            self.start_agent(st)
            st.down.append([t0, time.time()])
            detail = st.agent_id
        elif kind == "net_cut":
            assert self.proxy is not None
            self.proxy.cut()
            time.sleep(dur)
            self.proxy.restore()
        self.faults.append({"kind": kind, "at": round(t0, 1), "seconds": round(time.time() - t0, 1),
                            "detail": detail})
        say(f"fault {kind} {detail} for {time.time() - t0:.0f} s")


def truth_within(truth: Truth, clock: Clock, windows: list[tuple[float, float]], external: bool) -> float:
    """True running seconds (real) inside the given real-time windows (optionally external runs only)."""
    total = 0.0
    if external:
        spans = [(clock.real(r.start), clock.real(r.end)) for r in truth.runs if r.external]
    else:
        spans = [(clock.real(a), clock.real(b)) for a, b, s in truth.states if s == "running"]
    for a, b in spans:
        for lo, hi in windows:
            total += max(0.0, min(b, hi) - max(a, lo))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    ap.add_argument("--speed", type=float, default=100.0, help="simulated seconds per real second (default 100)")
    ap.add_argument("--instruments", type=int, default=4)
    ap.add_argument("--start", default="2027-03-01T07:00", help="simulated start, local time (Asia/Shanghai)")
    ap.add_argument("--fault-every", type=float, default=60.0, help="real seconds between faults (default 60)")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs, spools)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="jishi-soak-"))
    root.chmod(0o755)
    rig = Rig(root, args)
    persons = people()
    by_login = {p.login: p for p in persons}
    sim0 = ms(datetime.fromisoformat(args.start).replace(tzinfo=TZ))
    sim1 = sim0 + int(args.days * 24 * HOUR)
    stop = threading.Event()
    drivers: list[threading.Thread] = []
    code = 1
    try:
        rig.pg.start()
        rig.broker.start()
        rig.dsn = rig.pg.create_database("jishi")
        apply(rig.dsn)
        rig.proxy = TcpProxy(rig.broker.port).start()
        for i in range(args.instruments):
            sp = spec(i)
            d = root / f"agent{i}"
            d.mkdir()
            truth = generate(sp, persons, sim0, sim1, args.seed)
            st = Station(sp, truth, d, ModbusMeter(watts=POWER.off_w), free_port())
            st.cfg.write_text(agent_toml(st, rig.proxy.port, args.speed))
            rig.stations.append(st)
        register(rig.dsn, rig.stations, persons)
        ingest_config(rig.ingest_cfg, rig.dsn, rig.broker, "soak-ingest", "soak", retry_initial_s=0.5,
                      retry_max_s=5.0, resend_after_s=5.0, gap_give_up_after_s=3600.0,
                      resend_max_attempts=100)
        with rig.ingest_cfg.open("a") as f:
            f.write(f"\n[derive]\nheartbeat_s = {max(1, round(300 / args.speed))}\n")
        rig.ingest = IngestProc(rig.ingest_cfg).start()
        time.sleep(2.0)
        for st in rig.stations:
            rig.start_agent(st)
        time.sleep(2.0)
        real0 = time.time()
        clock = Clock(sim0, real0, args.speed)
        real_end = clock.real(sim1)
        say(f"{args.instruments} instruments, {args.days} simulated days at {args.speed:g}x: until "
            f"{datetime.fromtimestamp(real_end):%H:%M:%S} ({(real_end - real0) / 60:.1f} min); work dir {root}")
        for st in rig.stations:
            t = threading.Thread(target=drive, args=(st, clock, by_login, stop), daemon=True)
            t.start()
            drivers.append(t)
        next_fault = real0 + args.fault_every * rng.uniform(0.5, 1.0)
        kinds: list[str] = []
        while time.time() < real_end:
            time.sleep(0.5)
            if time.time() >= next_fault and time.time() < real_end - 40:
                if not kinds:  # every kind once per round, in random order
                    kinds = rng.sample(FAULTS, len(FAULTS))
                rig.inject(kinds.pop(), rng)
                next_fault = time.time() + args.fault_every * rng.uniform(0.5, 1.5)
        stop.set()
        for t in drivers:
            t.join(5)
        for st in rig.stations:
            assert st.agent is not None
            st.agent.stop(60)
        t_end = time.time()
        last = {st.agent_id: spool_meta(st.cfg)["next_seq"] - 1 for st in rig.stations}
        deadline = time.monotonic() + 300
        while any(progress(rig.dsn, a) != (n, n) for a, n in last.items()):
            if time.monotonic() > deadline:
                say(f"not everything arrived: { {a: progress(rig.dsn, a) for a in last} } vs {last}")
                break
            time.sleep(1.0)
        code = report(rig, clock, real0, t_end, last, args)
    finally:
        stop.set()
        for st in rig.stations:
            if st.agent is not None and st.agent.alive():
                st.agent.kill()
            st.meter.close()
        if rig.ingest is not None:
            rig.ingest.stop()
        if rig.proxy is not None:
            rig.proxy.stop()
        rig.broker.stop()
        rig.pg.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return code


def report(rig: Rig, clock: Clock, real0: float, t_end: float, last: dict[str, int], args: argparse.Namespace) -> int:
    h = args.speed / 3600  # real seconds -> simulated hours
    rows: list[dict[str, Any]] = []
    ok = True
    lo, hi = datetime.fromtimestamp(real0 - 60, UTC), datetime.fromtimestamp(t_end + 60, UTC)
    with psycopg.connect(rig.dsn, autocommit=True) as conn:
        hours = queries.hours_by_instrument(conn, lo, hi, [st.spec.id for st in rig.stations])
        for st in rig.stations:
            a = st.agent_id
            n, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT r.seq) FROM records r JOIN agent_progress p USING (agent_no)"
                " WHERE p.agent_id = %s", (a,)).fetchone() or (0, 0)
            gaps = conn.execute("SELECT g.kind, g.first_seq, g.last_seq FROM gaps g JOIN agent_progress p"
                                " USING (agent_no) WHERE p.agent_id = %s", (a,)).fetchall()
            refused = conn.execute("SELECT count(*) FROM quarantine WHERE agent_id = %s", (a,)).fetchone()
            cov = conn.execute("SELECT status, reason, extract(epoch FROM start_at), extract(epoch FROM end_at)"
                               " FROM coverage WHERE agent_id = %s ORDER BY start_at", (a,)).fetchall()
            watched = [(float(x), float(y)) for s_, _, x, y in cov if s_ == "watching"]
            unwatched = sum(float(y) - float(x) for s_, _, x, y in cov if s_ != "watching")
            hr = hours.get(st.spec.id)
            run_s = hr.running_s if hr else 0.0
            ext_s = hr.running_external_s if hr else 0.0
            true_run = truth_within(st.truth, clock, watched, external=False)
            true_ext = truth_within(st.truth, clock, watched, external=True)
            true_all = truth_within(st.truth, clock, [(real0, t_end)], external=False)
            injected_down = sum(b - a_ for a_, b in st.down)
            row = {
                "instrument": st.spec.id, "records_made": last[a], "records_stored": int(n),
                "stored_twice": int(n) - int(distinct), "lost": last[a] - int(distinct),
                "gaps": [list(g) for g in gaps], "refused": int(refused[0]) if refused else 0,
                "running_h": round(run_s * h, 3), "true_running_h_watched": round(true_run * h, 3),
                "true_running_h_all": round(true_all * h, 3),
                "running_err_pct": round(100 * (run_s - true_run) / true_run, 3) if true_run else 0.0,
                "external_h": round(ext_s * h, 3), "true_external_h_watched": round(true_ext * h, 3),
                "unattributed_h": round((hr.running_unattributed_s if hr else 0.0) * h, 3),
                "unwatched_h": round(unwatched * h, 3), "agent_down_injected_h": round(injected_down * h, 3),
                "checkin_failures": st.checkin_failures,
            }
            ok &= row["lost"] == 0 and row["stored_twice"] == 0 and not gaps and row["refused"] == 0
            rows.append(row)
    tot_run = sum(r["running_h"] for r in rows)
    tot_true = sum(r["true_running_h_watched"] for r in rows)
    tot_ext = sum(r["external_h"] for r in rows)
    tot_true_ext = sum(r["true_external_h_watched"] for r in rows)
    summary = {
        "days": args.days, "speed": args.speed, "instruments": args.instruments, "real_minutes":
        round((t_end - real0) / 60, 1), "faults": len(rig.faults),
        "faults_by_kind": {k: sum(1 for f in rig.faults if f["kind"] == k) for k in FAULTS},
        "records_made": sum(last.values()), "records_lost": sum(r["lost"] for r in rows),
        "records_stored_twice": sum(r["stored_twice"] for r in rows), "refused": sum(r["refused"] for r in rows),
        "running_h": round(tot_run, 3), "true_running_h_watched": round(tot_true, 3),
        "running_err_pct": round(100 * (tot_run - tot_true) / tot_true, 3) if tot_true else 0.0,
        "external_h": round(tot_ext, 3), "true_external_h_watched": round(tot_true_ext, 3),
        "external_err_pct": round(100 * (tot_ext - tot_true_ext) / tot_true_ext, 3) if tot_true_ext else 0.0,
        "unwatched_h": round(sum(r["unwatched_h"] for r in rows), 3),
        "agent_down_injected_h": round(sum(r["agent_down_injected_h"] for r in rows), 3),
        "ok": ok,
    }
    print()
    print(f"{'instrument':<11} {'made':>6} {'stored':>6} {'lost':>4} {'twice':>5} {'run h':>8} {'true h':>8} "
          f"{'err %':>7} {'ext h':>7} {'true ext':>8} {'unattr h':>8} {'unwatched':>9} {'down inj':>8}")
    for r in rows:
        print(f"{r['instrument']:<11} {r['records_made']:>6} {r['records_stored']:>6} {r['lost']:>4} "
              f"{r['stored_twice']:>5} {r['running_h']:>8.2f} {r['true_running_h_watched']:>8.2f} "
              f"{r['running_err_pct']:>7.2f} {r['external_h']:>7.2f} {r['true_external_h_watched']:>8.2f} "
              f"{r['unattributed_h']:>8.2f} {r['unwatched_h']:>9.2f} {r['agent_down_injected_h']:>8.2f}")
    print()
    print(json.dumps(summary, ensure_ascii=False))
    for f in rig.faults:
        print(f"  fault {f['kind']:<12} {f['detail']:<12} {f['seconds']:>5.1f} s")
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "instruments": rows, "faults": rig.faults},
                                       ensure_ascii=False, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
