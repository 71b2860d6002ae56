"""The seeded usage model: what really happened at each simulated instrument (the ground truth).

Jishi is judged against this: benchmarks and the demo's history compare the hours the server
measured with the hours written here. So the model says everything that matters for that
comparison, and nothing is inferred later:

- `states`: the instrument's true state over time (off / idle / running / fault), gap-free;
- `runs`: the true running intervals (warm-up + measurement + post-processing), with the user and
  whether the user was external to the unit;
- `sessions`: who was at the instrument, when they checked in and when they really left
  (a forgotten check-out has no check-out: the agent ends it after its idle timeout);
- `agent`: when the agent on the PC was up (reboots, crashes);
- `signals`: what the detectors can see. A run's signal can end before the run does when the
  instrument's post-processing is invisible to the detectors (data processing on the PC): the
  agent's `post_run_s` is meant to cover it, so the model draws that hidden part at random around
  the instrument's typical value, as a real instrument would.

Usage: working hours, weekdays, Chinese public holidays and university breaks, monthly seasons,
a share of external users per instrument (the reference figures: Inner Mongolia 2021 had 694
running hours and 43 % external per instrument; the central level 1,599 h and 17 %), forgotten
check-outs, faults that end runs, instruments left on overnight or always on (vacuum,
cryogenics), and instruments whose running draw is below their standby draw. Everything is
drawn from a seeded `random.Random`: the same seed gives the same truth, byte for byte.

A scripted schedule file (`load_schedule`) gives the same `Truth` from explicit sessions and runs.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import random
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Shanghai")
SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR

State = Literal["off", "idle", "running", "fault"]
Detection = Literal["power", "serial", "software", "power_serial"]

# Days off (official holidays; the make-up working days are ignored): (first, last) inclusive.
HOLIDAYS: dict[int, list[tuple[str, str]]] = {
    2024: [("01-01", "01-01"), ("02-10", "02-17"), ("04-04", "04-06"), ("05-01", "05-05"), ("06-10", "06-10"),
           ("09-15", "09-17"), ("10-01", "10-07")],
    2025: [("01-01", "01-01"), ("01-28", "02-04"), ("04-04", "04-06"), ("05-01", "05-05"), ("05-31", "06-02"),
           ("10-01", "10-08")],
    2026: [("01-01", "01-03"), ("02-15", "02-23"), ("04-04", "04-06"), ("05-01", "05-05"), ("06-19", "06-21"),
           ("09-25", "09-27"), ("10-01", "10-07")],
    2027: [("01-01", "01-01"), ("02-05", "02-12"), ("04-03", "04-05"), ("05-01", "05-05"), ("06-09", "06-11"),
           ("09-15", "09-17"), ("10-01", "10-07")],
}
_FIXED_HOLIDAYS = [("01-01", "01-01"), ("05-01", "05-05"), ("10-01", "10-07")]  # years not in the table
# A university's year: quiet in the winter break and in August, a rush before the year's end.
SEASON = (0.75, 0.55, 1.0, 1.05, 1.05, 1.1, 0.85, 0.65, 1.0, 0.95, 1.1, 1.15)
WEEKDAY = (0.95, 1.05, 1.05, 1.0, 0.9, 0.25, 0.12)


def ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


def local(t_ms: int) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000, TZ)


def is_holiday(day: date) -> bool:
    spans = HOLIDAYS.get(day.year, _FIXED_HOLIDAYS)
    key = day.strftime("%m-%d")
    return any(a <= key <= b for a, b in spans)


def day_factor(day: date, seasonal: bool = True) -> float:
    """How busy an ordinary instrument is on `day`, relative to an average working day."""
    if is_holiday(day):
        return 0.08
    f = WEEKDAY[day.weekday()]
    return f * SEASON[day.month - 1] if seasonal else f


# ---- the registry side of the model ----------------------------------------------------------


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    kind: str  # organisations.kind


@dataclass(frozen=True)
class Person:
    """A platform user and the identifier an agent sees for them (check-in account or OS user)."""

    id: str
    name: str
    org_id: str
    unit_id: str  # the unit whose identity map holds the identifier
    login: str
    external: bool
    mapped: bool = True  # False: a guest login nobody mapped (hours stay unattributed)


@dataclass(frozen=True)
class Power:
    """Power levels of an instrument in watts; `running_w` may be below `standby_w`."""

    off_w: float = 1.5
    standby_w: float = 120.0
    running_w: float = 900.0
    noise: float = 0.03  # relative, per reading
    dips_per_hour: float = 0.0  # short drops to standby during a run (shorter than the agent's confirm_s)
    ramp_s: float = 0.0  # power-up / power-down passes through the levels in between for this long


@dataclass(frozen=True)
class InstrumentSpec:
    """One simulated instrument: registry fields, how it is watched, and how it is used."""

    id: str
    unit_id: str
    name: str
    name_en: str
    category: Literal["通用", "专用"]
    original_value: int
    detection: Detection
    classification_code: str = ""
    model: str = ""
    manufacturer: str = ""
    country: str = ""
    location: str = ""
    dialect: Literal["line", "scpi"] = "line"
    power: Power = field(default_factory=Power)
    always_on: bool = False  # vacuum / cryogenics: idle when not running, never off
    sessions_per_week: float = 5.0
    runs_per_session: tuple[int, int] = (1, 3)
    run_hours: float = 1.5  # median of a run (log-normal)
    overnight: float = 0.0  # share of sessions that are one long overnight run
    external_share: float = 0.35  # share of sessions by external users
    hidden_post_s: int = 0  # typical post-processing the detectors cannot see (agent post_run_s covers it)
    faults_per_year: float = 2.0
    forgotten_checkout: float = 0.08
    glitches_per_week: float = 3.0  # the detector's device does not answer for a few seconds
    left_on_overnight: float = 0.2
    identity: Literal["checkin", "os"] = "checkin"
    confirm_s: float = 15.0  # the agent's debounce for this instrument
    rated_hours: float | None = None


@dataclass(frozen=True)
class UnitSpec:
    id: str
    name: str
    org: Org
    region: str
    affiliated: tuple[Org, ...] = ()


# ---- the truth ---------------------------------------------------------------------------------


@dataclass
class Run:
    start: int
    end: int  # the run's true end, hidden post-processing included
    signal_end: int  # when the detectors stop seeing it (== end unless post-processing is hidden)
    user: str
    external: bool


@dataclass
class SessionTruth:
    user: str  # platform user id
    check_in: int
    left: int  # when the person really left
    check_out: int | None  # None: forgot to check out
    external: bool
    login: str = ""  # what the agent sees (check-in account or OS user); the user id when empty

    @property
    def identifier(self) -> str:
        return self.login or self.user


@dataclass
class AgentUp:
    start: int
    end: int
    clean: bool  # the agent stopped cleanly at `end` (else it crashed: no stop record)


@dataclass
class Truth:
    """Ground truth of one instrument over [t0, t1)."""

    instrument: str
    unit: str
    t0: int
    t1: int
    states: list[tuple[int, int, str]] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    sessions: list[SessionTruth] = field(default_factory=list)
    agent: list[AgentUp] = field(default_factory=list)
    dips: list[tuple[int, int]] = field(default_factory=list)  # signal drops inside runs
    ramps: list[tuple[int, int, str]] = field(default_factory=list)  # power passing levels: (start, end, towards)
    glitches: list[tuple[int, int]] = field(default_factory=list)  # the first detector's device is silent
    power_on: list[tuple[int, int]] = field(default_factory=list)

    def running_ms(self, lo: int | None = None, hi: int | None = None) -> int:
        lo = self.t0 if lo is None else lo
        hi = self.t1 if hi is None else hi
        return sum(max(0, min(b, hi) - max(a, lo)) for a, b, s in self.states if s == "running")

    def external_running_ms(self, lo: int | None = None, hi: int | None = None) -> int:
        lo = self.t0 if lo is None else lo
        hi = self.t1 if hi is None else hi
        return sum(max(0, min(r.end, hi) - max(r.start, lo)) for r in self.runs if r.external)

    def state_at(self, t: int) -> str:
        i = bisect.bisect_right([s[0] for s in self.states], t) - 1
        return self.states[max(0, i)][2]

    def off_intervals(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b, s in self.states if s == "off"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument, "unit": self.unit, "t0": self.t0, "t1": self.t1,
            "running_hours": round(self.running_ms() / HOUR, 4),
            "external_running_hours": round(self.external_running_ms() / HOUR, 4),
            "states": [list(s) for s in self.states], "runs": [asdict(r) for r in self.runs],
            "sessions": [asdict(s) for s in self.sessions], "agent": [asdict(a) for a in self.agent],
        }


def write_truth(truths: Sequence[Truth], out: Path) -> list[Path]:
    """`truth.json` (everything) and `runs.csv`, `sessions.csv`, `states.csv` (one row each)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "truth.json", out / "runs.csv", out / "sessions.csv", out / "states.csv"]
    paths[0].write_text(json.dumps({"instruments": [t.as_dict() for t in truths]}, ensure_ascii=False))

    def iso(t: int | None) -> str:
        return "" if t is None else local(t).isoformat()

    with paths[1].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instrument", "start", "end", "signal_end", "hours", "user", "external"])
        for tr in truths:
            for r in tr.runs:
                w.writerow([tr.instrument, iso(r.start), iso(r.end), iso(r.signal_end),
                            f"{(r.end - r.start) / HOUR:.4f}", r.user, int(r.external)])
    with paths[2].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instrument", "user", "login", "check_in", "left", "check_out", "external"])
        for tr in truths:
            for s in tr.sessions:
                w.writerow([tr.instrument, s.user, s.identifier, iso(s.check_in), iso(s.left), iso(s.check_out),
                            int(s.external)])
    with paths[3].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instrument", "start", "end", "state"])
        for tr in truths:
            for a, b, st in tr.states:
                w.writerow([tr.instrument, iso(a), iso(b), st])
    return paths


