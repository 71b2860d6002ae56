"""Rules of protocols/derive.py, one test per rule, plus: chained runs equal one run."""

from __future__ import annotations

import dataclasses
import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from protocols.derive import Carry, Cover, Gap, Params, Rec, Segment, Session, derive, merge_rows

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S = 1000
P = Params(heartbeat_ms=300 * S, tolerance_permille=1500, live_window_ms=120 * S)


class Script:
    """Builds records with contiguous seqs; received = t (live) unless told."""

    def __init__(self) -> None:
        self.seq = 0
        self.boot = 1
        self.recs: list[Rec] = []

    def add(self, t_s: int, type_: str, *, late_s: int = 0, mono_s: int | None = None, **kw: object) -> Rec:
        """A record at agent wall time t_s (s after T0); received late_s after that (default: then);
        mono_s: the agent's monotonic clock in s (default: none, wall time only)."""
        self.seq += 1
        r = Rec(seq=self.seq, t=T0 + t_s * S, type=type_, boot=self.boot, received=T0 + (t_s + late_s) * S,
                mono=None if mono_s is None else mono_s * S, **kw)  # type: ignore[arg-type]
        self.recs.append(r)
        return r

    def skip(self, n: int) -> None:
        self.seq += n


def seg(a: int, b: int, state: str, watched: bool = True, arrival: str = "live", session: str | None = None,
        start_seq: int = 0) -> tuple[int, int, str, bool, str, str | None]:
    return (T0 + a * S, T0 + b * S, state, watched, arrival, session)


def segs(d: list[Segment]) -> list[tuple[int, int, str, bool, str, str | None]]:
    return [(s.start, s.end, s.state, s.watched, s.arrival, s.session) for s in d]


def covs(d: list[Cover]) -> list[tuple[int, int, str, str]]:
    return [(c.start, c.end, c.status, c.reason) for c in d]


def cov(a: int, b: int, status: str, reason: str = "") -> tuple[int, int, str, str]:
    return (T0 + a * S, T0 + b * S, status, reason)


def test_state_intervals_and_heartbeats_watch() -> None:
    s = Script()
    s.add(0, "lifecycle", event="boot")
    s.add(10, "state", state="idle")
    s.add(300, "heartbeat", state="idle", period_ms=300 * S)
    s.add(400, "state", state="running")
    s.add(700, "heartbeat", state="running", period_ms=300 * S)
    s.add(760, "state", state="idle")
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 10, "unknown"), seg(10, 400, "idle"), seg(400, 760, "running"),
                                ]
    assert covs(d.coverage) == [cov(0, 760, "watching")]
    assert d.carry is not None and d.carry.state == "idle" and d.carry.state_since == T0 + 760 * S


def test_silence_longer_than_tolerance_is_offline() -> None:
    s = Script()
    s.add(0, "state", state="running")
    s.add(300, "heartbeat", state="running", period_ms=300 * S)
    s.add(750, "heartbeat", state="running", period_ms=300 * S)  # 450 s: exactly at tolerance -> watched
    s.add(1201, "heartbeat", state="running", period_ms=300 * S)  # 451 s: too long
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 750, "running"), seg(750, 1201, "running", watched=False)]
    assert covs(d.coverage) == [cov(0, 750, "watching"), cov(750, 1201, "offline", "silent")]


def test_heartbeat_period_comes_from_records() -> None:
    s = Script()
    s.add(0, "heartbeat", state="idle", period_ms=60 * S)
    s.add(60, "heartbeat", state="idle", period_ms=60 * S)
    s.add(200, "heartbeat", state="idle", period_ms=60 * S)  # 140 s > 90 s
    d = derive(s.recs, P)
    assert covs(d.coverage) == [cov(0, 60, "watching"), cov(60, 200, "offline", "silent")]


def test_restart_is_offline_and_starts_unknown_and_ends_session() -> None:
    s = Script()
    s.add(0, "state", state="running")
    s.add(5, "session_start", session="s1", method="os", user="alice")
    s.add(100, "heartbeat", state="running", period_ms=300 * S)
    s.boot = 2  # agent died without a clean stop, came back 60 s later
    s.add(160, "lifecycle", event="boot")
    s.add(170, "state", state="running")
    d = derive(s.recs, P)
    assert segs(d.segments) == [
        seg(0, 5, "running"), seg(5, 100, "running", session="s1"),
        seg(100, 160, "unknown", watched=False), seg(160, 170, "unknown"),
    ]
    assert covs(d.coverage) == [cov(0, 100, "watching"), cov(100, 160, "offline", "agent_restart"),
                                cov(160, 170, "watching")]
    assert d.sessions == [Session("s1", "os", "alice", T0 + 5 * S, T0 + 100 * S, "agent_restart", 2)]


