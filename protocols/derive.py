"""Records in seq order -> usage segments, user sessions and coverage. Pure: no I/O, no pydantic.

This is the one place where records become machine-hours. The server runs it incrementally as
records commit; the offline verifier runs it once over an evidence bundle. Both must agree to the
millisecond, so the function is deterministic and resumable: `derive(records, carry=c)` continues
exactly where the run that produced `c` stopped, and chaining runs gives the same rows as one run
(rows are keyed by their start; a row emitted again replaces the earlier one: usually with a later
end, or, after a state record's `since`, with an earlier end or another state).

Rules (intervals are half-open [start, end), times in ms):
- Time: every record gets a corrected time T on one line (the server's idea of UTC), from the
  agent's wall clock `t`, its monotonic clock `mono` and the server's receive time:
  - within one boot, T = anchor + mono: durations and order come from `mono`, which a wall-clock
    change (NTP step, a user setting the clock) does not move. The boot's anchor (wall - mono) is
    taken from its first record (T = t there); a later record whose own `t - mono` is within
    drift_ms (2 s) of the anchor moves it there (the two clocks drift apart slowly, and slewing
    is not a jump: T = t again), a larger difference is a jump and leaves it. Then the bound:
  - T <= received + future_ms for every record, and T <= received for a record whose own `t` is
    more than future_ms ahead of its receive time (a 'future' record: its wall clock is wrong; an
    event cannot happen after the server received it). A forged or runaway `mono` therefore gains
    at most future_ms per boot over what the receive times allow; spooled records are bounded by
    their (late) receive times only, exactly as their wall times would be (following drift lets
    a forger add at most drift_ms per record, as a forged `t` could anyway);
  - across boots (and for records without `mono`) T = t under the same bound: wall time.
  - T is clamped to be non-decreasing in seq order (mono stepping back, or a new boot whose clock
    is behind, gives a zero-length interval, never an overlap).
  A clock set back therefore neither loses nor double-counts time, and a clock set forward adds
  none: within a boot the hours are the monotonic clock's.
- Time only exists between consecutive records of the contiguous prefix. Each interval between a
  record `p` and the next record `r` gets one answer to: which state, watched or not, arrival
  live or spool, which user session. Nothing is extended past the latest record.
- Watched: `p` and `r` are in the same agent boot, `p` is not a clean `lifecycle stop`, no
  record is missing between them (except records the agent declared dropped in a
  `spool_overflow`: those are samples and prove nothing either way), and `T(r) - T(p)` is at most
  heartbeat period x tolerance (the period is the latest heartbeat's `period_ms`, else the
  default). Otherwise the interval is 'offline' (reason silent / agent_restart / agent_stopped)
  or 'gap' (records lost for good: never counted as watched).
- State: a `state` record sets the state at its time; a heartbeat reporting another state than
  the current one sets it too (a lost or inconsistent state change). A new boot starts 'unknown'.
  A `state` record's `evidence.state.since` (SPEC §5.2: the true edge, i.e. the first poll that
  showed the change, earlier by a warm-up, which counts as running by the common definition of
  运行机时, or later by declared invisible post-processing when a run ends) moves the change back
  to T - (t - since), bounded below by the current state's start, the boot's first record and the
  start of the open segment (closed rows are never rewritten). So running time is counted from
  the true edges: the agent's debounce and post-run hold delay its decision, not the run's end.
  Records of agents that sent since = t at a run's end derive as they always did.
- Sessions: `session_start` opens one (an open one ends with reason 'replaced'); `session_end`
  closes the open session of that id. A new boot ends an open session at the last record of
  the old boot with reason 'agent_restart' (clean stop: 'agent_stop').
- Arrival: a record is live when the server received it at most `live_window_ms` after its
  corrected time T; an interval is 'live' when both records that bound it are live, else 'spool'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, overload

STATES = ("off", "idle", "running", "fault", "unknown")
WATCHING, OFFLINE, GAP = "watching", "offline", "gap"
SILENT, AGENT_RESTART, AGENT_STOPPED, RECORDS_LOST = "silent", "agent_restart", "agent_stopped", "records_lost"


@dataclass(frozen=True, slots=True)
class Params:
    heartbeat_ms: int = 300_000
    """Heartbeat period assumed until a heartbeat states its own `period_ms`."""
    tolerance_permille: int = 1500
    """An interval longer than period x tolerance/1000 is not watched (integer: exact everywhere)."""
    live_window_ms: int = 120_000
    drift_ms: int = 2_000
    """Within a boot, a record whose wall clock disagrees with the boot's anchor (wall - mono) by at
    most this follows its wall clock (drift, NTP slewing); beyond it, the wall clock jumped and the
    monotonic clock decides (2 s: the agent's own `clock_jump_ms` default)."""
    future_ms: int = 600_000
    """A record whose `t` is more than this ahead of its receive time is 'future' (flagged by
    ingest); every record's corrected time is bounded by its receive time plus this."""


class RecordFields(Protocol):
    """A verified record read by key: its parsed dict, or the struct protocols.fastcheck.decode
    gives the ingest (which reads alike)."""

    def __getitem__(self, name: str, /) -> Any: ...

    @overload
    def get(self, name: str, /) -> Any: ...

    @overload
    def get(self, name: str, default: Any, /) -> Any: ...


class Rec(NamedTuple):
    """The fields of a record the derivation uses, plus when the server received it.
    (A named tuple: the server builds one per record, and tuples are the cheapest to build.)"""

    seq: int
    t: int
    type: str
    boot: int
    received: int
    state: str | None = None
    period_ms: int | None = None
    session: str | None = None
    method: str | None = None
    user: str | None = None
    reason: str | None = None
    event: str | None = None
    mono: int | None = None
    """the agent's monotonic clock (ms since its boot); None: wall time only"""
    since: int | None = None
    """state records: `evidence.state.since`, when the agent says the new state began"""

    @classmethod
    def from_record(cls, rec: RecordFields, received: int) -> Rec:
        """From a verified record (as in the envelope) and its receive time in ms."""
        typ = rec["type"]
        seq, t, boot, mono = rec["seq"], rec["t"], rec["boot"], rec.get("mono")
        if typ == "heartbeat":  # most records: built without keyword arguments (a third of the cost)
            return tuple.__new__(cls, (seq, t, typ, boot, received, rec["state"], rec["period_ms"], None, None, None,
                                       None, None, mono, None))
        if typ == "state":
            ev = rec.get("evidence", {}).get("state")
            since = ev.get("since") if isinstance(ev, dict) else None
            if not isinstance(since, int) or isinstance(since, bool):
                since = None
            return cls(seq, t, typ, boot, received, rec["state"], mono=mono, since=since)
        if typ == "session_start":
            return cls(seq, t, typ, boot, received, session=rec["session"], method=rec["method"], user=rec["user"],
                       mono=mono)
        if typ == "session_end":
            return cls(seq, t, typ, boot, received, session=rec["session"], reason=rec["reason"], mono=mono)
        if typ == "lifecycle":
            return cls(seq, t, typ, boot, received, event=rec["event"], mono=mono)
        return cls(seq, t, typ, boot, received, mono=mono)


def recs_of(records: Iterable[Mapping[str, Any]], received: Iterable[int]) -> list[Rec]:
    """`Rec.from_record` of each record with its receive time (ms), as one list: heartbeats (most
    records) are built here without a call each."""
    make, from_record = tuple.__new__, Rec.from_record
    return [
        make(Rec, (rec["seq"], rec["t"], "heartbeat", rec["boot"], rcv, rec["state"], rec["period_ms"], None, None,
                   None, None, None, rec.get("mono"), None))
        if rec["type"] == "heartbeat" else from_record(rec, rcv)
        for rec, rcv in zip(records, received, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs first..last that will never be stored. kind 'lost' (never arrived) or 'overflow'
    (declared dropped by the agent in a spool_overflow record)."""

    first: int
    last: int
    kind: str


@dataclass(frozen=True, slots=True)
class Segment:
    start: int
    end: int
    state: str
    watched: bool
    arrival: str
    session: str | None
    start_seq: int


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    method: str
    identifier: str
    start: int
    end: int | None
    end_reason: str | None
    start_seq: int


@dataclass(frozen=True, slots=True)
class Cover:
    start: int
    end: int
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Open:
    """An open row: attributes and where it started (its end is the latest record time)."""

    start: int
    start_seq: int
    attrs: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Carry:
    """Everything needed to continue after the last record processed. JSON-able via to_dict."""

    last_seq: int
    last_t: int
    last_boot: int
    last_live: bool
    last_stop: bool
    state: str
    state_since: int
    period_ms: int
    session: Session | None
    seg: _Open | None
    cov: _Open | None
    anchor: int | None = None
    """this boot's wall - mono offset (None: not known yet, or records without mono)"""
    boot_start: int = 0
    """corrected time of this boot's first record"""

    def to_dict(self) -> dict[str, Any]:
        """`dataclasses.asdict` with `attrs` as lists, written out: asdict's recursive deep copy was
        the largest Python cost of a live envelope in ingest (bench/live_cost.py)."""

        def opened(o: _Open | None) -> dict[str, Any] | None:
            return None if o is None else {"start": o.start, "start_seq": o.start_seq, "attrs": list(o.attrs)}

        s = self.session
        return {
            "last_seq": self.last_seq, "last_t": self.last_t, "last_boot": self.last_boot,
            "last_live": self.last_live, "last_stop": self.last_stop, "state": self.state,
            "state_since": self.state_since, "period_ms": self.period_ms,
            "session": None if s is None else {
                "session_id": s.session_id, "method": s.method, "identifier": s.identifier, "start": s.start,
                "end": s.end, "end_reason": s.end_reason, "start_seq": s.start_seq},
            "seg": opened(self.seg), "cov": opened(self.cov), "anchor": self.anchor, "boot_start": self.boot_start,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Carry:
        def opened(v: Mapping[str, Any] | None) -> _Open | None:
            return None if v is None else _Open(v["start"], v["start_seq"], tuple(v["attrs"]))

        sess = d.get("session")
        return cls(
            last_seq=d["last_seq"],
            last_t=d["last_t"],
            last_boot=d["last_boot"],
            last_live=d["last_live"],
            last_stop=d["last_stop"],
            state=d["state"],
            state_since=d["state_since"],
            period_ms=d["period_ms"],
            session=None if sess is None else Session(**sess),
            seg=opened(d.get("seg")),
            cov=opened(d.get("cov")),
            anchor=d.get("anchor"),
            boot_start=d.get("boot_start", d["state_since"]),
        )


@dataclass
class Derived:
    """Rows produced by one run. Segments and coverage include the open row (ending at the latest
    record) when it has a length; sessions are those started or ended in this run (open: end None)."""

    segments: list[Segment] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    coverage: list[Cover] = field(default_factory=list)
    carry: Carry | None = None


def is_live(rec: Rec, params: Params) -> bool:
    """By the record's own wall time (derive itself judges by the corrected time)."""
    return rec.received - rec.t <= params.live_window_ms


def derive(
    records: Iterable[Rec],
    params: Params = Params(),
    carry: Carry | None = None,
    gaps: Sequence[Gap] = (),
) -> Derived:
    """Derive rows from `records` (ascending seq, the contiguous prefix after `carry`).

    `gaps` must cover every seq missing between consecutive records (and between the carry and
    the first record); a missing seq not covered is treated as lost.
    """
    out = Derived(carry=carry)
    sessions: dict[str, Session] = {}
    c = None if carry is None else _State(**{f: getattr(carry, f) for f in _CARRY_FIELDS})
    limit = params.tolerance_permille
    future, window, drift = params.future_ms, params.live_window_ms, params.drift_ms
    # the previous record's fields live in locals, not on `c`, while the loop runs (a local is
    # cheaper than a slot, ~0.15 us per record): no helper reads them, only _apply sets
    # last_stop (re-read after it); they go back to `c` after the loop
    last_seq = last_t = last_boot = 0
    last_live = last_stop = False
    prev_anchor: int | None = None
    if c is not None:
        last_seq, last_t, last_boot, last_live, last_stop = c.last_seq, c.last_t, c.last_boot, c.last_live, c.last_stop
        prev_anchor = c.anchor
    for r in records:
        # the latest the record can have happened: its receive time (+ future_ms unless its own
        # wall clock is already that far ahead, i.e. wrong)
        wall, received = r.t, r.received
        bound = received if wall - received > future else received + future
        if c is None:
            raw = wall if wall < bound else bound
            c = _State(
                last_seq=r.seq, last_t=raw, last_boot=r.boot, last_live=r.received - raw <= window, last_stop=False,
                state="unknown", state_since=raw, period_ms=params.heartbeat_ms, session=None, seg=None, cov=None,
                anchor=None if r.mono is None else raw - r.mono, boot_start=raw,
            )  # fmt: skip
            _apply(c, r, raw, sessions, out)
            last_seq, last_t, last_boot, last_live, last_stop = (c.last_seq, c.last_t, c.last_boot, c.last_live,
                                                                 c.last_stop)
            prev_anchor = c.anchor
            continue
        seq = r.seq
        if seq <= last_seq:
            raise ValueError(f"records out of order: seq {seq} after {last_seq}")
        new_boot = r.boot != last_boot
        mono = r.mono
        anchor: int | None
        if mono is not None and not new_boot and prev_anchor is not None:
            # same boot: the monotonic clock; the wall clock only where it agrees (drift, slewing)
            anchor = prev_anchor
            follow = wall - mono
            if anchor - drift <= follow <= anchor + drift:
                anchor = follow
            raw = anchor + mono
            if raw > bound:  # and never after the receive-time bound
                anchor, raw = bound - mono, bound
        else:
            raw = wall if wall < bound else bound
            if mono is not None:
                anchor = raw - mono
            else:
                anchor = None if new_boot else prev_anchor
        t = raw if raw > last_t else last_t
        live = received - raw <= window
        if new_boot:
            _end_session(c, last_t, "agent_stop" if last_stop else AGENT_RESTART, sessions)
            c.state, c.state_since, c.period_ms = "unknown", last_t, params.heartbeat_ms
            c.boot_start = t
        prev_anchor = anchor
        period = r.period_ms if r.type == "heartbeat" and r.period_ms else c.period_ms
        if seq != last_seq + 1 and not _declared_dropped(last_seq + 1, seq - 1, gaps):
            status, reason = GAP, RECORDS_LOST
        elif new_boot:
            status, reason = OFFLINE, AGENT_STOPPED if last_stop else AGENT_RESTART
        elif last_stop:
            status, reason = OFFLINE, AGENT_STOPPED
        elif (t - last_t) * 1000 > period * limit:
            status, reason = OFFLINE, SILENT
        else:
            status, reason = WATCHING, ""
        if t > last_t:
            arrival = "live" if (last_live and live) else "spool"
            seg_attrs = (c.state, status == WATCHING, arrival, c.session.session_id if c.session else None)
            seg, cov = c.seg, c.cov
            # _extend changes nothing while both open rows keep their attributes (most records):
            # the call is skipped then
            if seg is None or cov is None or seg.attrs != seg_attrs or cov.attrs != (status, reason):
                _extend(c, out, last_t, last_seq, seg_attrs, (status, reason))
        last_seq, last_t, last_boot, last_live, last_stop = seq, t, r.boot, live, False
        if r.type == "heartbeat":  # _apply's heartbeat case written out (most records)
            if r.state is not None and r.state != c.state:
                c.state, c.state_since = r.state, t
            if r.period_ms:
                c.period_ms = r.period_ms
        else:
            c.last_stop = False
            _apply(c, r, t, sessions, out)
            last_stop = c.last_stop  # a lifecycle stop sets it
    if c is not None:
        c.last_seq, c.last_t, c.last_boot, c.last_live, c.last_stop = last_seq, last_t, last_boot, last_live, last_stop
        c.anchor = prev_anchor
        _emit_open(c, out)
        out.carry = Carry(**{f: getattr(c, f) for f in _CARRY_FIELDS})
    out.sessions = list(sessions.values())
    return out


@dataclass(slots=True)
class _State:
    """Mutable twin of Carry used inside the loop (a frozen copy per record would be slow)."""

    last_seq: int
    last_t: int
    last_boot: int
    last_live: bool
    last_stop: bool
    state: str
    state_since: int
    period_ms: int
    session: Session | None
    seg: _Open | None
    cov: _Open | None
    anchor: int | None
    boot_start: int


_CARRY_FIELDS = tuple(f for f in _State.__slots__)


def _declared_dropped(first: int, last: int, gaps: Sequence[Gap]) -> bool:
    """True when every seq in first..last lies in an 'overflow' gap."""
    need = first
    for g in sorted((g for g in gaps if g.kind == "overflow"), key=lambda g: g.first):
        if g.first > need:
            break
        need = max(need, g.last + 1)
        if need > last:
            return True
    return need > last


def _apply(c: _State, r: Rec, t: int, sessions: dict[str, Session], out: Derived) -> None:
    """The record's own effect, at its (corrected) time t."""
    typ = r.type
    if (typ == "state" or typ == "heartbeat") and r.state is not None and r.state != c.state:
        since = t
        if typ == "state" and r.since is not None and r.since < r.t and c.seg is not None:
            # the agent says the state began earlier (debounce, warm-up): move the change back,
            # on the corrected time line, within the current state, boot and open segment
            since = max(t - (r.t - r.since), c.state_since, c.boot_start, c.seg.start)
            if since < t:
                _restate(c, out, since, r.state, r.seq)
            else:
                since = t
        c.state, c.state_since = r.state, since
    if typ == "heartbeat":
        if r.period_ms:
            c.period_ms = r.period_ms
    elif typ == "session_start" and r.session is not None:
        _end_session(c, t, "replaced", sessions)
        s = Session(r.session, r.method or "", r.user or "", t, None, None, r.seq)
        sessions[s.session_id] = s
        c.session = s
    elif typ == "session_end":
        if c.session is not None and c.session.session_id == r.session:
            _end_session(c, t, r.reason or "", sessions)
    elif typ == "lifecycle" and r.event == "stop":
        c.last_stop = True


def _restate(c: _State, out: Derived, since: int, state: str, seq: int) -> None:
    """Give the open segment's time from `since` on (up to the latest record) the new state."""
    o = c.seg
    assert o is not None
    attrs = (state, *o.attrs[1:])
    if since > o.start:
        out.segments.append(_segment(o, since))
        c.seg = _Open(since, seq, attrs)
    else:
        c.seg = _Open(o.start, o.start_seq, attrs)


def _end_session(c: _State, t: int, reason: str, sessions: dict[str, Session]) -> None:
    if c.session is not None:
        ended = replace(c.session, end=t, end_reason=reason)
        sessions[ended.session_id] = ended
        c.session = None


def _extend(c: _State, out: Derived, start: int, start_seq: int, seg_attrs: tuple[Any, ...],
            cov_attrs: tuple[Any, ...]) -> None:
    """Add the interval from `start` to the open segment and coverage row, closing them where
    attributes change (their end is always the latest record time, so only starts are kept)."""
    if c.seg is None or c.seg.attrs != seg_attrs:
        if c.seg is not None:
            out.segments.append(_segment(c.seg, start))
        c.seg = _Open(start, start_seq, seg_attrs)
    if c.cov is None or c.cov.attrs != cov_attrs:
        if c.cov is not None:
            out.coverage.append(Cover(c.cov.start, start, c.cov.attrs[0], c.cov.attrs[1]))
        c.cov = _Open(start, start_seq, cov_attrs)


def _segment(o: _Open, end: int) -> Segment:
    state, watched, arrival, session = o.attrs
    return Segment(o.start, end, state, watched, arrival, session, o.start_seq)


def _emit_open(c: _State, out: Derived) -> None:
    if c.seg is not None and c.last_t > c.seg.start:
        out.segments.append(_segment(c.seg, c.last_t))
    if c.cov is not None and c.last_t > c.cov.start:
        out.coverage.append(Cover(c.cov.start, c.last_t, c.cov.attrs[0], c.cov.attrs[1]))


def merge_rows(runs: Iterable[Derived]) -> Derived:
    """Combine chained runs as a store keyed by start would: a later row with the same start wins."""
    segs: dict[int, Segment] = {}
    covs: dict[int, Cover] = {}
    sess: dict[str, Session] = {}
    last: Carry | None = None
    for d in runs:
        segs.update({s.start: s for s in d.segments})
        covs.update({x.start: x for x in d.coverage})
        sess.update({s.session_id: s for s in d.sessions})
        last = d.carry
    return Derived(
        segments=[segs[k] for k in sorted(segs)],
        sessions=sorted(sess.values(), key=lambda s: (s.start, s.session_id)),
        coverage=[covs[k] for k in sorted(covs)],
        carry=last,
    )
