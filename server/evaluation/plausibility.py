"""Plausibility checks: patterns in verified data that a real instrument rarely shows.

A unit controls its instrument PC and its agent's key, so it could sign fabricated records
(docs/security.md, "What a dishonest unit could still do"). These checks do not prove fraud: they
name instruments whose measured hours deserve a person's look, e.g. in the on-site spot check
(server/evaluation/sampling.py). Each check is a pure function over plain values; `load_*` are the
named queries that feed them from the database, and `check_instrument` runs them all.

Checks:
- `continuous_running`: running >= 22 h on each of >= 7 consecutive local days with no idle, off or
  fault time in that run of days (real instruments are serviced, cooled, reloaded, recalibrated);
- `power_below_standby`: heartbeats claiming `running` whose power meter saw, over the whole
  heartbeat, less than the instrument's calibrated standby draw (skipped for instruments whose
  running draw is below their standby, which exist: the caller says so with `inverted=True`);
- `late_share`: a large share of running time that reached the server from the spool rather than
  live (back-filled data cannot be told from genuine outages, but a lot of it is worth a question);
- `synthetic_heartbeats`: heartbeat intervals identical to the millisecond over many heartbeats (a
  real agent's timer jitters by a few ms; a script replaying a schedule does not);
- `future_clock`: records whose time was more than `derive.future_s` ahead of the server's receive
  time (flagged at ingest, table `future_records`, server/ingest/future.py): the agent's wall clock
  is wrong or was set ahead. They are stored, and placed at their receive time for hours;
- `energy_stuck`: a power meter's energy counter stood still while its power readings added up to
  more than three counter steps (flagged at ingest, table `energy_flags`, server/ingest/energy.py):
  a replaced or tampered meter, a wrong register map, or readings that were not measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from server.store.codes import TYPE_CODES
from server.store.times import TZ, ms_to_dt

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Segment:
    """One usage segment as derived (usage_segments): [start, end), state, watched, arrival."""

    start: datetime
    end: datetime
    state: str
    watched: bool = True
    arrival: str = "live"


@dataclass(frozen=True, slots=True)
class PowerBeat:
    """A heartbeat's claimed state and its power evidence (`evidence.power.mw_max`, milliwatts)."""

    t_ms: int
    state: str
    mw_max: int | None


@dataclass(frozen=True, slots=True)
class Flag:
    check: str
    detail: str
    start: datetime | None = None
    end: datetime | None = None
    value: float = 0.0
    args: dict[str, Any] = field(default_factory=dict)  # the detail's numbers, for its translations


def _split_by_day(seg: Segment, tz: ZoneInfo) -> Iterable[tuple[date, float]]:
    """Seconds of a segment per local calendar day."""
    s = seg.start.astimezone(tz)
    e = seg.end.astimezone(tz)
    while s < e:
        midnight = datetime.combine(s.date() + timedelta(days=1), datetime.min.time(), tz)
        cut = min(e, midnight)
        yield s.date(), (cut - s).total_seconds()
        s = cut


def continuous_running(segments: Sequence[Segment], *, min_hours_per_day: float = 22.0, min_days: int = 7,
                       tz: ZoneInfo = TZ) -> list[Flag]:
    """Runs of >= `min_days` consecutive local days, each with >= `min_hours_per_day` of watched
    running and no watched idle/off/fault time at all."""
    running: dict[date, float] = {}
    resting: dict[date, float] = {}
    for seg in segments:
        if not seg.watched:
            continue
        for day, secs in _split_by_day(seg, tz):
            if seg.state == "running":
                running[day] = running.get(day, 0.0) + secs
            elif seg.state in ("idle", "off", "fault"):
                resting[day] = resting.get(day, 0.0) + secs
    busy = sorted(d for d, secs in running.items()
                  if secs >= min_hours_per_day * 3600 and resting.get(d, 0.0) == 0.0)
    flags: list[Flag] = []
    i = 0
    while i < len(busy):
        j = i
        while j + 1 < len(busy) and busy[j + 1] == busy[j] + timedelta(days=1):
            j += 1
        n = j - i + 1
        if n >= min_days:
            first = datetime.combine(busy[i], datetime.min.time(), tz)
            last = datetime.combine(busy[j] + timedelta(days=1), datetime.min.time(), tz)
            flags.append(Flag("continuous_running", f"running >= {min_hours_per_day:g} h on each of {n} "
                              f"consecutive days ({busy[i]} to {busy[j]}) with no idle, off or fault time",
                              first, last, float(n),
                              {"hours": f"{min_hours_per_day:g}", "days": n, "first": str(busy[i]),
                               "last": str(busy[j])}))
        i = j + 1
    return flags


