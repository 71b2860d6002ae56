"""Per-record window time (migration 029, issue 17) holds exactly what the segments hold.

`record_window_usage` is kept by triggers at derive time, so the reconciliation reads a few rows per
service record instead of looking up its running segments. Checked here against an independent
computation in Python (running segments clipped to each record's window, cut at Asia/Shanghai
local midnights): after every batch of the scenario year's real ingest (open segments extended
from batch to batch, a late spool batch changing days already past), after a re-derive, after
service records are added, moved and deleted through the web's role, and for the reconciliation's
figures (precomputed = from the segments, every record and every total, several periods). The web's
role may read the table but never write it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors

from protocols.signing import key_id, public_to_b64
from server.db import queries
from server.derive.rebuild import rebuild_agent
from server.evaluation import privacy, reconciliation
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from server.ingest.worker import Pipeline
from server.store.times import TZ
from sim.devstack import role_dsn
from tests.evaluation import scenario
from tests.evaluation.test_scenario_e2e import A1_EVENTS, A2_EVENTS, play
from tests.server.helpers import TestAgent, settings_for

Key = tuple[int, date, str, datetime, bool, str, str, str]
KEY = privacy.Pseudonymizer(b"w" * 32)

PERIODS = [
    Period.year(2025),
    Period.year(2024),
    Period(date(2024, 12, 15), date(2025, 3, 11)),
    Period(date(2024, 12, 31), date(2025, 1, 1)),  # W1's window runs past this period's end
    Period(date(2025, 3, 10), date(2025, 3, 11)),
]

# Records beside the scenario's: one across local midnight and a period's end, one longer than 24 h.
EXTRA = [
    ("W1", "I1", "2024-12-31 21:30", "2025-01-01 01:00", "3.5", 130, "carol", "O3"),
    ("W2", "I1", "2025-03-09 12:00", "2025-03-11 12:00", "10.0", 120, "alice", "O1"),
]


def expected_windows(conn: psycopg.Connection[Any]) -> dict[Key, int]:
    """Running segments inside each record's window, cut at local midnights, in microseconds."""
    out: dict[Key, int] = defaultdict(int)
    segs = conn.execute(
        "SELECT instrument_id, agent_id, start_at, end_at, watched, session_id, method, identifier"
        " FROM usage_segments WHERE state = 'running'"
    ).fetchall()
    for rec_id, inst, r0, r1 in conn.execute("SELECT id, instrument_id, start_at, end_at FROM service_records"):
        for s_inst, agent, s0, s1, watched, session, method, ident in segs:
            lo, hi = max(s0, r0), min(s1, r1)
            if s_inst != inst or hi <= lo:
                continue
            day = lo.astimezone(TZ).date()
            while True:
                a = max(lo, datetime.combine(day, datetime.min.time(), TZ))
                b = min(hi, datetime.combine(day + timedelta(days=1), datetime.min.time(), TZ))
                if b <= a:
                    break
                key = (rec_id, day, agent, s0, watched, session or "", method or "", ident or "")
                out[key] += (b - a) // timedelta(microseconds=1)
                day += timedelta(days=1)
    return dict(out)


def stored_windows(conn: psycopg.Connection[Any]) -> dict[Key, int]:
    rows = conn.execute(
        "SELECT record_id, day, agent_id, seg_start, watched, session_id, method, identifier, us"
        " FROM record_window_usage"
    ).fetchall()
    return {(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]): r[8] for r in rows}


def _add_extra(conn: psycopg.Connection[Any]) -> None:
    for no, inst, a, b, hours, user_type, user, org in EXTRA:
        conn.execute(
            "INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,"
            " amount, user_type, applicant_user_id, applicant_org_id) VALUES ('U1', %s, %s, %s, %s, %s, 0, %s, %s, %s)",
            (inst, no, scenario.t(a), scenario.t(b), Decimal(hours), user_type, user, org),
        )


@pytest.fixture
def ingested(fresh_db: str) -> str:
    """Records first, then the scenario's year through the pipeline as the ingest role, 7 envelopes
    a batch, the windows checked after every batch."""
    scenario.build_registry(fresh_db)
    agents = [TestAgent("A1", unit="U1", instrument="I1"), TestAgent("A2", unit="U1", instrument="I2")]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        _add_extra(conn)
        for a in agents:
            conn.execute(
                "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                (key_id(a.key), a.agent, public_to_b64(a.key)),
            )
    with psycopg.connect(role_dsn(fresh_db, "jishi_ingest"), autocommit=True) as conn, \
            psycopg.connect(fresh_db, autocommit=True) as check:  # fmt: skip
        pipeline = Pipeline(settings_for(fresh_db), "windows")
        for agent, events in zip(agents, (A1_EVENTS, A2_EVENTS), strict=True):
            msgs = play(agent, events)
            for i in range(0, len(msgs), 7):
                out = pipeline.process(conn, msgs[i : i + 7])
                assert out.rejections == [], out.rejections
                assert stored_windows(check) == expected_windows(check)
    return fresh_db