def test_clean_stop_then_boot() -> None:
    s = Script()
    s.add(0, "state", state="idle")
    s.add(50, "lifecycle", event="stop")
    s.add(60, "heartbeat", state="idle", period_ms=300 * S)  # (would not happen, but stop wins)
    d = derive(s.recs, P)
    assert covs(d.coverage) == [cov(0, 50, "watching"), cov(50, 60, "offline", "agent_stopped")]


def test_lost_records_are_a_gap_and_overflow_is_transparent() -> None:
    s = Script()
    s.add(0, "state", state="running")
    s.skip(3)
    s.add(100, "heartbeat", state="running", period_ms=300 * S)
    s.skip(2)
    s.add(200, "heartbeat", state="running", period_ms=300 * S)
    d = derive(s.recs, P, gaps=[Gap(2, 4, "lost"), Gap(6, 7, "overflow")])
    assert covs(d.coverage) == [cov(0, 100, "gap", "records_lost"), cov(100, 200, "watching")]
    assert segs(d.segments) == [seg(0, 100, "running", watched=False), seg(100, 200, "running")]
    # a hole nobody declared is treated as lost too
    d2 = derive(s.recs, P, gaps=[Gap(2, 4, "lost")])
    assert covs(d2.coverage) == [cov(0, 200, "gap", "records_lost")]


def test_arrival_live_needs_both_bounds_live() -> None:
    s = Script()
    s.add(0, "state", state="running")
    s.add(100, "heartbeat", state="running", period_ms=300 * S, late_s=121)  # spool
    s.add(200, "heartbeat", state="running", period_ms=300 * S, late_s=120)  # live (at the window)
    s.add(300, "heartbeat", state="running", period_ms=300 * S)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 200, "running", arrival="spool"), seg(200, 300, "running")]


def test_sessions_replaced_and_ended() -> None:
    s = Script()
    s.add(0, "state", state="running")
    s.add(10, "session_start", session="a", method="checkin", user="u1")
    s.add(20, "session_start", session="b", method="card", user="hmac-sha256:ab")
    s.add(30, "session_end", session="x", reason="checkout")  # not the open one: ignored
    s.add(40, "session_end", session="b", reason="checkout")
    s.add(50, "heartbeat", state="running", period_ms=300 * S)
    d = derive(s.recs, P)
    assert [(x.session_id, x.start, x.end, x.end_reason) for x in d.sessions] == [
        ("a", T0 + 10 * S, T0 + 20 * S, "replaced"), ("b", T0 + 20 * S, T0 + 40 * S, "checkout")]
    assert segs(d.segments) == [seg(0, 10, "running"), seg(10, 20, "running", session="a"),
                                seg(20, 40, "running", session="b"), seg(40, 50, "running")]


def test_heartbeat_with_other_state_changes_state() -> None:
    s = Script()
    s.add(0, "state", state="idle")
    s.add(100, "heartbeat", state="running", period_ms=300 * S)
    s.add(200, "heartbeat", state="running", period_ms=300 * S)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 100, "idle"), seg(100, 200, "running")]


def test_clock_stepping_back_never_overlaps() -> None:
    s = Script()
    s.add(0, "state", state="idle")
    s.add(100, "state", state="running")
    s.add(50, "heartbeat", state="running", period_ms=300 * S)
    s.add(150, "heartbeat", state="running", period_ms=300 * S)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 100, "idle"), seg(100, 150, "running")]


def assert_same_as_asdict(c: Carry) -> None:
    """to_dict is dataclasses.asdict with the open rows' attrs as lists, key order included."""
    ref = dataclasses.asdict(c)
    for key in ("seg", "cov"):
        if ref[key] is not None:
            ref[key]["attrs"] = list(ref[key]["attrs"])
    got = c.to_dict()
    assert got == ref and json.dumps(got) == json.dumps(ref)


def test_carry_round_trips_through_json() -> None:
    s = Script()
    s.add(0, "state", state="running")
    s.add(5, "session_start", session="s1", method="os", user="alice")
    s.add(9, "heartbeat", state="running", period_ms=300 * S)
    c = derive(s.recs, P).carry
    assert c is not None
    assert Carry.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert_same_as_asdict(c)


_types = st.sampled_from(["state", "heartbeat", "session_start", "session_end", "lifecycle", "sample"])


_skews = st.sampled_from([0, 0, 0, 0, -30 * 60 * S, 60 * 60 * S, 86_400 * S])