def power_below_standby(beats: Sequence[PowerBeat], standby_mw: int, *, inverted: bool = False,
                        min_share: float = 0.1, min_beats: int = 12) -> list[Flag]:
    """Running claimed while the meter's maximum over the heartbeat stayed below standby draw.

    Flags when at least `min_beats` such heartbeats make up at least `min_share` of the running
    heartbeats that carry power evidence. `inverted`: the instrument's running draw is below its
    standby draw (calibration says so); the check does not apply.
    """
    if inverted:
        return []
    with_power = [b for b in beats if b.state == "running" and b.mw_max is not None]
    low = [b for b in with_power if b.mw_max is not None and b.mw_max < standby_mw]
    if not with_power or len(low) < min_beats or len(low) / len(with_power) < min_share:
        return []
    share = len(low) / len(with_power)
    return [Flag("power_below_standby", f"{len(low)} of {len(with_power)} running heartbeats ({share:.0%}) saw "
                 f"at most less than the standby draw of {standby_mw} mW", _dt(low[0].t_ms), _dt(low[-1].t_ms),
                 share, {"low": len(low), "total": len(with_power), "share": f"{share:.0%}", "standby_mw": standby_mw})]


def late_share(segments: Sequence[Segment], *, max_share: float = 0.5, min_running_h: float = 10.0) -> list[Flag]:
    """Share of watched running time that arrived from the spool (not live) above `max_share`."""
    live = spool = 0.0
    for seg in segments:
        if seg.watched and seg.state == "running":
            secs = (seg.end - seg.start).total_seconds()
            if seg.arrival == "live":
                live += secs
            else:
                spool += secs
    total = live + spool
    if total < min_running_h * 3600 or spool / total <= max_share:
        return []
    share = spool / total
    return [Flag("late_share", f"{share:.0%} of {total / 3600:.1f} running hours arrived late from the spool",
                 value=share, args={"share": f"{share:.0%}", "hours": f"{total / 3600:.1f}"})]


def synthetic_heartbeats(times_ms: Sequence[int], *, min_intervals: int = 100) -> list[Flag]:
    """At least `min_intervals` consecutive heartbeat intervals identical to the millisecond.

    `times_ms`: event times of one agent's heartbeats in seq order (one boot, no gaps between them
    matter: the longest run of equal consecutive intervals is what counts).
    """
    best = run = 0
    best_end = 0
    for k in range(2, len(times_ms)):
        d = times_ms[k] - times_ms[k - 1]
        run = run + 1 if d == times_ms[k - 1] - times_ms[k - 2] and d > 0 else 0
        if run + 1 > best:
            best, best_end = run + 1, k
    if best < min_intervals:
        return []
    start = times_ms[best_end - best]
    step = times_ms[best_end] - times_ms[best_end - 1]
    return [Flag("synthetic_heartbeats", f"{best} consecutive heartbeat intervals of exactly {step} ms",
                 _dt(start), _dt(times_ms[best_end]), float(best), {"n": best, "step_ms": step})]


@dataclass(frozen=True, slots=True)
class FutureBatch:
    """One envelope's records that were ahead of the server clock (a `future_records` row)."""

    received_at: datetime
    records: int
    max_ahead_ms: int


def future_clock(batches: Sequence[FutureBatch], *, min_records: int = 1) -> list[Flag]:
    """Any record (at least `min_records`) stored with a time ahead of the server's receive time."""
    n = sum(b.records for b in batches)
    if not batches or n < min_records:
        return []
    ahead = max(b.max_ahead_ms for b in batches)
    first = min(b.received_at for b in batches)
    last = max(b.received_at for b in batches)
    return [Flag("future_clock", f"{n} record(s) in {len(batches)} envelope(s) were up to {ahead / 60_000:.0f} min "
                 "ahead of the server clock when received (placed at their receive time for hours)",
                 first, last, float(n),
                 {"n": n, "envelopes": len(batches), "minutes": f"{ahead / 60_000:.0f}"})]


@dataclass(frozen=True, slots=True)
class EnergyBatch:
    """One envelope's records whose meter reported a stuck energy counter (an `energy_flags` row)."""

    first_t: datetime
    last_t: datetime
    records: int
    max_pwh: int


