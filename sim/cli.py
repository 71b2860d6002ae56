"""`jishi-sim`: simulated instruments, their ground truth, and fleets of simulated agents.

    jishi-sim truth   [--seed 7] [--from 2025-01-01] [--to 2026-01-01] [--instruments 12] [--schedule FILE]
                      [--out DIR]
        The seeded usage model (or a scripted schedule file) -> the ground truth: truth.json with
        states, runs, sessions and agent uptime per instrument, and runs.csv / sessions.csv /
        states.csv; prints running and external hours per instrument.
    jishi-sim records [--seed 7] [--from ..] [--to ..] [--instruments 12] [--schedule FILE] --out DIR
        The same truth, and the chained records each instrument's agent would have made
        (<agent>.jsonl, one record a line), as sim/history.py's virtual agent makes them.
    jishi-sim fleet   --agents 1000 --broker HOST:PORT [--dsn DSN] [--seed S] [--heartbeat 60]
                      [--duration 60] [--ramp 500] [--state FILE]
        Thousands of lightweight agents in one process: real MQTT connections, real signing and
        chaining; --dsn registers them (instruments, agents, keys) first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

from sim.model import HOUR, TZ, Truth, generate, load_schedule, ms, write_truth


def _day(text: str) -> date:
    return date.fromisoformat(text)


def _truths(args: argparse.Namespace) -> list[Truth]:
    from sim.catalog import PEOPLE, bench_instruments

    if args.schedule:
        return load_schedule(Path(args.schedule), PEOPLE)
    t0 = ms(datetime.combine(args.start, datetime.min.time(), TZ))
    t1 = ms(datetime.combine(args.end, datetime.min.time(), TZ))
    if t1 <= t0:
        raise SystemExit("jishi-sim: --to must be after --from")
    return [generate(spec, PEOPLE, t0, t1, args.seed) for spec in bench_instruments(args.instruments)]


def cmd_truth(args: argparse.Namespace) -> int:
    truths = _truths(args)
    paths = write_truth(truths, Path(args.out))
    total = ext = 0.0
    print(f"{'instrument':<16}{'running h':>11}{'external h':>12}{'sessions':>10}{'forgotten':>11}")
    for tr in truths:
        r, e = tr.running_ms() / HOUR, tr.external_running_ms() / HOUR
        total += r
        ext += e
        forgot = sum(1 for s in tr.sessions if s.check_out is None)
        print(f"{tr.instrument:<16}{r:>11.1f}{e:>12.1f}{len(tr.sessions):>10}{forgot:>11}")
    if truths:
        print(f"{'mean':<16}{total / len(truths):>11.1f}{ext / len(truths):>12.1f}   sharing {ext / total:.1%}"
              if total else "no running hours")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_records(args: argparse.Namespace) -> int:
    from sim.catalog import bench_instruments
    from sim.history import VirtualAgent, profile

    truths = _truths(args)
    out = Path(args.out)
    write_truth(truths, out)
    specs = {s.id: s for s in bench_instruments(max(args.instruments, 1))}
    for tr in truths:
        spec = specs.get(tr.instrument)
        if spec is None:
            print(f"{tr.instrument}: not in the simulated catalog, no agent profile; skipped", file=sys.stderr)
            continue
        recs = VirtualAgent(f"{tr.instrument}-a1", spec, tr, profile(spec), seed=args.seed).run()
        path = out / f"{tr.instrument}-a1.jsonl"
        with path.open("w") as f:
            for r in recs:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        print(f"{path}: {len(recs)} records")
    return 0


def raise_nofile(want: int) -> int:
    """Raise the soft open-files limit towards `want` (up to the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, want), hard) if hard != resource.RLIM_INFINITY else max(soft, want)
    if new != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def cmd_fleet(args: argparse.Namespace) -> int:
    from sim.fleet import Stats, members, register, run_fleet

    host, _, port = args.broker.rpartition(":")
    limit = raise_nofile(args.agents + 256)
    if limit < args.agents + 64:
        print(f"jishi-sim: open files limited to {limit}; {args.agents} connections will not fit", file=sys.stderr)
    fleet = members(args.agents, units=args.units, prefix=args.prefix)
    if args.dsn:
        n = register(args.dsn, fleet, args.seed)
        print(f"registered {n} new agents ({len(fleet) - n} already known)")

    def report(t: float, s: Stats) -> None:
        d = s.as_dict()
        print(f"{t:7.0f} s  connected {d['connected']:>6}  sent {d['records_sent']:>8}  acked {d['acked_records']:>8}"
              f"  ack p50 {d['ack_latency_s']['p50']} p99 {d['ack_latency_s']['p99']}", flush=True)

    async def go() -> Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats, _ = await run_fleet(fleet, host or "127.0.0.1", int(port), args.seed, heartbeat_s=args.heartbeat,
                                   duration_s=args.duration, ramp_per_s=args.ramp,
                                   state_file=Path(args.state) if args.state else None, report=report, stop=stop)
        return stats

    stats = asyncio.run(go())
    print(json.dumps(stats.as_dict(), indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jishi-sim", description="Simulated instruments, ground truth and agent fleets")
    sub = p.add_subparsers(dest="cmd", required=True)
    last_year = datetime.now(TZ).year - 1
    for name, fn, help_ in (("truth", cmd_truth, "ground truth of simulated instruments (JSON and CSV)"),
                            ("records", cmd_records, "ground truth and the records their agents would make")):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--seed", type=int, default=7)
        sp.add_argument("--from", dest="start", type=_day, default=date(last_year, 1, 1))
        sp.add_argument("--to", dest="end", type=_day, default=date(last_year + 1, 1, 1))
        sp.add_argument("--instruments", type=int, default=12, help="how many simulated instruments (catalog order)")
        sp.add_argument("--schedule", help="a scripted schedule (TOML or JSON) instead of the usage model")
        sp.add_argument("--out", default="sim-out" if name == "truth" else None, required=name == "records")
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("fleet", help="many lightweight agents over real MQTT connections (load tests)")
    sp.add_argument("--agents", type=int, default=1000)
    sp.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT")
    sp.add_argument("--dsn", help="register the fleet in this database first")
    sp.add_argument("--seed", default="fleet", help="keys are derived from it")
    sp.add_argument("--prefix", default="fleet", help="agent ids are <prefix>-a00000 ...")
    sp.add_argument("--units", type=int, default=100)
    sp.add_argument("--heartbeat", type=float, default=60.0, help="seconds between heartbeats per agent")
    sp.add_argument("--duration", type=float, default=60.0, help="seconds to run after the last agent connected")
    sp.add_argument("--ramp", type=float, default=500.0, help="new connections per second")
    sp.add_argument("--state", help="keep each agent's chain position here between runs")
    sp.set_defaults(fn=cmd_fleet)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "start", None) and args.end <= args.start:
        args.end = args.start + timedelta(days=365)
    rc: int = args.fn(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
