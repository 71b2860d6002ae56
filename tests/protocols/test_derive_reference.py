"""protocols/derive.py's loop against its version before the heartbeat fast path (ingest4): the
offline verifier and ingest must keep deriving the same rows to the millisecond, so the loop as it
was (below, verbatim but for module prefixes) is the reference for random scripts, chained runs
with carries, and Rec lists built by `recs_of`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import protocols.derive as d
from protocols.derive import Carry, Rec, derive, recs_of
from tests.protocols.test_derive import P, scripts


def reference_derive(
    records: Iterable[d.Rec],
    params: d.Params,
    carry: d.Carry | None = None,
    gaps: Sequence[d.Gap] = (),
) -> d.Derived:
    """Derive rows from `records` (ascending seq, the contiguous prefix after `carry`).

    `gaps` must cover every seq missing between consecutive records (and between the carry and
    the first record); a missing seq not covered is treated as lost.
    """
    out = d.Derived(carry=carry)
    sessions: dict[str, d.Session] = {}
    c = None if carry is None else d._State(**{f: getattr(carry, f) for f in d._CARRY_FIELDS})
    limit = params.tolerance_permille
    future, window, drift = params.future_ms, params.live_window_ms, params.drift_ms
    for r in records:
        # the latest the record can have happened: its receive time (+ future_ms unless its own
        # wall clock is already that far ahead, i.e. wrong)
        wall, received = r.t, r.received
        bound = received if wall - received > future else received + future
        if c is None:
            raw = wall if wall < bound else bound
            c = d._State(
                last_seq=r.seq, last_t=raw, last_boot=r.boot, last_live=r.received - raw <= window, last_stop=False,
                state="unknown", state_since=raw, period_ms=params.heartbeat_ms, session=None, seg=None, cov=None,
                anchor=None if r.mono is None else raw - r.mono, boot_start=raw,
            )  # fmt: skip
            d._apply(c, r, raw, sessions, out)
            continue
        if r.seq <= c.last_seq:
            raise ValueError(f"records out of order: seq {r.seq} after {c.last_seq}")
        new_boot = r.boot != c.last_boot
        mono = r.mono
        anchor: int | None
        if mono is not None and not new_boot and c.anchor is not None:
            # same boot: the monotonic clock; the wall clock only where it agrees (drift, slewing)
            anchor = c.anchor
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
                anchor = None if new_boot else c.anchor
        t = raw if raw > c.last_t else c.last_t
        live = received - raw <= window
        if new_boot:
            d._end_session(c, c.last_t, "agent_stop" if c.last_stop else d.AGENT_RESTART, sessions)
            c.state, c.state_since, c.period_ms = "unknown", c.last_t, params.heartbeat_ms
            c.boot_start = t
        c.anchor = anchor
        period = r.period_ms if r.type == "heartbeat" and r.period_ms else c.period_ms
        if r.seq != c.last_seq + 1 and not d._declared_dropped(c.last_seq + 1, r.seq - 1, gaps):
            status, reason = d.GAP, d.RECORDS_LOST
        elif new_boot:
            status, reason = d.OFFLINE, d.AGENT_STOPPED if c.last_stop else d.AGENT_RESTART
        elif c.last_stop:
            status, reason = d.OFFLINE, d.AGENT_STOPPED
        elif (t - c.last_t) * 1000 > period * limit:
            status, reason = d.OFFLINE, d.SILENT
        else:
            status, reason = d.WATCHING, ""
        if t > c.last_t:
            arrival = "live" if (c.last_live and live) else "spool"
            seg_attrs = (c.state, status == d.WATCHING, arrival, c.session.session_id if c.session else None)
            d._extend(c, out, c.last_t, c.last_seq, seg_attrs, (status, reason))
        c.last_seq, c.last_t, c.last_boot, c.last_live, c.last_stop = r.seq, t, r.boot, live, False
        d._apply(c, r, t, sessions, out)
    if c is not None:
        d._emit_open(c, out)
        out.carry = d.Carry(**{f: getattr(c, f) for f in d._CARRY_FIELDS})
    out.sessions = list(sessions.values())
    return out



@settings(max_examples=60)  # the suite's time: test_derive's own chained test covers the rules
@given(scripts(), st.lists(st.integers(0, 60), max_size=3))
def test_loop_equals_the_reference(recs: list[Rec], cuts: list[int]) -> None:
    """Whole and chained runs (the carry passed on) give the same rows and carry as before."""
    bounds = sorted({0, len(recs), *(c for c in cuts if c <= len(recs))})
    carry_new: Carry | None = None
    carry_old: Carry | None = None
    for a, b in itertools.pairwise(bounds):
        gaps = [d.Gap(5, 6, "overflow")] if a % 2 else []
        new = derive(recs[a:b], P, carry_new, gaps)
        old = reference_derive(recs[a:b], P, carry_old, gaps)
        assert (new.segments, new.sessions, new.coverage, new.carry) == (
            old.segments, old.sessions, old.coverage, old.carry)
        carry_new, carry_old = new.carry, old.carry


def _record(r: Rec) -> dict[str, Any]:
    """The wire form of a Rec (as verified records arrive), for recs_of."""
    out: dict[str, Any] = {"seq": r.seq, "t": r.t, "type": r.type, "boot": r.boot}
    if r.mono is not None:
        out["mono"] = r.mono
    if r.type == "heartbeat":
        out |= {"state": r.state or "idle", "period_ms": r.period_ms or 300_000}
    elif r.type == "state":
        out["state"] = r.state or "idle"
        if r.since is not None:
            out["evidence"] = {"state": {"since": r.since}}
    elif r.type == "session_start":
        out |= {"session": r.session, "method": r.method, "user": r.user}
    elif r.type == "session_end":
        out |= {"session": r.session, "reason": r.reason}
    elif r.type == "lifecycle":
        out["event"] = r.event
    return out


@settings(max_examples=40)
@given(scripts())
def test_recs_of_equals_from_record(recs: list[Rec]) -> None:
    wire = [_record(r) for r in recs]
    received = [r.received for r in recs]
    built = recs_of(wire, received)
    assert built == [Rec.from_record(w, rcv) for w, rcv in zip(wire, received, strict=True)]
    assert all(type(x) is Rec for x in built)
    assert derive(built, P) == derive([Rec.from_record(w, rcv) for w, rcv in zip(wire, received, strict=True)], P)