def energy_stuck(batches: Sequence[EnergyBatch], *, min_records: int = 1) -> list[Flag]:
    """Any record (at least `min_records`) whose meter's energy counter did not follow its power."""
    n = sum(b.records for b in batches)
    if not batches or n < min_records:
        return []
    wh = max(b.max_pwh for b in batches)
    return [Flag("energy_stuck", f"{n} record(s) in {len(batches)} envelope(s): the meter's energy counter stood "
                 f"still while its power added up to as much as {wh} Wh",
                 min(b.first_t for b in batches), max(b.last_t for b in batches), float(n),
                 args={"n": n, "envelopes": len(batches), "wh": wh})]


def _dt(ms: int) -> datetime:
    return ms_to_dt(ms, TZ)


# ---- named queries -------------------------------------------------------------------------------

SEGMENTS_SQL = """
SELECT start_at, end_at, state, watched, arrival FROM usage_segments
 WHERE instrument_id = %(instrument)s AND end_at > %(start)s AND start_at < %(end)s
 ORDER BY start_at
"""

HEARTBEAT_TIMES_SQL = """
SELECT (extract(epoch FROM r.t) * 1000)::bigint FROM records r
  JOIN agent_progress p USING (agent_no)
  JOIN agents a ON a.id = p.agent_id
 WHERE a.instrument_id = %(instrument)s AND r.type = %(heartbeat)s AND r.t >= %(start)s AND r.t < %(end)s
 ORDER BY p.agent_id, r.seq
"""


FUTURE_SQL = """
SELECT f.received_at, f.records, f.max_ahead_ms FROM future_records f
  JOIN agents a ON a.id = f.agent_id
 WHERE a.instrument_id = %(instrument)s AND f.received_at >= %(start)s AND f.received_at < %(end)s
 ORDER BY f.received_at
"""


ENERGY_SQL = """
SELECT f.first_t, f.last_t, f.records, f.max_pwh FROM energy_flags f
  JOIN agents a ON a.id = f.agent_id
 WHERE a.instrument_id = %(instrument)s AND f.last_t >= %(start)s AND f.first_t < %(end)s
 ORDER BY f.first_t
"""


def load_energy(conn: psycopg.Connection[Any], instrument: str, start: datetime, end: datetime) -> list[EnergyBatch]:
    rows = conn.execute(ENERGY_SQL, {"instrument": instrument, "start": start, "end": end}).fetchall()
    return [EnergyBatch(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def load_future(conn: psycopg.Connection[Any], instrument: str, start: datetime, end: datetime) -> list[FutureBatch]:
    rows = conn.execute(FUTURE_SQL, {"instrument": instrument, "start": start, "end": end}).fetchall()
    return [FutureBatch(r[0], int(r[1]), int(r[2])) for r in rows]


def load_segments(conn: psycopg.Connection[Any], instrument: str, start: datetime, end: datetime) -> list[Segment]:
    """The instrument's usage segments overlapping [start, end), clipped to it."""
    rows = conn.execute(SEGMENTS_SQL, {"instrument": instrument, "start": start, "end": end}).fetchall()
    return [Segment(max(s, start), min(e, end), st, w, a) for s, e, st, w, a in rows]


def load_heartbeat_times(conn: psycopg.Connection[Any], instrument: str, start: datetime,
                         end: datetime) -> list[int]:
    params = {"instrument": instrument, "start": start, "end": end, "heartbeat": TYPE_CODES["heartbeat"]}
    rows = conn.execute(HEARTBEAT_TIMES_SQL, params).fetchall()
    return [int(r[0]) for r in rows]


def check_instrument(conn: psycopg.Connection[Any], instrument: str, start: datetime, end: datetime, *,
                     beats: Sequence[PowerBeat] = (), standby_mw: int | None = None,
                     inverted: bool = False) -> list[Flag]:
    """Every check over [start, end). Power evidence lives in the signed envelopes, not in typed
    columns: the caller passes the heartbeats' power (`beats`) and the calibrated standby draw when
    it has them; without them that check is skipped."""
    segs = load_segments(conn, instrument, start, end)
    flags = continuous_running(segs) + late_share(segs) + synthetic_heartbeats(
        load_heartbeat_times(conn, instrument, start, end)) + future_clock(load_future(conn, instrument, start, end))
    flags += energy_stuck(load_energy(conn, instrument, start, end))
    if standby_mw is not None:
        flags += power_below_standby(beats, standby_mw, inverted=inverted)
    return flags
