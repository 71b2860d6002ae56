"""Connections: N simulated agents connected at once to one broker, with the server keeping up.

    .venv/bin/python bench/connections.py [--agents 10000] [--heartbeat 60] [--ramp 400] [--hold 180]
                                          [--workers 1]

Everything on this host: a private PostgreSQL (durable: fsync on) + TimescaleDB, one Mosquitto,
`--workers` ingest processes sharing the subscription, and the fleet (sim/fleet.py) in this
process: every agent its own TCP connection with a persistent session, a signed Will, a signed
retained birth, subscriptions to its own ack and cmd, and a signed one-record envelope per
heartbeat (plus a state change now and then), the way a live agent sends. The open-files limit is
raised to the hard limit first (the broker inherits it).

"Keeping up" means: every record sent is stored (watermarks), within 60 s of the fleet stopping,
and in the steady state (from 30 s after the last connection until the stop) the time from publish to the agent
receiving the server's ack (the durable watermark, sent after commit) has a p99 of at most
--max-ack-p99 seconds. Also printed: the backlog (sent - stored) over time, and the CPU and memory
of the broker, the ingest processes, PostgreSQL and the fleet itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg

from server.db.migrate import apply
from sim.devstack import MosquittoServer, PostgresServer
from sim.fleet import Stats, members, register, run_fleet

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    import platform

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def stored(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(watermark), 0) FROM agent_progress").fetchone()
    return int(row[0]) if row else 0


class Probe:
    """CPU seconds and resident memory of a process, or of a process and its children (PostgreSQL)."""

    def __init__(self, pid: int, tree: bool = False) -> None:
        self.p = psutil.Process(pid)
        self.tree = tree
        self.cpu0 = self._cpu()
        self.t0 = time.monotonic()
        self.rss_peak = 0

    def _procs(self) -> list[psutil.Process]:
        return [self.p, *self.p.children(recursive=True)] if self.tree else [self.p]

    def _cpu(self) -> float:
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def sample(self) -> None:
        try:
            self.rss_peak = max(self.rss_peak, sum(p.memory_info().rss for p in self._procs()))
        except psutil.Error:
            pass

    def cpu_percent(self) -> float:
        return (self._cpu() - self.cpu0) / (time.monotonic() - self.t0) * 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--heartbeat", type=float, default=60.0, help="seconds between an agent's heartbeats")
    ap.add_argument("--ramp", type=float, default=400.0, help="new connections per second")
    ap.add_argument("--hold", type=float, default=180.0, help="seconds with everyone connected")
    ap.add_argument("--workers", type=int, default=1, help="ingest processes on the shared subscription")
    ap.add_argument("--max-ack-p99", type=float, default=5.0, help="steady-state ack latency that counts as keeping up")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; open files {soft} -> {hard}")
    if hard < args.agents + 200:
        print(f"the hard open-files limit ({hard}) is below {args.agents} connections; expect refusals")
    d = Path(tempfile.mkdtemp(prefix="jishi-conn-"))
    d.chmod(0o755)
    pg = PostgresServer(d / "pg")
    broker = MosquittoServer(d / "mqtt", autosave_interval=300)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        broker.start()
        dsn = pg.create_database("conn")
        apply(dsn)
        fleet = members(args.agents, units=max(1, args.agents // 100))
        t = time.perf_counter()
        register(dsn, fleet, "bench")
        print(f"registered {len(fleet):,} instruments, agents and keys in {time.perf_counter() - t:.1f} s")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JISHI_")} | {"PYTHONPATH": str(ROOT)}
        for w in range(args.workers):
            cfg = d / f"ingest{w}.toml"
            cfg.write_text(f'log_level = "WARNING"\n[database]\ndsn = "{dsn}"\n[mqtt]\nhost = "{broker.host}"\n'
                           f'port = {broker.port}\nclient_id = "bench-ingest-{w}"\n[metrics]\nport = 0\n')
            with (d / f"ingest{w}.log").open("ab") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "server.cli", "--config", str(cfg), "ingest"],
                                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
        time.sleep(2)
        assert broker.proc is not None
        postmaster = int((d / "pg" / "postmaster.pid").read_text().split()[0])
        probes = {"broker": Probe(broker.proc.pid), **{f"ingest{i}": Probe(p.pid) for i, p in enumerate(procs)},
                  "postgres": Probe(postmaster, tree=True), "fleet": Probe(os.getpid())}
        backlog: list[tuple[float, int, int]] = []  # (t, connected, sent - stored)
        stats_ref: dict[str, Stats] = {}

        def report(t: float, s: Stats) -> None:
            stats_ref["s"] = s
            for probe in probes.values():
                probe.sample()
            behind = max(0, s.records_sent - stored(dsn))  # PUBACK may come after the commit
            backlog.append((t, s.connected, behind))
            lat = s.as_dict()["ack_latency_s"]
            print(f"{t:6.0f} s  connected {s.connected:>6,}  sent {s.records_sent:>8,}  not yet stored {behind:>6,}"
                  f"  ack p50 {lat['p50']} p99 {lat['p99']}", flush=True)

        ramp_s = args.agents / args.ramp
        started = time.monotonic()
        stats, agents = asyncio.run(run_fleet(fleet, broker.host, broker.port, "bench", heartbeat_s=args.heartbeat,
                                              duration_s=args.hold, ramp_per_s=args.ramp, report=report,
                                              report_every_s=10))
        stopped = time.monotonic()
        sent = sum(a.seq for a in agents)
        deadline = time.monotonic() + 600
        while stored(dsn) < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        drained = time.monotonic() - stopped
        have = stored(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            refused = conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY 1").fetchall()
            online = conn.execute("SELECT count(*) FROM agent_progress WHERE birth_at IS NOT NULL").fetchone()
        d_ = stats.as_dict()
        print()
        print(f"agents {args.agents:,}, ramp {args.ramp:.0f}/s ({ramp_s:.0f} s), hold {args.hold:.0f} s, "
              f"heartbeat {args.heartbeat:.0f} s ({args.agents / args.heartbeat:,.0f} envelopes/s steady), "
              f"{args.workers} ingest process(es)")
        print(f"peak connected {d_['peak_connected']:,}; connect failures {d_['connect_failures']}; "
              f"dropped connections {d_['disconnects']}; births seen by the server {online[0] if online else '?'}")
        print(f"records sent {sent:,}, stored {have:,} ({'all' if have >= sent else 'NOT all'}), "
              f"{drained:.1f} s after the fleet stopped; refused: {refused or 'none'}")
        lat = d_["ack_latency_s"]
        print(f"publish -> ack (after commit), whole run: p50 {lat['p50']} s, p90 {lat['p90']} s, "
              f"p99 {lat['p99']} s, max {lat['max']} s over {lat['n']:,} records")
        # steady state: from 30 s after the last connection to the stop (when every agent sends its
        # stop record and clean death at once)
        steady = stats.latency_between(started + ramp_s + 30, started + ramp_s + args.hold)
        print(f"publish -> ack, steady state (ramp end + 30 s .. stop): p50 {steady['p50']} s, "
              f"p90 {steady['p90']} s, p99 {steady['p99']} s, max {steady['max']} s over {steady['n']:,} records")
        hold = [b for t, c, b in backlog if c >= args.agents * 0.99]
        if hold:
            print(f"backlog while all connected: max {max(hold):,} records, last {hold[-1]:,}")
        wall = stopped - started
        for name, probe in probes.items():
            print(f"{name:<8} CPU {probe.cpu_percent():5.1f} % of one core over {wall:.0f} s, peak RSS "
                  f"{probe.rss_peak / 2**20:,.0f} MiB")
        p99 = steady["p99"]
        ok = (have >= sent and d_["peak_connected"] >= args.agents and drained <= 60
              and p99 is not None and float(p99) <= args.max_ack_p99)
        print(f"result: {'KEPT UP' if ok else 'DID NOT KEEP UP'} with {d_['peak_connected']:,} agents connected at once"
              f" (all stored, steady-state ack p99 <= {args.max_ack_p99:g} s, drained within 60 s)")
        return 0 if ok else 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
        pg.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
