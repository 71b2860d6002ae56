"""An agent whose wall clock is a day ahead of the server sends live records through the real
broker and ingest. Nothing is lost (every record stored and verified), every one of them is
flagged (`future_records`, the `future_clock` plausibility check, a metric), and for hours each is
placed at its receive time at the latest: the instrument's hours are those the server saw pass,
not a day in the future and never more. An agent 5 minutes ahead (ordinary skew, within the
default `derive.future_s` of 10 minutes) is neither flagged nor moved.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from server.evaluation.plausibility import check_instrument
from server.ingest.service import Ingest
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

MIN = 60_000
DAY = 1440 * MIN
RECORDS = 6


def _ms(v: Any) -> int:
    return int(v.timestamp() * 1000)


def _received(dsn: str, agent: str) -> tuple[int, int]:
    lo, hi = query(dsn, "SELECT min(e.received_at), max(e.received_at) FROM envelopes e"
                   " JOIN agent_progress p USING (agent_no) WHERE p.agent_id = %s", (agent,))[0]
    return _ms(lo), _ms(hi)


def _segments(dsn: str, agent: str) -> list[tuple[int, int, str, bool]]:
    rows = query(dsn, "SELECT start_at, end_at, state, watched FROM usage_segments WHERE agent_id = %s"
                 " ORDER BY start_at", (agent,))
    return [(_ms(a), _ms(b), s, w) for a, b, s, w in rows]


def test_future_clock_is_stored_flagged_and_never_adds_hours(pg_dsn: str, mqtt_broker: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    fut = TestAgent(f"fut-{tag}", unit=f"uf-{tag}")  # wall clock one day ahead
    ok = TestAgent(f"ok-{tag}", unit=f"uf-{tag}")  # wall clock 5 min ahead: ordinary skew
    for a in (fut, ok):
        register(pg_dsn, a, org=f"org-{tag}")
    s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}")
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    m0 = time.monotonic()
    try:
        assert ing.wait_connected()
        for k in range(RECORDS):  # live: each record sent as it is made, 0.3 s apart
            now = int(time.time() * 1000)
            mono = 1000 + int((time.monotonic() - m0) * 1000)
            for a, ahead in ((fut, DAY), (ok, 5 * MIN)):
                if k == 0:
                    rec = a.record(now + ahead, "lifecycle", mono=mono, event="boot", detail={})
                elif k == 1:
                    rec = a.record(now + ahead, "state", mono=mono, state="running", prev_state="unknown",
                                   rule="test", evidence={})
                else:
                    rec = a.record(now + ahead, "heartbeat", mono=mono, state="running", period_ms=1000,
                                   evidence={})
                pub.publish(a.topic(), a.seal([rec]))
            time.sleep(0.3)
        for a in (fut, ok):
            wait_for(lambda a=a: query(pg_dsn, "SELECT derived_seq FROM agent_progress WHERE agent_id = %s",  # type: ignore[misc]
                                       (a.agent,)) == [(RECORDS,)], 20, what=f"{a.agent} derived")
        metric = ing.metrics.future_records._value.get()
    finally:
        pub.close()
        ing.stop()

    # nothing lost, nothing refused
    for a in (fut, ok):
        assert query(pg_dsn, "SELECT count(*) FROM records r JOIN agent_progress p USING (agent_no)"
                     " WHERE p.agent_id = %s", (a.agent,)) == [(RECORDS,)]
        assert query(pg_dsn, "SELECT count(*) FROM quarantine WHERE agent_id = %s", (a.agent,)) == [(0,)]

    # flagged: one row per envelope, every record a day ahead; the ordinary skew is not flagged
    flags = query(pg_dsn, "SELECT first_seq, last_seq, records, max_ahead_ms FROM future_records"
                  " WHERE agent_id = %s ORDER BY first_seq", (fut.agent,))
    assert [(f, la, n) for f, la, n, _ in flags] == [(k, k, 1) for k in range(1, RECORDS + 1)]
    assert all(DAY - MIN < ahead <= DAY for *_, ahead in flags)
    assert query(pg_dsn, "SELECT count(*) FROM future_records WHERE agent_id = %s", (ok.agent,)) == [(0,)]
    assert metric == RECORDS

    # hours: placed at the receive times, not a day ahead; the span the server saw, never more
    lo, hi = _received(pg_dsn, fut.agent)
    segs = _segments(pg_dsn, fut.agent)
    assert segs and segs[0][0] == lo and segs[-1][1] <= hi
    running = sum(b - a for a, b, st, w in segs if st == "running" and w)
    assert 0 < running <= hi - lo
    # the ordinary 5-min skew is left alone: placed by the agent's clock, measured by mono
    ok_segs = _segments(pg_dsn, ok.agent)
    assert ok_segs[0][0] == ok.made[0]["t"] and ok_segs[-1][1] == ok.made[-1]["t"]

    # visible to evaluators and operators as a plausibility flag
    start = datetime.now(UTC) - timedelta(hours=1)
    end = datetime.now(UTC) + timedelta(hours=1)
    with psycopg.connect(pg_dsn) as conn:
        fl = [f for f in check_instrument(conn, fut.instrument, start, end) if f.check == "future_clock"]
        assert len(fl) == 1 and fl[0].value == RECORDS and "ahead of the server clock" in fl[0].detail
        assert [f for f in check_instrument(conn, ok.instrument, start, end) if f.check == "future_clock"] == []


def test_future_flag_counts_only_records_beyond_the_threshold() -> None:
    from server.evaluation.plausibility import FutureBatch, future_clock
    from server.ingest.future import flag

    at = datetime(2026, 1, 1, tzinfo=UTC)
    recs = [{"seq": 7, "t": 1_000 + 10 * MIN}, {"seq": 8, "t": 1_000 + 10 * MIN + 1}, {"seq": 9, "t": 1_000 + DAY}]
    row = flag("a", recs, 1_000, at, 10 * MIN)  # exactly at the threshold is not ahead of it
    assert row is not None and (row.first_seq, row.last_seq, row.records, row.max_ahead_ms) == (8, 9, 2, DAY)
    assert flag("a", recs[:1], 1_000, at, 10 * MIN) is None
    assert future_clock([]) == []
    (f,) = future_clock([FutureBatch(at, 2, DAY), FutureBatch(at + timedelta(hours=1), 1, MIN)])
    assert (f.check, f.value, f.start, f.end) == ("future_clock", 3.0, at, at + timedelta(hours=1))
    assert "1440 min ahead" in f.detail