@st.composite
def scripts(draw: st.DrawFn) -> list[Rec]:
    """Random records: true time advances; the wall clock sometimes jumps (back 30 min, forward
    1 h, a day ahead of the server), mono follows true time within a boot (sometimes absent),
    some records arrive late, state records sometimes claim an earlier `since`."""
    n = draw(st.integers(1, 60))
    recs: list[Rec] = []
    t, boot, seq, skew, boot_t = 0, 1, 0, 0, 0
    with_mono = draw(st.booleans())
    for _ in range(n):
        seq += 1 + draw(st.sampled_from([0, 0, 0, 0, 2]))
        t += draw(st.sampled_from([0, 1, 30, 200, 299, 451, 900])) * S - draw(st.sampled_from([0, 0, 0, 5 * S]))
        if draw(st.sampled_from([0, 0, 0, 0, 0, 1])):
            boot += 1
            boot_t = t - 1000
        skew = draw(_skews) if draw(st.sampled_from([0, 0, 0, 1])) else skew
        typ = draw(_types)
        late = draw(st.sampled_from([0, 0, 500])) * S
        wall = T0 + t + skew
        recs.append(Rec(
            seq=seq, t=wall, type=typ, boot=boot, received=T0 + t + late,
            state=draw(st.sampled_from(["off", "idle", "running"])) if typ in ("state", "heartbeat") else None,
            period_ms=draw(st.sampled_from([60 * S, 300 * S])) if typ == "heartbeat" else None,
            session=draw(st.sampled_from(["a", "b"])) if typ in ("session_start", "session_end") else None,
            method="os" if typ == "session_start" else None, user="u" if typ == "session_start" else None,
            reason="checkout" if typ == "session_end" else None,
            event=draw(st.sampled_from(["boot", "stop"])) if typ == "lifecycle" else None,
            mono=max(0, t - boot_t) if with_mono else None,
            since=wall - draw(st.sampled_from([0, 30, 600, 36_000])) * S if typ == "state" else None,
        ))
    return recs


@given(scripts(), st.lists(st.integers(0, 60), max_size=4))
def test_chained_runs_equal_one_run(recs: list[Rec], cuts: list[int]) -> None:
    whole = derive(recs, P)
    bounds = sorted({0, len(recs), *(c for c in cuts if c <= len(recs))})
    runs = []
    carry = None
    for a, b in itertools.pairwise(bounds):
        d = derive(recs[a:b], P, carry=carry)
        if d.carry is not None:
            assert_same_as_asdict(d.carry)
            carry = Carry.from_dict(json.loads(json.dumps(d.carry.to_dict())))
        runs.append(d)
    merged = merge_rows(runs)
    assert merged.segments == merge_rows([whole]).segments
    assert merged.coverage == merge_rows([whole]).coverage
    assert merged.sessions == merge_rows([whole]).sessions
    # rows tile time: no overlaps, contiguous from the first to the last record
    for x, y in itertools.pairwise(whole.segments):
        assert x.end == y.start and x.end > x.start
    for c, e in itertools.pairwise(whole.coverage):
        assert c.end == e.start and c.end > c.start
    # nothing is placed after the latest moment the server allows for its records
    if whole.segments:
        assert whole.segments[-1].end <= max(r.received for r in recs) + P.future_ms
    # never inflated: watched time is at most what the monotonic clock saw pass within boots (plus
    # the drift the wall clock may be followed by), whatever the wall clock did
    if all(r.mono is not None for r in recs):
        mono_allows = sum(max(0, (b.mono or 0) - (a.mono or 0)) + P.drift_ms
                          for a, b in itertools.pairwise(recs) if a.boot == b.boot)
        assert sum(x.end - x.start for x in whole.segments if x.watched) <= mono_allows


# ---- time: monotonic clock within a boot, receive-time bound, warm-up credit ----------------------

MIN = 60


def running_s(d: list[Segment]) -> float:
    return sum(x.end - x.start for x in d if x.state == "running" and x.watched) / S


def test_clock_jumps_within_a_boot_are_measured_by_mono() -> None:
    """100 true minutes, one heartbeat a minute; the wall clock is set back 30 min at minute 40 and
    forward 60 min at minute 80. Records are sent at their true time (received = true time)."""
    s = Script()
    s.add(0, "state", state="running", mono_s=0)
    for k in range(1, 101):
        skew = 0 if k <= 40 else -30 * MIN if k <= 80 else 30 * MIN
        s.add(k * MIN + skew, "heartbeat", late_s=-skew, mono_s=k * MIN, state="running", period_ms=MIN * S)
    d = derive(s.recs, P)
    assert running_s(d.segments) == 100 * MIN
    # placed on the true time line, watched throughout, and live (received when it happened)
    assert segs(d.segments) == [seg(0, 100 * MIN, "running")]
    assert covs(d.coverage) == [cov(0, 100 * MIN, "watching")]