# ---- generation --------------------------------------------------------------------------------


class _Timeline:
    """Builds a gap-free state timeline from intervals painted in priority order."""

    def __init__(self, t0: int, t1: int, base: str) -> None:
        self.t0, self.t1 = t0, t1
        self.cuts: list[tuple[int, int, str]] = [(t0, t1, base)]

    def paint(self, a: int, b: int, state: str) -> None:
        a, b = max(a, self.t0), min(b, self.t1)
        if b <= a:
            return
        out: list[tuple[int, int, str]] = []
        for x, y, s in self.cuts:
            if y <= a or x >= b:
                out.append((x, y, s))
                continue
            if x < a:
                out.append((x, a, s))
            if y > b:
                out.append((b, y, s))
        out.append((a, b, state))
        out.sort()
        self.cuts = out

    def merged(self) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        for x, y, s in self.cuts:
            if out and out[-1][2] == s and out[-1][1] == x:
                out[-1] = (out[-1][0], y, s)
            else:
                out.append((x, y, s))
        return out


def _lognormal_ms(rng: random.Random, median_h: float, sigma: float = 0.55, lo_min: float = 8.0,
                  hi_h: float = 14.0) -> int:
    h = median_h * math.exp(rng.gauss(0.0, sigma))
    return int(min(max(h * HOUR, lo_min * MIN), hi_h * HOUR))


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def pick_user(rng: random.Random, spec: InstrumentSpec, people: Sequence[Person]) -> Person:
    mine = [p for p in people if p.unit_id == spec.unit_id]
    external = [p for p in mine if p.external]
    internal = [p for p in mine if not p.external]
    pool = external if (external and rng.random() < spec.external_share) or not internal else internal
    return pool[rng.randrange(len(pool))]


