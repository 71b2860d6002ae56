"""Live state: updated in the ingest transaction, pushed in-process and over NOTIFY to another
connection; today's verified running time in Asia/Shanghai; the session user and organisation."""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from protocols import topics
from server.ingest import live
from server.ingest.worker import Pipeline
from tests.server.helpers import TestAgent, map_identity, register, settings_for

S = 1000


def test_day_bounds_are_shanghai_days() -> None:
    day, start, end = live.day_bounds(datetime(2026, 3, 1, 16, 30, tzinfo=UTC), "Asia/Shanghai")
    assert str(day) == "2026-03-02"
    assert start == datetime(2026, 3, 1, 16, 0, tzinfo=UTC) and end == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)


def test_hub_drops_oldest_for_a_slow_subscriber() -> None:
    hub = live.LiveHub(maxsize=2)
    q = hub.subscribe()
    hub.publish([{"n": 1}, {"n": 2}, {"n": 3}])
    assert [q.get_nowait()["n"], q.get_nowait()["n"]] == [2, 3]
    hub.unsubscribe(q)
    hub.publish([{"n": 4}])
    assert q.empty()


def test_live_rows_follow_commits(fresh_db: str) -> None:
    dsn = fresh_db
    a = TestAgent("live1")
    register(dsn, a, org="org-unit", org_name="Unit University")
    map_identity(dsn, a.unit, "os", "alice", "alice", "org-ext", "Grassland Dairy Co")
    now = int(time.time() * 1000)
    day_start = int(live.day_bounds(datetime.now(UTC), "Asia/Shanghai")[1].timestamp() * 1000)
    start = max(now - 3600 * S, day_start)  # running for up to an hour, within today
    followed: queue.Queue[dict[str, Any]] = queue.Queue()
    stop, listening = threading.Event(), threading.Event()

    def run_follower() -> None:
        for row in live.follow(dsn, stop=stop, listening=listening):
            followed.put(row)

    th = threading.Thread(target=run_follower, daemon=True)
    th.start()
    assert listening.wait(30)
    hub = live.LiveHub()
    q = hub.subscribe()
    pipe = Pipeline(settings_for(dsn), "t")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            out = pipe.process(conn, [a.msg(a.seal([a.state(start, "running"),
                                                    a.session_start(start + 1 * S, "s1", "alice")]))])
            hub.publish(out.live_rows)
            out = pipe.process(conn, [a.msg(a.seal([a.heartbeat(now, "running", period_ms=3_600_000)]))])
            hub.publish(out.live_rows)
            row = q.get(timeout=5)
            row = q.get(timeout=5)
            assert row["state"] == "running" and row["identifier"] == "alice"
            assert row["org_name"] == "Grassland Dairy Co" and row["online"] is True
            assert row["today_running_s"] == (now - start) / 1000
            assert row["last_seq"] == 3
            # another process sees the same rows, at commit
            got = [followed.get(timeout=5) for _ in range(2)]
            assert got[-1]["today_running_s"] == row["today_running_s"]
            # death: offline
            out = pipe.process(conn, [a.msg(a.death(now + 1), kind=topics.Kind.DEATH)])
            assert out.live_rows[0]["online"] is False and out.live_rows[0]["state"] == "running"
            assert followed.get(timeout=5)["online"] is False
            assert [r["instrument_id"] for r in live.snapshot(conn)] == [a.instrument]
    finally:
        stop.set()
        th.join(5)


def test_live_running_seconds_equal_the_hours_query(fresh_db: str) -> None:
    """running_s_by_instrument (the live state's, through the running partial indexes) gives
    hours_by_instrument's running_s for every instrument and day: segments inside the day, across
    its start and end, running for days (> 24 h, from before the 24 h look-back), unwatched,
    not running, and an instrument with none."""
    from datetime import timedelta

    from server.db import queries

    day0 = datetime(2026, 3, 1, 16, tzinfo=UTC)  # a Shanghai day
    h = timedelta(hours=1)
    segs = [  # agent, instrument, start, end, state, watched
        ("a1", "i1", day0 - 3 * h, day0 + 2 * h, "running", True),        # across the start
        ("a1", "i1", day0 + 2 * h, day0 + 5 * h, "idle", True),
        ("a1", "i1", day0 + 5 * h, day0 + 7 * h, "running", False),       # unwatched
        ("a1", "i1", day0 + 23 * h, day0 + 26 * h, "running", True),      # across the end
        ("a2", "i2", day0 - 50 * h, day0 + 30 * h, "running", True),      # days long, from before the look-back
        ("a3", "i3", day0 - 30 * h, day0 - 1 * h, "running", True),       # ends before
        ("a3", "i3", day0 - 25 * h, day0 + 1 * h, "idle", True),
        ("a4", "i4", day0 - 24 * h, day0 + 3 * h, "running", True),       # starts exactly 24 h before
        ("a4", "i4", day0 + 3 * h, day0 + 3 * h + timedelta(microseconds=7), "running", True),
    ]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO usage_segments (agent_id, instrument_id, start_at, end_at, state, watched, arrival,"
                     " start_seq) SELECT a, i, s, e, st, w, 'live', 1 FROM unnest(%s::text[], %s::text[],"
                     " %s::timestamptz[], %s::timestamptz[], %s::text[], %s::bool[]) AS q(a, i, s, e, st, w)",
                     [list(c) for c in zip(*segs, strict=True)])
        ids = ["i1", "i2", "i3", "i4", "i5"]
        seen = set()
        for d in range(-3, 3):
            lo = day0 + d * 24 * h
            hours = queries.hours_by_instrument(conn, lo, lo + 24 * h, ids)
            got = queries.running_s_by_instrument(conn, lo, lo + 24 * h, ids)
            want = {i: hours[i].running_s if i in hours else 0.0 for i in ids}
            assert {i: got.get(i, 0.0) for i in ids} == want
            seen |= {i for i, v in want.items() if v}
        assert seen == {"i1", "i2", "i3", "i4"}
        assert queries.running_s_by_instrument(conn, day0, day0 + 24 * h, ids)["i1"] == (2 + 1) * 3600
