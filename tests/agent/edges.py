"""True run edges, end to end, against a third-party-style meter: a schedule of runs (short, long,
with power dips inside and spikes outside) drives a Modbus RTU slave emulated on a pseudo-terminal
(tests/agent/devices.py); the agent's real power-meter detector polls it once per (virtual)
second, the agent's state machine with the default debounce decides, the agent's recorder writes
state records and heartbeats into a real spool, and protocols.derive turns them into running
segments exactly as the server and the offline verifier do. Used by tests/agent/test_edges.py
and `bench/accuracy.py --edges`.

Time is virtual (t and mono advance 1 s per poll, the device follows the schedule at that time),
so a 10-minute run takes a second or two; the serial I/O is real.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from agent.clock import Clock
from agent.config import StateSection
from agent.detectors import power_meter
from agent.detectors.power_meter import Level
from agent.recorder import Recorder
from agent.spool import Spool
from agent.state import StateMachine, parse_rule
from protocols.derive import Rec, derive
from tests.agent.devices import RtuBus

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z; virtual
RUN_W, IDLE_W = 850.0, 40.0
LEVELS = (Level("off", 5), Level("idle", 200), Level("running"))


@dataclass(frozen=True)
class Schedule:
    """Seconds from the start. Runs are the truth; dips (power low inside a run, shorter than the
    post-run hold) and spikes (power high for a moment outside runs, shorter than the confirmation)
    are signal noise that must not change it."""

    name: str
    runs: tuple[tuple[float, float], ...]
    duration: int
    dips: tuple[tuple[float, float], ...] = ()
    spikes: tuple[tuple[float, float], ...] = ()
    unplugged: tuple[tuple[float, float], ...] = ()
    """the RS-485 adapter is pulled out: the agent cannot see, so it must not count running"""

    def watts(self, s: float) -> float:
        def inside(spans: tuple[tuple[float, float], ...]) -> bool:
            return any(a <= s < b for a, b in spans)

        if inside(self.runs):
            return IDLE_W if inside(self.dips) else RUN_W
        return RUN_W if inside(self.spikes) else IDLE_W


SCENARIOS = (
    Schedule("one 10-minute run", runs=((30.5, 630.5),), duration=720),
    Schedule("short runs", runs=((20.5, 50.5), (140.5, 160.5), (250.5, 262.5)), duration=360),
    Schedule("long run with dips", runs=((15.5, 1215.5),), dips=((400.5, 405.5), (900.5, 930.5)), duration=1300),
    Schedule("spikes outside runs", runs=((100.5, 400.5),), spikes=((20.5, 22.5), (520.5, 523.5)), duration=600),
)
# The instrument runs 100..700 s but the adapter is out for 69 s of it: measured = what was seen.
DEAD_LINK = Schedule("adapter unplugged for 69 s during a run", runs=((100.5, 700.5),), unplugged=((300.5, 369.5),),
                     duration=800)


class VirtualClock(Clock):
    """The agent's clock on a virtual time line (`at` ms since T0)."""

    def __init__(self) -> None:
        super().__init__(jump_ms=2000)
        self.at = 0

    def mono(self) -> int:
        return self.at

    def now(self) -> tuple[int, int]:
        return T0 + self.at, self.at


@dataclass
class Result:
    schedule: Schedule
    measured: list[tuple[int, int]]  # running segments (ms since T0), merged
    truth: list[tuple[int, int]]
    edge_errors_ms: list[int] = field(default_factory=list)  # |measured - true| per edge, in order

    @property
    def running_error(self) -> float:
        true = sum(b - a for a, b in self.truth)
        meas = sum(b - a for a, b in self.measured)
        return (meas - true) / true


def run_schedule(sched: Schedule, confirm_s: float | None = None, post_run_s: float | None = None,
                 heartbeat_s: int = 60, workdir: Path | None = None) -> Result:
    """Play `sched` against the emulated meter through the agent's detector, state machine and
    recorder; derive the running segments from the records."""
    defaults = StateSection(running="power")
    confirm_ms = round((defaults.confirm_s if confirm_s is None else confirm_s) * 1000)
    post_ms = round((defaults.post_run_s if post_run_s is None else post_run_s) * 1000)
    tmp = Path(tempfile.mkdtemp(prefix="jishi-edges-")) if workdir is None else workdir
    bus = RtuBus(tmp / "ttyRS485")
    clock = VirtualClock()
    spool = Spool(tmp / "spool.sqlite", "edge-agent")
    try:
        boot = spool.start_boot()
        rec = Recorder(spool, "edge-agent", boot, clock)
        det = power_meter.create("power", power_meter.Config(
            port=str(bus.port.path), levels=LEVELS, timeout_s=0.2, retries=1, reopen_s=1.0))
        plugged = True
        names = ["power"]
        machine = StateMachine(parse_rule("power", names), parse_rule("power.on", names), None,
                               confirm_ms, post_ms, 0)
        rec.lifecycle("boot", {"sw": "edges"})
        last_hb = 0
        try:
            for k in range(sched.duration + 1):
                clock.at = k * 1000
                bus.set_power(1, "sdm120", sched.watts(float(k)))
                out = any(a <= k < b for a, b in sched.unplugged)
                if out == plugged:
                    bus.port.unplug() if out else bus.port.replug()
                    plugged = not out
                obs = {"power": det.poll(float(k))}
                tr = machine.update(obs, T0 + clock.at, clock.at)
                if tr is not None:
                    rec.state(tr, "power", {n: {"v": o.verdict, **o.evidence} for n, o in obs.items()})
                if clock.at - last_hb >= heartbeat_s * 1000:
                    rec.heartbeat(machine.state, clock.at - last_hb, {})
                    last_hb = clock.at
            rec.heartbeat(machine.state, clock.at - last_hb, {})
        finally:
            det.close()
        bodies = [orjson.loads(b) for (b,) in spool.db.execute("SELECT body FROM records ORDER BY seq")]
    finally:
        spool.close()
        bus.close()
    derived = derive(Rec.from_record(b, b["t"]) for b in bodies)
    measured: list[tuple[int, int]] = []
    for s in derived.segments:
        if s.state != "running":
            continue
        a, b = s.start - T0, s.end - T0
        if measured and measured[-1][1] == a:
            measured[-1] = (measured[-1][0], b)
        else:
            measured.append((a, b))
    truth = [(round(a * 1000), round(b * 1000)) for a, b in sched.runs]
    result = Result(sched, measured, truth)
    if len(measured) == len(truth):
        for (ma, mb), (ta, tb) in zip(measured, truth, strict=True):
            result.edge_errors_ms += [abs(ma - ta), abs(mb - tb)]
    return result