def generate(spec: InstrumentSpec, people: Sequence[Person], t0: int, t1: int, seed: int,
             agent_reboots: bool = True, agent_crashes_per_year: float = 1.0) -> Truth:
    """The truth of one instrument over [t0, t1), drawn from `seed` (and the instrument id)."""
    rng = random.Random(f"{seed}:{spec.id}")
    truth = Truth(spec.id, spec.unit_id, t0, t1)
    tl = _Timeline(t0, t1, "idle" if spec.always_on else "off")
    day = local(t0).date()
    last_day = local(t1 - 1).date()
    busy_until = t0
    powered: list[tuple[int, int]] = []
    while day <= last_day:
        day0 = ms(datetime(day.year, day.month, day.day, tzinfo=TZ))
        lam = spec.sessions_per_week / 5.0 * day_factor(day)
        n = _poisson(rng, lam)
        # morning: first arrivals; sessions follow one another with gaps
        cursor = max(busy_until, day0 + int((8.3 + rng.random() * 1.5) * HOUR))
        day_sessions: list[tuple[int, int]] = []
        for k in range(n):
            user = pick_user(rng, spec, people)
            overnight = rng.random() < spec.overnight and k == n - 1
            if overnight:
                cursor = max(cursor, day0 + int((17 + rng.random() * 3) * HOUR))
            check_in = cursor + int(rng.random() * 45 * MIN)
            if check_in >= day0 + 21 * HOUR and not overnight:
                break
            t = check_in + int((3 + rng.random() * 15) * MIN)  # setting up
            runs = 1 if overnight else rng.randint(*spec.runs_per_session)
            for i_run in range(runs):
                dur = _lognormal_ms(rng, 10.0 if overnight else spec.run_hours, 0.25 if overnight else 0.55)
                hidden = 0
                if spec.hidden_post_s:
                    hidden = int(spec.hidden_post_s * SEC * (0.7 + 0.6 * rng.random()))
                start, signal_end = t, t + dur
                truth.runs.append(Run(start, signal_end + hidden, signal_end, user.id, user.external))
                if spec.power.dips_per_hour > 0:
                    for _ in range(_poisson(rng, spec.power.dips_per_hour * dur / HOUR)):
                        a = start + 60 * SEC + int(rng.random() * max(1, dur - 120 * SEC))
                        truth.dips.append((a, a + int((2 + rng.random() * 6) * SEC)))
                t = signal_end + hidden
                if i_run < runs - 1:
                    t += int((4 + rng.random() * 30) * MIN)
            left = t + int((3 + rng.random() * 12) * MIN)
            forgot = rng.random() < spec.forgotten_checkout
            truth.sessions.append(SessionTruth(user.id, check_in, left, None if forgot else left, user.external,
                                               user.login))
            day_sessions.append((check_in, left))
            cursor = left + int(rng.random() * 40 * MIN)
        busy_until = max(busy_until, cursor if day_sessions else busy_until)
        if day_sessions and not spec.always_on:
            on = day_sessions[0][0] - int(rng.random() * 40 * MIN)
            off = day_sessions[-1][1] + int(rng.random() * 60 * MIN)
            if rng.random() < spec.left_on_overnight:
                off = max(off, day0 + DAY + int((8 + rng.random()) * HOUR))
            if powered and on <= powered[-1][1]:
                powered[-1] = (powered[-1][0], max(powered[-1][1], off))
            else:
                powered.append((on, off))
        day += timedelta(days=1)
    # faults: a fault ends the run in progress, runs planned during it do not happen; the instrument
    # is repaired after hours or days. It happens while the instrument is powered.
    faults: list[tuple[int, int]] = []
    for _ in range(_poisson(rng, spec.faults_per_year * (t1 - t0) / (365 * DAY))):
        if spec.always_on or not powered:
            a = t0 + int(rng.random() * (t1 - t0))
        else:
            pa, pb = powered[rng.randrange(len(powered))]
            a = pa + int(rng.random() * (pb - pa))
        faults.append((a, a + int((1 + rng.random() * 40) * HOUR)))
    for a, b in faults:
        _cut_runs(truth, a, b)
    for a, b in powered:
        tl.paint(a, b, "idle")
    truth.power_on = [(max(a, t0), min(b, t1)) for a, b in powered if min(b, t1) > max(a, t0)]
    for r in truth.runs:
        tl.paint(r.start, r.end, "running")
    for a, b in faults:
        tl.paint(a, b, "fault")
    truth.states = [s for s in tl.merged() if s[1] > s[0]]
    truth.runs = [r for r in truth.runs if r.end > r.start and r.start < t1 and r.end > t0]
    for r in truth.runs:
        r.start, r.end, r.signal_end = max(r.start, t0), min(r.end, t1), min(max(r.signal_end, t0), t1)
    truth.sessions = [s for s in truth.sessions if s.check_in < t1]
    truth.dips = [d for d in truth.dips if any(r.start <= d[0] and d[1] <= r.signal_end for r in truth.runs)]
    if spec.power.ramp_s > 0:
        # passing through the levels in between when switched on and off
        ramp = int(spec.power.ramp_s * SEC)
        for a, b, s in truth.states:
            if s == "off" and a > t0:
                truth.ramps.append((a, a + ramp, "off"))
            if s == "off" and b < t1:
                truth.ramps.append((b - ramp, b, "on"))
    for _ in range(_poisson(rng, spec.glitches_per_week * (t1 - t0) / (7 * DAY))):
        a = t0 + int(rng.random() * (t1 - t0))
        truth.glitches.append((a, a + int((2 + rng.random() * rng.choice((8, 40))) * SEC)))
    truth.glitches.sort()
    truth.agent = _agent_uptime(rng, truth, agent_reboots, agent_crashes_per_year)
    return truth