def _figures(conn: psycopg.Connection[Any], period: Period, precomputed: bool) -> tuple[Any, ...]:
    ev = compute(conn, period)
    region = reconciliation.reconcile(conn, ev, KEY, precomputed=precomputed)
    unit = reconciliation.reconcile(conn, compute(conn, period, ["U1"]), KEY, ["U1"], precomputed=precomputed)
    # dataclasses: every figure compared exactly (no rounding)
    return (region.units, region.instruments, region.fees, unit.records, unit.sessions, unit.units, unit.instruments)


def test_windows_follow_incremental_ingest_and_give_the_same_reconciliation(ingested: str) -> None:
    with psycopg.connect(ingested) as conn:
        stored = stored_windows(conn)
        w1 = conn.execute("SELECT id FROM service_records WHERE record_no = 'W1'").fetchone()
        assert w1 is not None
        # W1 (21:30-01:00) holds s1's running time on both local days
        assert {k[1] for k in stored if k[0] == w1[0]} == {date(2024, 12, 31), date(2025, 1, 1)}
        records = sessions = 0
        for period in PERIODS:
            new, old = _figures(conn, period, True), _figures(conn, period, False)
            assert new == old, period
            records += len(new[3])
            sessions += len(new[4])
        assert records > 8 and sessions > 0  # the comparison is not vacuous


def test_a_late_record_changes_yesterdays_window(fresh_db: str) -> None:
    """R6 (2024-12-31 21:00-23:00): the run seen live up to 22:00, then the next day's batch closes
    it at 00:30 (the open segment's upsert), then the spool brings 21:00-21:30 late: the day's
    window row follows each step, written by the ingest role."""
    scenario.build_registry(fresh_db)
    t = scenario.t
    r6 = ("R6",)
    with psycopg.connect(role_dsn(fresh_db, "jishi_ingest")) as conn:
        steps = [
            ([("A1", "I1", t("2024-12-31 21:30"), t("2024-12-31 22:00"), "running", True, "live", None, 2)], 1800),
            ([("A1", "I1", t("2024-12-31 21:30"), t("2025-01-01 00:30"), "running", True, "live", None, 2)], 5400),
            ([("A1", "I1", t("2024-12-31 21:00"), t("2024-12-31 21:30"), "running", True, "spool", None, 1)], 7200),
        ]
        for rows, seconds in steps:
            queries.upsert_segments(conn, rows)
            conn.commit()
            with psycopg.connect(fresh_db) as check:
                rec = check.execute("SELECT id FROM service_records WHERE record_no = %s", r6).fetchone()
                assert rec is not None
                day = check.execute(
                    "SELECT sum(us) FROM record_window_usage WHERE record_id = %s AND day = '2024-12-31'", rec
                ).fetchone()
                assert day == (seconds * 1_000_000,)
                assert stored_windows(check) == expected_windows(check)
    with psycopg.connect(fresh_db) as conn:
        assert _figures(conn, Period.year(2024), True) == _figures(conn, Period.year(2024), False)


def test_windows_follow_a_rederive(ingested: str) -> None:
    with psycopg.connect(ingested) as conn:
        before = stored_windows(conn)
        rebuild_agent(conn, "A1", settings_for(ingested).derive.params())
        conn.commit()
        assert stored_windows(conn) == before == expected_windows(conn)


def test_windows_follow_records_written_by_the_web(ingested: str) -> None:
    web = role_dsn(ingested, "jishi_web")
    with psycopg.connect(web) as conn:
        conn.execute("SELECT audit_as('account:ops')")
        conn.execute("UPDATE service_records SET end_at = end_at + interval '3 hours' WHERE record_no = 'R1'")
        conn.execute("UPDATE service_records SET amount = amount + 1 WHERE record_no = 'R5'")  # window unchanged
        conn.execute("UPDATE service_records SET instrument_id = 'I2', start_at = %s, end_at = %s"
                     " WHERE record_no = 'R6'", (scenario.t("2025-07-15 08:00"), scenario.t("2025-07-16 08:00")))
        conn.execute("DELETE FROM service_records WHERE record_no = 'W2'")
        conn.execute(
            "INSERT INTO service_records (unit_id, instrument_id, record_no, start_at, end_at, service_hours,"
            " amount, user_type) VALUES ('U1', 'I1', 'N1', %s, %s, 1, 0, 130)",
            (scenario.t("2025-01-01 00:30"), scenario.t("2025-03-10 15:00")),
        )
        conn.commit()
    with psycopg.connect(ingested) as conn:
        stored = stored_windows(conn)
        assert stored == expected_windows(conn)
        n1 = conn.execute("SELECT id FROM service_records WHERE record_no = 'N1'").fetchone()
        assert n1 is not None and any(k[0] == n1[0] for k in stored)
        assert _figures(conn, Period.year(2025), True) == _figures(conn, Period.year(2025), False)


def test_the_web_cannot_write_the_windows(fresh_db: str) -> None:
    with psycopg.connect(role_dsn(fresh_db, "jishi_web"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM record_window_usage").fetchone() == (0,)
        for sql in (
            "INSERT INTO record_window_usage VALUES (1, '2025-01-01', 'A1', now(), true, '', '', '', 3600000000)",
            "UPDATE record_window_usage SET us = us * 2",
            "DELETE FROM record_window_usage",
            "SELECT record_window_drop_emptied(ARRAY[]::record_window_usage[])",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql.encode())
