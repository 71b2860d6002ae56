"""A virtual agent: the records a real agent would have made about a `Truth`, in simulated time.

Why not run `jishi-agent` for a year? It polls once a second: a year is 31.5 million polls per
instrument. The detectors' raw observations only change at known moments (a run starts, the
power dips, a user checks in), so this module polls on the agent's own tick grid only from each
such moment until the agent's state machine has settled again (its raw verdict equals its state),
plus at every heartbeat. Between those polls nothing the state machine reads changes, so the
state records come out as the agent's would. It uses the agent's own pieces where they decide
something: `agent.state.StateMachine` and `parse_rule` (debounce, post-processing hold),
`agent.detectors.power_meter.Levels` (power levels with hysteresis, including instruments whose
running draw is below standby), `agent.recorder.clean_by_detector` (evidence limits). Session
bookkeeping mirrors `agent.identity.Sessions` (check-in, replaced, idle timeout, agent stop).

Records are chained exactly as the spool chains them (seq from 1, `prev` = SHA-256 of the
canonical bytes of the record before) and sealed into envelopes with the agent's Ed25519 key by
`protocols.envelope.envelope`, the agent's own sealing.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import SOFTWARE
from agent.config import IdentitySection
from agent.detectors.base import Observation, Verdict
from agent.detectors.power_meter import Level, Levels
from agent.recorder import clean_by_detector, clean_evidence
from agent.state import StateMachine, Transition, parse_rule
from protocols.canonical import dumps_sorted
from protocols.chain import GENESIS
from protocols.envelope import MAX_ENVELOPE_BYTES, envelope
from sim.model import SEC, InstrumentSpec, Truth

SHORT = {"running": "run", "idle": "idle", "off": "off", "unknown": "unk", "fault": "fault"}
LINE_WORDS = {"running": "STATUS RUN", "idle": "STATUS IDLE", "off": "", "fault": "STATUS ERR 12"}


@dataclass(frozen=True)
class Profile:
    """The agent configuration a lab would write for the instrument (the demo writes the same rule,
    levels and debounce into the real agents' TOML)."""

    detectors: tuple[str, ...]
    running: str
    on: str
    confirm_s: float
    post_run_s: float
    levels: tuple[Level, ...] = ()
    hysteresis_w: float = 2.0
    sample_period_s: float = 1.0
    heartbeat_s: float = 300.0
    idle_timeout_s: float = IdentitySection.idle_timeout_s  # the agent's default
    identity: str = "checkin"


def power_levels(spec: InstrumentSpec) -> tuple[tuple[Level, ...], float]:
    """Levels as `jishi-agent calibrate` would propose them: boundaries halfway between the draws."""
    p = spec.power
    if p.running_w < p.standby_w:  # running draw below standby (the heater is off while measuring)
        lo, hi = (p.off_w + p.running_w) / 2, (p.running_w + p.standby_w) / 2
        levels = (Level("off", round(lo, 1)), Level("running", round(hi, 1)), Level("standby"))
        gap = min(p.running_w - p.off_w, p.standby_w - p.running_w)
    else:
        lo, hi = (p.off_w + p.standby_w) / 2, (p.standby_w + p.running_w) / 2
        levels = (Level("off", round(lo, 1)), Level("idle", round(hi, 1)), Level("running"))
        gap = min(p.standby_w - p.off_w, p.running_w - p.standby_w)
    return levels, round(max(1.0, gap * 0.1), 1)


def profile(spec: InstrumentSpec, heartbeat_s: float = 300.0,
            idle_timeout_s: float = IdentitySection.idle_timeout_s) -> Profile:
    levels, hyst = power_levels(spec)
    if spec.detection == "power":
        return Profile(("power",), "power", "power.on", spec.confirm_s, 0.0, levels, hyst, heartbeat_s=heartbeat_s,
                       idle_timeout_s=idle_timeout_s, identity=spec.identity)
    if spec.detection == "serial":
        return Profile(("status",), "status", "status.on", spec.confirm_s, 0.0, heartbeat_s=heartbeat_s,
                       idle_timeout_s=idle_timeout_s, identity=spec.identity)
    if spec.detection == "software":
        return Profile(("software",), "software", "software.on", spec.confirm_s, float(spec.hidden_post_s),
                       heartbeat_s=heartbeat_s, idle_timeout_s=idle_timeout_s, identity=spec.identity)
    return Profile(("status", "power"), "status or power", "status.on or power.on", spec.confirm_s, 0.0, levels,
                   hyst, heartbeat_s=heartbeat_s, idle_timeout_s=idle_timeout_s, identity=spec.identity)


class Signals:
    """What the detectors see at time t, from the truth. Queries must come in ascending t."""

    def __init__(self, spec: InstrumentSpec, truth: Truth, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.state_starts = [s[0] for s in truth.states]
        self.states = truth.states
        runs = sorted(truth.runs, key=lambda r: r.start)
        self.run_starts = [r.start for r in runs]
        self.runs = runs
        self.dips = sorted(truth.dips)
        self.dip_starts = [d[0] for d in self.dips]
        self.ramps = sorted(truth.ramps)
        self.ramp_starts = [r[0] for r in self.ramps]
        self.glitches = truth.glitches
        self.glitch_starts = [g[0] for g in truth.glitches]
        sess = sorted((s.check_in, s.left) for s in truth.sessions)
        self.open_starts = [a for a, _ in sess]
        self.opens = sess

    def _in(self, starts: list[int], spans: Sequence[tuple[int, int] | tuple[int, int, str]], t: int) -> int:
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and spans[i][0] <= t < spans[i][1]:
            return i
        return -1

    def state(self, t: int) -> str:
        i = bisect.bisect_right(self.state_starts, t) - 1
        return self.states[max(0, i)][2]

    def signal_running(self, t: int) -> bool:
        """The run is visible to the detectors (not in its hidden post-processing, not in a dip)."""
        i = bisect.bisect_right(self.run_starts, t) - 1
        if i < 0:
            return False
        r = self.runs[i]
        if not (r.start <= t < r.signal_end):
            return False
        return self._in(self.dip_starts, self.dips, t) < 0

    def watts(self, t: int, running: bool, state: str) -> float:
        p = self.spec.power
        j = self._in(self.ramp_starts, self.ramps, t)
        if j >= 0 and p.running_w < p.standby_w:
            w = p.running_w
        elif state == "off":
            w = p.off_w
        elif running:
            w = p.running_w
        else:
            w = p.standby_w
        return max(0.0, w * (1.0 + p.noise * self.rng.gauss(0.0, 1.0)))

    def software_open(self, t: int) -> bool:
        """The control software is open while someone is at the instrument (sessions do not overlap)."""
        i = bisect.bisect_right(self.open_starts, t) - 1
        return i >= 0 and self.opens[i][0] <= t < self.opens[i][1]

    def change_times(self) -> list[int]:
        """Every moment at which some detector's raw observation can change."""
        out: set[int] = set(self.state_starts)
        for r in self.runs:
            out.update((r.start, r.signal_end, r.end))
        for d in self.dips:
            out.update(d)
        for rp in self.ramps:
            out.update((rp[0], rp[1]))
        for a, b in self.opens:
            out.update((a, b))
        for g in self.glitches:
            out.update(g)
        return sorted(out)

    def glitch(self, t: int) -> bool:
        return self._in(self.glitch_starts, self.glitches, t) >= 0


@dataclass
class _Weighted:
    """Heartbeat evidence like agent.runner.Summary, each poll weighted by the ticks it stands for
    (its observation held until the next poll)."""

    keys: tuple[str, ...]
    n: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    lo: int | None = None
    hi: int | None = None
    total: int = 0
    last: dict[str, Any] = field(default_factory=dict)

    def add(self, obs: Observation, weight: int) -> None:
        if weight <= 0:
            return
        self.n += weight
        short = SHORT[obs.verdict]
        self.counts[short] = self.counts.get(short, 0) + weight
        for k, v in obs.evidence.items():
            if k in self.keys and isinstance(v, int) and not isinstance(v, bool):
                self.lo = v if self.lo is None else min(self.lo, v)
                self.hi = v if self.hi is None else max(self.hi, v)
                self.total += v * weight
            else:
                self.last[k] = v

    def evidence(self) -> dict[str, Any]:
        ev: dict[str, Any] = {"n": self.n, **self.counts}
        if self.lo is not None and self.hi is not None and self.n:
            key = self.keys[0]
            ev[f"{key}_min"], ev[f"{key}_max"], ev[f"{key}_avg"] = self.lo, self.hi, self.total // self.n
        for k, v in self.last.items():
            if k not in ev and len(ev) < 16:
                ev[k] = v
        return ev


SUMMARY_KEYS = {"power": ("mw",), "status": ("ms",), "software": ("cpu",)}


class VirtualAgent:
    """Makes one agent's records for a truth; `records` grows as `run()` goes."""

    def __init__(self, agent_id: str, spec: InstrumentSpec, truth: Truth, prof: Profile, seed: int = 0,
                 first_seq: int = 1, prev: str = GENESIS, first_boot: int = 1, config_digest: str = "sim") -> None:
        self.agent = agent_id
        self.spec = spec
        self.truth = truth
        self.prof = prof
        self.rng = random.Random(f"{seed}:{agent_id}:agent")
        self.signals = Signals(spec, truth, random.Random(f"{seed}:{agent_id}:noise"))
        self.seq = first_seq - 1
        self.prev = prev
        self.boot = first_boot - 1
        self.config_digest = config_digest
        self.records: list[dict[str, Any]] = []
        self.period = round(prof.sample_period_s * SEC)
        self.hb = round(prof.heartbeat_s * SEC)
        self.users = {s.check_in: s for s in truth.sessions}

    # -- records -------------------------------------------------------------------------------

    def _emit(self, t: int, mono: int, typ: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        rec = {"agent": self.agent, "boot": self.boot, "seq": self.seq, "t": t, "mono": mono, "prev": self.prev,
               "type": typ, **fields}
        self.prev = hashlib.sha256(dumps_sorted(rec)).hexdigest()
        self.records.append(rec)
        return rec

    # -- detectors ---------------------------------------------------------------------------------

    def _observe(self, t: int, levels: Levels | None) -> dict[str, Observation]:
        sig = self.signals
        state = sig.state(t)
        running = state == "running" and sig.signal_running(t)
        obs: dict[str, Observation] = {}
        glitch = sig.glitch(t)
        for name in self.prof.detectors:
            if glitch and name == self.prof.detectors[0]:
                obs[name] = Observation.failed("no response within 0.5 s")
            elif name == "power":
                assert levels is not None
                mw = round(sig.watts(t, running, state) * 1000)
                idx = levels.classify(mw)
                obs[name] = Observation(levels.states[idx], {"mw": mw, "lvl": idx})
            elif name == "status":
                v: Verdict = "off" if state == "off" else "fault" if state == "fault" else \
                    "running" if running else "idle"
                words = LINE_WORDS[v] if self.spec.dialect == "line" else \
                    ("" if v == "off" else "16" if v == "running" else "0")
                ev: dict[str, int | str | bool | None] = {"resp": words, "ms": 0 if v == "off" else 12 + t % 7}
                if self.spec.dialect == "scpi" and v != "off":
                    ev["reg"] = 16 if v == "running" else 0
                if self.spec.dialect == "scpi" and v == "fault":
                    v = "idle"  # the SCPI operation register has no fault bit
                obs[name] = Observation(v, ev)
            else:  # software
                is_open = sig.software_open(t) or running
                cpu = (180 + t % 90) if running else (4 + t % 5) if is_open else 0
                sv: Verdict = "running" if running else "idle" if is_open else "off"
                obs[name] = Observation(sv, {"procs": int(is_open), "cpu": cpu, "io": 0, "children": int(running)})
        return obs

    # -- the simulation ------------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        first = True
        for up in self.truth.agent:
            self._boot(up.start, up.end, up.clean, first)
            first = False
        return self.records

    def _boot(self, start: int, end: int, clean: bool, first: bool) -> None:
        prof = self.prof
        self.boot += 1
        names = list(prof.detectors)
        machine = StateMachine(parse_rule(prof.running, names), parse_rule(prof.on, names), None,
                               round(prof.confirm_s * 1000), round(prof.post_run_s * 1000), 1_800_000,
                               post_credit_ms=round(prof.post_run_s * 1000))  # the hidden post-processing
        levels = Levels(prof.levels, prof.hysteresis_w) if "power" in prof.detectors else None
        period = self.period
        self._emit(start, 0, "lifecycle", {"event": "boot", "detail": clean_evidence(
            {"sw": SOFTWARE, "pid": 1000 + self.boot, "os": "Windows", "config": self.config_digest,
             "detectors": len(names)})})
        if first:
            self._emit(start, 0, "lifecycle", {"event": "config", "detail": clean_evidence(
                {"digest": self.config_digest, "previous": None, "rule": prof.running})})

        def grid(t: int) -> int:  # first tick at or after t
            return start + -(-(t - start) // period) * period

        heap: list[int] = [start]
        for t in self.signals.change_times():
            if start <= t < end:
                g = grid(t)
                # the tick before the change too: the state machine's post-processing hold counts from
                # the last tick that still saw the run
                heap += (g, g - period) if g - period > start else (g,)
        for s in self.truth.sessions:
            for when in (s.check_in, s.check_out):
                if when is not None and start <= when < end:
                    heap.append(grid(when))
        heapq.heapify(heap)
        next_hb = start + self.hb
        heapq.heappush(heap, next_hb)
        summaries = {n: _Weighted(SUMMARY_KEYS[n]) for n in names}
        last_hb_mono = 0
        last_tick = -1
        prev_obs: dict[str, Observation] | None = None
        sess_open: tuple[str, str, str] | None = None  # (session id, method, user)
        not_running_since: int | None = 0
        check_ins = sorted((s.check_in, s) for s in self.truth.sessions if start <= s.check_in < end)
        check_outs = sorted((s.check_out, s) for s in self.truth.sessions
                            if s.check_out is not None and start <= s.check_out < end)
        ci_i = co_i = 0
        method = "os" if prof.identity == "os" else "checkin"
        while heap:
            t = heapq.heappop(heap)
            if t <= last_tick or t >= end:
                continue
            if prev_obs is not None:  # the previous observation held until now
                for n, o in prev_obs.items():
                    summaries[n].add(o, (t - last_tick) // period)
            last_tick = t
            mono = t - start
            obs = self._observe(t, levels)
            prev_obs = obs
            tr = machine.update(obs, t, mono)
            if tr is not None:
                self._state(t, mono, tr, obs)
            # identity: mirrors agent.identity.Sessions for the one explicit (or OS) source
            if machine.state in ("running", "unknown"):
                not_running_since = None
            elif not_running_since is None:
                not_running_since = mono
            if method == "checkin" and sess_open is not None and not_running_since is not None \
                    and mono - not_running_since >= round(prof.idle_timeout_s * 1000):
                self._emit(t, mono, "session_end", {"session": sess_open[0], "reason": "idle_timeout"})
                sess_open = None
                not_running_since = mono
            while co_i < len(check_outs) and check_outs[co_i][0] <= t:
                s = check_outs[co_i][1]
                co_i += 1
                if sess_open is not None and sess_open[2] == s.identifier:
                    self._emit(t, mono, "session_end",
                               {"session": sess_open[0], "reason": "os_logout" if method == "os" else "checkout"})
                    sess_open = None
            while ci_i < len(check_ins) and check_ins[ci_i][0] <= t:
                s = check_ins[ci_i][1]
                ci_i += 1
                if sess_open is not None:
                    if sess_open[2] == s.identifier:
                        continue
                    self._emit(t, mono, "session_end", {"session": sess_open[0], "reason": "replaced"})
                sid = f"{self.rng.getrandbits(64):016x}"
                self._emit(t, mono, "session_start", {"session": sid, "method": method, "user": s.identifier})
                sess_open = (sid, method, s.identifier)
                if not_running_since is not None:
                    not_running_since = mono
            if t >= next_hb:
                ev = {n: summaries[n].evidence() for n in names}
                self._emit(t, mono, "heartbeat", {"state": machine.state, "period_ms": mono - last_hb_mono,
                                                  "evidence": ev})  # valid by construction (tests check)
                last_hb_mono = mono
                summaries = {n: _Weighted(SUMMARY_KEYS[n]) for n in names}
                next_hb = t + self.hb
                heapq.heappush(heap, next_hb)
            if machine.state != machine.raw:  # a change is pending: keep polling on the grid
                heapq.heappush(heap, t + period)
            elif method == "checkin" and sess_open is not None and not_running_since is not None:
                heapq.heappush(heap, grid(start + not_running_since + round(prof.idle_timeout_s * 1000)))
        if clean:
            t = max(last_tick, end - period)
            mono = t - start
            if sess_open is not None:
                self._emit(t, mono, "session_end", {"session": sess_open[0], "reason": "agent_stop"})
            self._emit(t, mono, "lifecycle", {"event": "stop", "detail": {"ticks": mono // period,
                                                                         "uptime_s": mono // 1000}})

    def _state(self, t: int, mono: int, tr: Transition, obs: dict[str, Observation]) -> None:
        """A state record as agent.recorder.Recorder.state makes it."""
        evidence = clean_by_detector({n: {"v": o.verdict, **o.evidence} for n, o in obs.items()}, limit=15)
        evidence["state"] = clean_evidence({"since": tr.since, "raw_since": tr.raw_since, "warmup_ms": tr.warmup_ms})
        self._emit(t, mono, "state", {"state": tr.state, "prev_state": tr.prev_state, "rule": self.prof.running,
                                      "evidence": evidence})


def envelopes(agent_id: str, unit: str, instrument: str, key: Ed25519PrivateKey, records: Sequence[dict[str, Any]],
              sent: int, max_records: int = 500, max_bytes: int = 200 * 1024) -> Iterator[bytes]:
    """Seal records into envelopes as an agent with a backlog does (up to `max_records` / `max_bytes`)."""
    i = 0
    while i < len(records):
        batch: list[dict[str, Any]] = []
        size = 0
        while i < len(records) and len(batch) < max_records:
            n = len(dumps_sorted(records[i]))
            if batch and size + n > max_bytes:
                break
            batch.append(records[i])
            size += n
            i += 1
        boot = max(r["boot"] for r in batch)
        out = envelope(key=key, agent=agent_id, unit=unit, instrument=instrument, boot=boot, sent=sent, records=batch)
        assert len(out) <= MAX_ENVELOPE_BYTES
        yield out
