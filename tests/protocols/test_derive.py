"""Rules of protocols/derive.py, one test per rule, plus: chained runs equal one run."""

from __future__ import annotations

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

    def add(self, t_s: int, type_: str, *, late_s: int = 0, **kw: object) -> Rec:
        self.seq += 1
        r = Rec(seq=self.seq, t=T0 + t_s * S, type=type_, boot=self.boot, received=T0 + (t_s + late_s) * S,
                **kw)  # type: ignore[arg-type]
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


def test_carry_round_trips_through_json() -> None:
    s = Script()
    s.add(0, "state", state="running")
    s.add(5, "session_start", session="s1", method="os", user="alice")
    s.add(9, "heartbeat", state="running", period_ms=300 * S)
    c = derive(s.recs, P).carry
    assert c is not None
    assert Carry.from_dict(json.loads(json.dumps(c.to_dict()))) == c


_types = st.sampled_from(["state", "heartbeat", "session_start", "session_end", "lifecycle", "sample"])


@st.composite
def scripts(draw: st.DrawFn) -> list[Rec]:
    n = draw(st.integers(1, 60))
    recs: list[Rec] = []
    t, boot, seq = 0, 1, 0
    for _ in range(n):
        seq += 1 + draw(st.sampled_from([0, 0, 0, 0, 2]))
        t += draw(st.sampled_from([0, 1, 30, 200, 299, 451, 900])) * S - draw(st.sampled_from([0, 0, 0, 5 * S]))
        boot += draw(st.sampled_from([0, 0, 0, 0, 0, 1]))
        typ = draw(_types)
        late = draw(st.sampled_from([0, 0, 500])) * S
        recs.append(Rec(
            seq=seq, t=T0 + t, type=typ, boot=boot, received=T0 + t + late,
            state=draw(st.sampled_from(["off", "idle", "running"])) if typ in ("state", "heartbeat") else None,
            period_ms=draw(st.sampled_from([60 * S, 300 * S])) if typ == "heartbeat" else None,
            session=draw(st.sampled_from(["a", "b"])) if typ in ("session_start", "session_end") else None,
            method="os" if typ == "session_start" else None, user="u" if typ == "session_start" else None,
            reason="checkout" if typ == "session_end" else None,
            event=draw(st.sampled_from(["boot", "stop"])) if typ == "lifecycle" else None,
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