def _cut_runs(truth: Truth, a: int, b: int) -> None:
    """A fault in [a, b): runs in progress end at a, runs planned inside it do not happen."""
    kept: list[Run] = []
    for r in truth.runs:
        if r.end <= a or r.start >= b:
            kept.append(r)
        elif r.start < a:
            r.end = a
            r.signal_end = min(r.signal_end, a)
            kept.append(r)
    truth.runs = kept


def _agent_uptime(rng: random.Random, truth: Truth, reboots: bool, crashes_per_year: float) -> list[AgentUp]:
    """The agent runs all the time, but the PC restarts for updates (monthly, Sunday 03:00, a clean
    stop and a few minutes down) and crashes now and then (no stop record)."""
    downs: list[tuple[int, int, bool]] = []
    if reboots:
        d = local(truth.t0).date().replace(day=1)
        while True:
            first_sunday = d + timedelta(days=(6 - d.weekday()) % 7)
            a = ms(datetime(first_sunday.year, first_sunday.month, first_sunday.day, 3, tzinfo=TZ))
            if a >= truth.t1:
                break
            if a > truth.t0 + HOUR:
                downs.append((a, a + int((2 + rng.random() * 4) * MIN), True))
            d = (d + timedelta(days=32)).replace(day=1)
    for _ in range(_poisson(rng, crashes_per_year * (truth.t1 - truth.t0) / (365 * DAY))):
        a = truth.t0 + HOUR + int(rng.random() * (truth.t1 - truth.t0 - 2 * HOUR))
        downs.append((a, a + int((3 + rng.random() * 25) * MIN), False))
    downs.sort()
    ups: list[AgentUp] = []
    start = truth.t0
    for a, b, clean in downs:
        if a <= start or b >= truth.t1:
            continue
        ups.append(AgentUp(start, a, clean))
        start = b
    ups.append(AgentUp(start, truth.t1, True))
    return ups