def test_clock_jumps_in_a_spooled_backlog_are_measured_by_mono() -> None:
    s = Script()
    s.add(0, "state", state="running", mono_s=0, late_s=300 * MIN)
    for k in range(1, 101):
        skew = 0 if k <= 40 else -30 * MIN if k <= 80 else 30 * MIN
        s.add(k * MIN + skew, "heartbeat", late_s=300 * MIN - k * MIN - skew, mono_s=k * MIN, state="running",
              period_ms=MIN * S)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 100 * MIN, "running", arrival="spool")]


def test_slow_drift_follows_the_wall_clock_and_a_jump_does_not() -> None:
    s = Script()
    s.add(0, "state", state="running", mono_s=0)
    s.add(300, "heartbeat", state="running", period_ms=300 * S, mono_s=299)  # 1 s apart: drift, followed
    s.add(600, "heartbeat", state="running", period_ms=300 * S, mono_s=598)
    s.add(903, "heartbeat", state="running", period_ms=300 * S, mono_s=898)  # 3 s more: a jump, mono decides
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 900, "running")]
    assert d.carry is not None and d.carry.anchor == T0 + 2 * S


def test_without_mono_or_across_boots_wall_time_decides() -> None:
    s = Script()
    s.add(0, "state", state="running", mono_s=50)
    s.add(100, "heartbeat", state="running", period_ms=300 * S, mono_s=150)
    s.boot = 2  # a new boot: its mono restarts; wall time places it
    s.add(160, "lifecycle", event="boot", mono_s=1)
    s.add(200, "state", state="running", mono_s=41)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 100, "running"), seg(100, 160, "unknown", watched=False),
                                seg(160, 200, "unknown")]


def test_mono_stepping_back_gives_zero_length_not_overlap() -> None:
    s = Script()
    s.add(0, "state", state="running", mono_s=100)
    s.add(60, "heartbeat", state="running", period_ms=300 * S, mono_s=160)
    s.add(120, "heartbeat", state="running", period_ms=300 * S, mono_s=10)  # forged or broken
    s.add(180, "state", state="idle", mono_s=70)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 60, "running")]
    assert d.carry is not None and d.carry.state == "idle"


def test_forged_mono_cannot_run_ahead_of_receive_time() -> None:
    """Live records a minute apart whose mono claims an hour each: each record's time is at most
    its receive time + future_ms, so the forger gains at most future_ms (10 min) in all."""
    s = Script()
    s.add(0, "state", state="running", mono_s=0)
    for k in range(1, 11):
        s.add(k * MIN, "heartbeat", state="running", period_ms=300 * S, mono_s=k * 3600)
    d = derive(s.recs, P)
    assert d.segments[-1].end == T0 + 10 * MIN * S + P.future_ms
    assert running_s(d.segments) <= 10 * MIN + P.future_ms / S
    # here the first interval (0 -> 1 min + 10 min) is even longer than the tolerance: not watched
    assert running_s(d.segments) == 9 * MIN


def test_future_record_is_clamped_to_its_receive_time() -> None:
    """A clock a day ahead of the server: each record is placed at its receive time at the latest;
    within the boot mono keeps the durations."""
    day = 86_400
    s = Script()
    s.add(day, "state", state="running", late_s=-day, mono_s=5)
    s.add(day + 60, "heartbeat", state="running", period_ms=300 * S, late_s=-day, mono_s=65)
    s.add(day + 120, "heartbeat", state="running", period_ms=300 * S, late_s=-day + 3, mono_s=125)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 120, "running")]
    # without mono: each record at its receive time
    s2 = Script()
    s2.add(day, "state", state="running", late_s=-day)
    s2.add(day + 60, "heartbeat", state="running", period_ms=300 * S, late_s=-day + 1)
    assert segs(derive(s2.recs, P).segments) == [seg(0, 61, "running")]


def warm(s: Script, t_s: int, since_s: int, state: str = "running") -> Rec:
    return s.add(t_s, "state", state=state, since=T0 + since_s * S)


def test_warm_up_counts_from_since() -> None:
    """Warm-up is running time (必要的开机准备时间): the state record at 1000 s says running began at
    the warm-up start, 700 s."""
    s = Script()
    s.add(0, "state", state="idle")
    s.add(300, "heartbeat", state="idle", period_ms=300 * S)
    s.add(600, "heartbeat", state="idle", period_ms=300 * S)
    s.add(900, "heartbeat", state="idle", period_ms=300 * S)
    warm(s, 1000, 700)
    s.add(1300, "heartbeat", state="running", period_ms=300 * S)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 700, "idle"), seg(700, 1300, "running")]
    assert d.carry is not None and d.carry.state_since == T0 + 700 * S


