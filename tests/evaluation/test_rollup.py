"""The running-time rollup (migration 013) holds exactly what the segments hold.

The year of tests/evaluation/test_scenario_e2e.py goes through the real ingest pipeline in small
batches, so open segments are extended by upserts from batch to batch; it has runs that cross local
midnight (s1: 2024-12-31 22:00 - 2025-01-01 02:00, s7: 2025-12-31 23:00 - 2026-01-01 01:00) and a
late spool batch. After the ingest, after a re-derive of the agent and after a session's identity
changes, every rollup row must equal the sum of the running segments cut at Asia/Shanghai local
midnights (computed here in Python, independently of the SQL that fills the rollup), and the
evaluation's hours from the rollup must equal those summed from the segments for any period.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from protocols.signing import key_id, public_to_b64
from server.derive.rebuild import rebuild_agent
from server.evaluation.indicators import params, segment_hours, segment_hours_from_segments
from server.evaluation.period import Period
from server.ingest.worker import Pipeline
from server.store.times import TZ
from tests.evaluation import scenario
from tests.evaluation.test_scenario_e2e import A1_EVENTS, A2_EVENTS, CAROL_CARD, play
from tests.server.helpers import TestAgent, settings_for

Key = tuple[str, str, date, str, str, str, str]

PERIODS = [
    Period.year(2025),
    Period.year(2024),
    Period(date(2024, 12, 15), date(2025, 3, 11)),  # days, a month, days across a year's end
    Period(date(2025, 1, 1), date(2025, 1, 2)),  # one day: the second half of s1
    Period(date(2024, 11, 1), date(2026, 2, 1)),  # months, a year, months
    Period(date(2025, 12, 31), date(2026, 1, 1)),  # the first hour of s7
]


def expected_rollup(conn: psycopg.Connection[Any]) -> dict[Key, Decimal]:
    """Running segments cut at local midnights, summed per day, month and year."""
    out: dict[Key, Decimal] = defaultdict(Decimal)
    rows = conn.execute(
        "SELECT instrument_id, agent_id, start_at, end_at, watched, arrival, method, identifier"
        " FROM usage_segments WHERE state = 'running'"
    )
    for inst, agent, start, end, watched, arrival, method, ident in rows:
        cls = arrival if watched else "unverified"
        day = start.astimezone(TZ).date()
        while True:
            lo = max(start, datetime.combine(day, datetime.min.time(), TZ))
            hi = min(end, datetime.combine(day + timedelta(days=1), datetime.min.time(), TZ))
            if hi <= lo:
                break
            seconds = Decimal((hi - lo) // timedelta(microseconds=1)) / 1_000_000
            for grain, first in (("d", day), ("m", day.replace(day=1)), ("y", date(day.year, 1, 1))):
                out[(inst, grain, first, agent, cls, method or "", ident or "")] += seconds
            day += timedelta(days=1)
    return {k: v for k, v in out.items() if v}


def stored_rollup(conn: psycopg.Connection[Any]) -> dict[Key, Decimal]:
    rows = conn.execute(
        "SELECT instrument_id, grain, first_day, agent_id, cls, method, identifier, seconds FROM usage_rollup"
    )
    return {(r[0], r[1], r[2], r[3], r[4], r[5], r[6]): r[7] for r in rows}


def assert_rollup_exact(conn: psycopg.Connection[Any]) -> None:
    assert stored_rollup(conn) == expected_rollup(conn)
    for period in PERIODS:
        p = params(period, None)
        assert sorted(segment_hours(conn, p)) == sorted(segment_hours_from_segments(conn, p)), period


@pytest.fixture
def ingested(fresh_db: str) -> str:
    """The scenario's year through the pipeline, 7 envelopes a batch."""
    scenario.build_registry(fresh_db)
    agents = [TestAgent("A1", unit="U1", instrument="I1"), TestAgent("A2", unit="U1", instrument="I2")]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for a in agents:
            conn.execute(
                "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                (key_id(a.key), a.agent, public_to_b64(a.key)),
            )
        pipeline = Pipeline(settings_for(fresh_db), "rollup")
        for agent, events in zip(agents, (A1_EVENTS, A2_EVENTS), strict=True):
            msgs = play(agent, events)
            for i in range(0, len(msgs), 7):
                out = pipeline.process(conn, msgs[i : i + 7])
                assert out.rejections == [], out.rejections
    return fresh_db


def test_rollup_equals_the_segments_after_incremental_ingest(ingested: str) -> None:
    with psycopg.connect(ingested) as conn:
        rollup = stored_rollup(conn)
        # s1 crosses midnight: 2 h on 2024-12-31 and 2 h on 2025-01-01, in both years' rows
        card = ("live", "card", CAROL_CARD)
        assert rollup[("I1", "d", date(2024, 12, 31), "A1", *card)] == 7200
        assert rollup[("I1", "d", date(2025, 1, 1), "A1", *card)] == 7200
        assert rollup[("I1", "y", date(2024, 1, 1), "A1", *card)] == 7200
        assert_rollup_exact(conn)


def test_rollup_follows_a_rederive(ingested: str) -> None:
    with psycopg.connect(ingested) as conn:
        before = stored_rollup(conn)
        rebuild_agent(conn, "A1", settings_for(ingested).derive.params())
        conn.commit()
        assert stored_rollup(conn) == before
        assert_rollup_exact(conn)


def test_rollup_follows_identity_changes(ingested: str) -> None:
    """A session's identity changes (012's trigger rewrites its segments), a session is deleted
    (its time becomes unattributed), a segment is cut in two and one is deleted."""
    with psycopg.connect(ingested) as conn:
        conn.execute("UPDATE user_sessions SET identifier = 'alice2' WHERE agent_id = 'A1' AND session_id = 's2'")
        conn.execute("DELETE FROM user_sessions WHERE agent_id = 'A1' AND session_id = 's4'")
        conn.execute(
            "UPDATE usage_segments SET end_at = end_at - interval '1 hour'"
            " WHERE agent_id = 'A1' AND session_id = 's7' AND state = 'running'"
        )
        conn.execute("DELETE FROM usage_segments WHERE agent_id = 'A2' AND session_id = 's9' AND state = 'running'")
        rollup = stored_rollup(conn)
        assert ("I1", "y", date(2025, 1, 1), "A1", "live", "os", "alice2") in rollup
        assert not any(k[6] == "bob" for k in rollup)
        assert_rollup_exact(conn)


def test_segments_written_before_their_sessions_get_their_identity(fresh_db: str) -> None:
    """Hand-built rows (segments first, then sessions) are rolled up under the session's identity."""
    scenario.build(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        rollup = stored_rollup(conn)
        assert rollup[("I1", "y", date(2025, 1, 1), "A1", "live", "os", "alice")] == 3 * 3600
        assert rollup[("I1", "y", date(2025, 1, 1), "A1", "live", "", "")] == 3600  # nobody logged in
        assert_rollup_exact(conn)