# ---- scripted schedules ------------------------------------------------------------------------


def _parse_time(v: Any) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, datetime):
        return ms(v if v.tzinfo else v.replace(tzinfo=TZ))
    d = datetime.fromisoformat(str(v))
    return ms(d if d.tzinfo else d.replace(tzinfo=TZ))


def load_schedule(path: Path, people: Iterable[Person] = ()) -> list[Truth]:
    """Truths from a scripted schedule (TOML or JSON). Times are ISO 8601 (local Asia/Shanghai
    when no offset is given) or ms since the epoch::

        start = "2026-03-02T00:00"
        end = "2026-03-09T00:00"
        [[instrument]]
        id = "imu-xrd"
        unit = "imu"
        always_on = false
        off = [["2026-03-02T00:00", "2026-03-02T08:00"]]     # optional; default: on when used
        faults = [["2026-03-04T10:00", "2026-03-04T16:00"]]
        [[instrument.session]]
        user = "wang.li"
        external = false                 # default: from the people list, else false
        check_in = "2026-03-02T09:00"
        check_out = "2026-03-02T12:10"   # leave out for a forgotten check-out (then give `left`)
        runs = [["2026-03-02T09:10", "2026-03-02T11:40"]]
    """
    raw = path.read_bytes()
    doc: dict[str, Any] = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    known = {p.id: p for p in people}
    t0, t1 = _parse_time(doc["start"]), _parse_time(doc["end"])
    out: list[Truth] = []
    for inst in doc.get("instrument", doc.get("instruments", [])):
        truth = Truth(str(inst["id"]), str(inst.get("unit", "")), t0, t1)
        always_on = bool(inst.get("always_on", False))
        tl = _Timeline(t0, t1, "idle" if always_on else "off")
        explicit_off = [(_parse_time(a), _parse_time(b)) for a, b in inst.get("off", [])]
        for s in inst.get("session", inst.get("sessions", [])):
            user = str(s["user"])
            ext = bool(s.get("external", known[user].external if user in known else False))
            ci = _parse_time(s["check_in"])
            co = _parse_time(s["check_out"]) if s.get("check_out") is not None else None
            runs = [(_parse_time(a), _parse_time(b)) for a, b in s.get("runs", [])]
            left = co if co is not None else _parse_time(s.get("left", runs[-1][1] if runs else ci))
            login = known[user].login if user in known else user
            truth.sessions.append(SessionTruth(user, ci, left, co, ext, login))
            for a, b in runs:
                truth.runs.append(Run(a, b, b, user, ext))
            if not always_on and not explicit_off:
                tl.paint(ci, left, "idle")
        if explicit_off:
            tl = _Timeline(t0, t1, "idle")
            for a, b in explicit_off:
                tl.paint(a, b, "off")
        for r in truth.runs:
            tl.paint(r.start, r.end, "running")
        for a, b in inst.get("faults", []):
            fa, fb = _parse_time(a), _parse_time(b)
            tl.paint(fa, fb, "fault")
            _cut_runs(truth, fa, fb)
        truth.states = tl.merged()
        truth.power_on = [(a, b) for a, b, s in truth.states if s != "off"]
        truth.agent = [AgentUp(t0, t1, True)]
        out.append(truth)
    return out