def test_warm_up_credit_is_bounded() -> None:
    # not before the previous state change
    s = Script()
    s.add(0, "state", state="off")
    s.add(100, "state", state="idle")
    warm(s, 200, 50)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 100, "off"), seg(100, 200, "running")]
    # not before the boot's first record
    s = Script()
    s.add(0, "state", state="idle")
    s.boot = 2
    s.add(100, "lifecycle", event="boot")
    s.add(150, "heartbeat", state="unknown", period_ms=300 * S)
    warm(s, 200, 10)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 100, "unknown", watched=False), seg(100, 200, "running")]
    # not across a closed segment (here a session started): closed rows are never rewritten
    s = Script()
    s.add(0, "state", state="idle")
    s.add(100, "session_start", session="x", method="os", user="u")
    s.add(200, "heartbeat", state="idle", period_ms=300 * S)
    warm(s, 250, 50)
    d = derive(s.recs, P)
    assert segs(d.segments) == [seg(0, 100, "idle"), seg(100, 250, "running", session="x")]
    # a since after the record's time changes nothing
    s = Script()
    s.add(0, "state", state="idle")
    warm(s, 100, 150)
    assert segs(derive(s.recs, P).segments) == [seg(0, 100, "idle")]


def test_warm_up_credit_split_across_runs_equals_one_run() -> None:
    s = Script()
    s.add(0, "state", state="idle")
    s.add(300, "heartbeat", state="idle", period_ms=300 * S)
    warm(s, 400, 200)
    s.add(500, "heartbeat", state="running", period_ms=300 * S)
    whole = derive(s.recs, P)
    first = derive(s.recs[:2], P)
    rest = derive(s.recs[2:], P, carry=first.carry)
    assert merge_rows([first, rest]).segments == merge_rows([whole]).segments
    assert segs(merge_rows([whole]).segments) == [seg(0, 200, "idle"), seg(200, 500, "running")]


def test_rec_from_record_reads_mono_and_since() -> None:
    rec = {"agent": "a", "boot": 1, "seq": 2, "t": T0, "mono": 7, "prev": "0" * 64, "type": "state",
           "state": "running", "prev_state": "idle", "rule": "r",
           "evidence": {"state": {"since": T0 - 5, "raw_since": T0 - 1, "warmup_ms": 4}}}
    r = Rec.from_record(rec, T0)
    assert (r.mono, r.since) == (7, T0 - 5)
    assert Rec.from_record({**rec, "evidence": {}}, T0).since is None


def test_carry_saved_before_mono_still_loads() -> None:
    s = Script()
    s.add(0, "state", state="running", mono_s=0)
    c = derive(s.recs, P).carry
    assert c is not None
    old = {k: v for k, v in c.to_dict().items() if k not in ("anchor", "boot_start")}
    back = Carry.from_dict(old)
    assert back.anchor is None and back.boot_start == c.state_since
    s.add(60, "heartbeat", state="running", period_ms=300 * S, mono_s=60)
    assert segs(derive(s.recs[1:], P, carry=back).segments) == [seg(0, 60, "running")]


def test_a_run_ends_at_its_true_edge_and_old_records_still_derive() -> None:
    """§5.2 true edges: the agent decided the end at 700 s (post-run hold + confirmation) but the
    running signal was last seen before 630 s: the run ends at 630 s. An older agent's record
    (since = t) still ends the run where it was decided."""
    def script(since_s: int | None) -> list[Rec]:
        s = Script()
        s.add(0, "state", state="idle", mono_s=0)
        s.add(30, "state", state="running", since=T0 + 30 * S, mono_s=30)
        s.add(300, "heartbeat", state="running", period_ms=300 * S, mono_s=300)
        s.add(600, "heartbeat", state="running", period_ms=300 * S, mono_s=600)
        s.add(700, "state", state="idle", since=None if since_s is None else T0 + since_s * S, mono_s=700)
        s.add(900, "heartbeat", state="idle", period_ms=300 * S, mono_s=900)
        return s.recs

    new = derive(script(630), P)
    assert segs(new.segments)[-1] == seg(630, 900, "idle")
    assert sum(x.end - x.start for x in new.segments if x.state == "running") == 600 * S
    for old in (None, 700):
        d = derive(script(old), P)
        assert sum(x.end - x.start for x in d.segments if x.state == "running") == 670 * S
