"""What migration 037 keeps at write time (issue 17): the classed running-time rollup, the per-record
checks and the service totals hold exactly what a fresh computation from the stored rows gives, and
the evaluation read from them equals the evaluation computed the way before (013's per-identity
rollup classed at report time, every record's window measured from the segments, every record
counted), figure by figure, after: a late spool batch changing a closed day, a re-derive, identity
mapping, person and affiliation edits through the web's role (past running time re-classed), and
service records edited and deleted. Only the owner's triggers write the tables.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import errors

from server.db import queries
from server.derive.rebuild import rebuild_agent
from server.evaluation import reconciliation
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from sim.devstack import role_dsn
from tests.evaluation import scenario
from tests.evaluation.test_record_windows import KEY, PERIODS, ingested  # noqa: F401  (fixture)
from tests.server.helpers import settings_for

Tables = tuple[list[tuple[Any, ...]], ...]


def stored(conn: psycopg.Connection[Any]) -> Tables:
    return (
        conn.execute("SELECT * FROM usage_rollup_classed ORDER BY 1, 2, 3, 4, 5").fetchall(),
        [r[:16] for r in conn.execute("SELECT * FROM record_checks ORDER BY 1").fetchall()],  # not unsupported_us
        conn.execute("SELECT * FROM service_totals ORDER BY 1, 2, 3, 4, 5").fetchall(),
        conn.execute("SELECT * FROM record_totals ORDER BY 1, 2, 3, 4").fetchall(),
        conn.execute("SELECT record_id, sessions, applicant_seen FROM record_checks ORDER BY 1").fetchall(),
    )


def recomputed(conn: psycopg.Connection[Any]) -> Tables:
    """The three tables computed afresh from usage_rollup, record_window_usage and service_records
    (the migration's backfill)."""

    def sql(fn: str, *args: str) -> str:
        row = conn.execute(f"SELECT {fn}({', '.join(['%s'] * len(args))})", args).fetchone()
        assert row is not None
        return str(row[0])

    classed = sql("usage_rollup_classed_sql", "SELECT u.*, 1 AS sign FROM usage_rollup u")
    checks = sql("record_checks_sql", "SELECT * FROM service_records",
                 "SELECT x.*, 1 AS sign FROM record_window_usage x")  # fmt: skip
    totals = sql("service_totals_sql", "SELECT s.*, 1 AS sign FROM service_records s")
    sums = sql("record_totals_sql", "SELECT c.*, 1 AS sign FROM record_checks c")  # (checked above)
    facts = sql("record_facts_sql", "SELECT * FROM service_records")
    return (
        conn.execute(f"SELECT * FROM ({classed}) z WHERE seconds <> 0 ORDER BY 1, 2, 3, 4, 5".encode()).fetchall(),
        conn.execute(f"SELECT * FROM ({checks}) z ORDER BY 1".encode()).fetchall(),
        conn.execute(f"SELECT * FROM ({totals}) z WHERE records <> 0 ORDER BY 1, 2, 3, 4, 5".encode()).fetchall(),
        [(*r[:9], r[9] or 0, r[10] or 0, r[11] or 0) for r in conn.execute(
            f"SELECT * FROM ({sums}) z WHERE records <> 0 ORDER BY 1, 2, 3, 4".encode()).fetchall()],
        conn.execute(f"SELECT * FROM ({facts}) z ORDER BY 1".encode()).fetchall(),
    )


def same_evaluation(conn: psycopg.Connection[Any], *, by_unit: bool = True) -> None:
    """Indicators, the region's reconciliation (totals and fees) and each unit's record list and
    uncovered sessions from 037's and 040's tables equal those computed the way before, exactly,
    for several periods; the tables equal a fresh computation."""
    assert stored(conn) == recomputed(conn)
    for period in PERIODS:
        new, old = compute(conn, period), compute(conn, period, precomputed=False)
        units = new.units if by_unit else []
        assert new == old, period
        rc_new = reconciliation.reconcile(conn, new, KEY)
        rc_old = reconciliation.reconcile(conn, old, KEY, precomputed=False)
        assert (rc_new.units, rc_new.instruments, rc_new.fees) == (rc_old.units, rc_old.instruments, rc_old.fees)
        for unit in units:
            one_new = reconciliation.reconcile(conn, new, KEY, [unit])
            one_old = reconciliation.reconcile(conn, old, KEY, [unit], precomputed=False)
            assert one_new.records == one_old.records, (period, unit)
            assert one_new.sessions == one_old.sessions, (period, unit)
            assert one_new == one_old, (period, unit)
            # for a page (report6): the first listed record, the same totals to the last bit
            page = reconciliation.reconcile(conn, new, KEY, [unit], rows=1)
            assert (page.units, page.instruments, page.sessions, page.fees) == (
                one_new.units, one_new.instruments, one_new.sessions, one_new.fees), (period, unit)
            listed = [r for r in one_new.records if r.unit_id == unit and not (
                r.status == "ok" and not r.type_mismatch and r.may_support_used <= one_new.tolerance_h)]
            assert page.records == listed[:1], (period, unit)
            assert page.listed == (len(listed) if one_new.units[unit].records else None), (period, unit)


def _external_2025(conn: psycopg.Connection[Any]) -> float:
    return compute(conn, Period.year(2025)).region.external.total



def _edit_as_operator(dsn: str, sql: str) -> None:
    """A registry edit through the web's role, audited as the operator."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT audit_as('account:ops')")
        conn.execute(sql.encode())
        conn.commit()

def test_tables_follow_ingest_a_rederive_and_record_edits(ingested: str) -> None:  # noqa: F811
    """After the scenario's incremental ingest and after a re-derive the tables are the same; then
    records edited (window and claim, applicant organisation) and deleted through the web's role
    update their checks and totals."""
    with psycopg.connect(ingested) as conn:
        before = stored(conn)
        assert all(before), "the scenario fills every table"
        facts = before[4]  # 040: sessions and applicant seen, each kind present
        assert {n > 1 for _, n, _ in facts} == {True, False} and {s for _, _, s in facts} >= {True, None}
        same_evaluation(conn)
        rebuild_agent(conn, "A1", settings_for(ingested).derive.params())
        conn.commit()
        assert stored(conn) == before
        r1 = conn.execute(
            "SELECT record_id, attributed_us, own_us, c.service_hours FROM record_checks c"
            " JOIN service_records r ON r.id = c.record_id WHERE r.record_no = 'R1'"
        ).fetchone()
        assert r1 is not None
    with psycopg.connect(role_dsn(ingested, "jishi_web")) as conn:
        conn.execute("SELECT audit_as('account:ops')")
        conn.execute("UPDATE service_records SET end_at = end_at + interval '3 hours', service_hours = 9"
                     " WHERE record_no = 'R1'")  # fmt: skip
        conn.execute("UPDATE service_records SET applicant_org_id = 'O1' WHERE record_no = 'R5'")  # now 130 of its own
        conn.execute("DELETE FROM service_records WHERE record_no = 'W2'")
        conn.commit()
    with psycopg.connect(ingested) as check:
        same_evaluation(check)
        after = check.execute(
            "SELECT record_id, attributed_us, own_us, service_hours FROM record_checks WHERE record_id = %s", (r1[0],)
        ).fetchone()
        assert after is not None and after != r1
        assert check.execute(
            "SELECT count(*) FROM record_checks c WHERE NOT EXISTS"
            " (SELECT 1 FROM service_records r WHERE r.id = c.record_id)"
        ).fetchone() == (0,)


def test_a_late_batch_changes_a_closed_days_rollup(fresh_db: str) -> None:
    """A run of 2024-12-31 seen live, then closed by the next day's batch, then its start arriving
    late from the spool: the day's classed row (alice's: internal) follows each step."""
    scenario.build_registry(fresh_db)
    t = scenario.t
    steps = [
        ("2024-12-31 21:30", "2024-12-31 22:00", "live", 1800),
        ("2024-12-31 21:30", "2025-01-01 00:30", "live", 9000),  # to local midnight
        ("2024-12-31 21:00", "2024-12-31 21:30", "spool", 10800),
    ]
    with psycopg.connect(role_dsn(fresh_db, "jishi_ingest")) as conn:
        conn.execute(
            "INSERT INTO user_sessions (agent_id, instrument_id, session_id, method, identifier, start_at, end_at,"
            " end_reason, start_seq) VALUES ('A1', 'I1', 'late', 'os', 'alice', %s, %s, 'os_logout', 1)",
            (t("2024-12-31 20:00"), t("2025-01-01 01:00")),
        )
        for a, b, arrival, day_seconds in steps:
            queries.upsert_segments(conn, [("A1", "I1", t(a), t(b), "running", True, arrival, "late", 2)])
            conn.commit()
            with psycopg.connect(fresh_db) as check:
                day = check.execute(
                    "SELECT sum(seconds) FROM usage_rollup_classed WHERE instrument_id = 'I1' AND grain = 'd'"
                    " AND first_day = '2024-12-31' AND who = 'internal'"
                ).fetchone()
                assert day == (day_seconds,)
                same_evaluation(check)


def test_registry_edits_reclass_past_running_time(ingested: str) -> None:  # noqa: F811
    """Carol's card (external, O3) remapped to alice (the unit's own), then the mapping removed
    (unattributed), then restored, each through the web's role: the year's external hours and the
    reconciliation follow, with only the affected rows re-classed; then affiliation and person edits."""
    web = role_dsn(ingested, "jishi_web")
    with psycopg.connect(ingested) as check:
        external = _external_2025(check)
        assert external > 0
        untouched = check.execute(
            "SELECT * FROM usage_rollup_classed WHERE instrument_id = 'I2' ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()
    edits = [
        "UPDATE identity_map SET user_id = 'alice' WHERE identifier = 'hmac-sha256:c0ffee'",
        "DELETE FROM identity_map WHERE identifier = 'hmac-sha256:c0ffee'",
        "INSERT INTO identity_map (unit_id, method, identifier, user_id)"
        " VALUES ('U1', 'card', 'hmac-sha256:c0ffee', 'carol')",
    ]
    seen = []
    for sql in edits:
        _edit_as_operator(web, sql)
        with psycopg.connect(ingested) as check:
            same_evaluation(check)
            seen.append(_external_2025(check))
    assert seen[0] < external and seen[1] == seen[0] and seen[2] == external
    with psycopg.connect(ingested) as check:
        assert check.execute(
            "SELECT * FROM usage_rollup_classed WHERE instrument_id = 'I2' ORDER BY 1, 2, 3, 4, 5"
        ).fetchall() == untouched
    # carol's company becomes an affiliated organisation (her time: internal), then carol moves to
    # O4 (external again), then the affiliation goes
    for sql in (
        "INSERT INTO unit_affiliations (unit_id, org_id) VALUES ('U1', 'O3')",
        "UPDATE platform_users SET org_id = 'O4' WHERE id = 'carol'",
        "DELETE FROM unit_affiliations WHERE org_id = 'O3'",
    ):
        _edit_as_operator(web, sql)
        with psycopg.connect(ingested) as check:
            same_evaluation(check)
            if sql.startswith("INSERT"):
                assert _external_2025(check) < external
    with psycopg.connect(ingested) as check:
        assert _external_2025(check) == external
        check.execute("INSERT INTO units (id, org_id, name, region) VALUES ('U2', 'O4', '第二单位', '呼和浩特')")
        check.commit()
    # an instrument moved to another unit, and back: U2's report meets U1's records of I1, which
    # stay U1's claims (as in the region) while the time they cover still counts for I1
    for sql in ("UPDATE instruments SET unit_id = 'U2' WHERE id = 'I1'",
                "UPDATE instruments SET unit_id = 'U1' WHERE id = 'I1'"):
        _edit_as_operator(web, sql)
        with psycopg.connect(ingested) as check:
            same_evaluation(check)
            moved = sql.endswith("'U2' WHERE id = 'I1'")
            ev = compute(check, Period.year(2025))
            region = reconciliation.reconcile(check, ev, KEY)
            one = reconciliation.reconcile(check, ev, KEY, ["U2"] if moved else ["U1"])
            unit = "U2" if moved else "U1"
            assert one.units[unit] == region.units[unit]
            assert [i for i in one.instruments] == [i for i in region.instruments if i.unit_id == unit]
            assert all(r.unit_id == unit for r in one.records)
            if moved:
                assert region.units["U1"].records > 0 and one.records == []


@pytest.mark.parametrize("role", ["jishi_web", "jishi_admin", "jishi_ingest"])
def test_only_the_triggers_write_the_tables(fresh_db: str, role: str) -> None:
    with psycopg.connect(role_dsn(fresh_db, role), autocommit=True) as conn:
        for sql in (
            "INSERT INTO usage_rollup_classed VALUES ('I1', 'y', '2025-01-01', 'live', 'external', 3600)",
            "UPDATE usage_rollup_classed SET seconds = seconds * 2",
            "DELETE FROM usage_rollup_classed",
            "INSERT INTO record_checks (record_id, unit_id, instrument_id, start_at, end_at, service_hours, user_type,"
            " type_mismatch, attributed_us) VALUES (1, 'U1', 'I1', now(), now(), 1, 130, false, 3600000000)",
            "UPDATE record_checks SET attributed_us = attributed_us + 3600000000",
            "UPDATE record_checks SET sessions = sessions + 1, applicant_seen = true",
            "DELETE FROM record_checks",
            "INSERT INTO service_totals VALUES ('I1', 'y', '2025-01-01', 'U1', 130, 1, 100, 1)",
            "UPDATE service_totals SET amount = amount * 2",
            "SELECT record_checks_refresh(ARRAY[1::bigint])",
            "SELECT evaluation_reclass(NULL, ARRAY['U1'], NULL, NULL)",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql.encode())
        if role != "jishi_ingest":
            assert conn.execute("SELECT count(*) FROM record_checks").fetchone() == (0,)


def test_two_segment_writers_of_one_record_leave_its_facts_whole(fresh_db: str) -> None:
    """Two agents of one instrument derive running time inside R6's window at once (029's lock is
    shared between segment writers): the second waits for the first's row of record_checks, and
    its facts (040) are recomputed after that wait, so both sessions count."""
    scenario.build_registry(fresh_db)
    t = scenario.t
    with psycopg.connect(fresh_db) as conn:
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES ('A9', 'I1')")
        conn.commit()
    first = psycopg.connect(role_dsn(fresh_db, "jishi_ingest"))
    second = psycopg.connect(role_dsn(fresh_db, "jishi_ingest"))
    try:
        queries.upsert_segments(first, [("A1", "I1", t("2024-12-31 21:00"), t("2024-12-31 21:30"), "running", True,
                                          "live", "sa", 1)])  # fmt: skip
        pid = second.info.backend_pid
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                queries.upsert_segments, second,
                [("A9", "I1", t("2024-12-31 22:00"), t("2024-12-31 22:30"), "running", True, "live", "sb", 1)],
            )  # fmt: skip
            with psycopg.connect(fresh_db) as check:
                while not waiting.done() and check.execute(
                    "SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone() == (True,):
                    check.commit()  # a new snapshot of pg_stat_activity
            first.commit()
            waiting.result()
        second.commit()
    finally:
        first.close()
        second.close()
    with psycopg.connect(fresh_db) as check:
        facts = check.execute(
            "SELECT c.sessions FROM record_checks c JOIN service_records r ON r.id = c.record_id"
            " WHERE r.record_no = 'R6'"
        ).fetchone()
        assert facts == (2,)
        assert stored(check) == recomputed(check)
