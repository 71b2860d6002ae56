"""Backup and restore as docs/operations.md describes it, on real data: two weeks of two simulated
instruments through the real ingest pipeline; pg_dump, wipe (drop the database), restore into a
new database with TimescaleDB's pre/post-restore steps; the indicators, the derived rows and the
audit log's protection are unchanged."""

from __future__ import annotations

import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from protocols import topics
from protocols.signing import generate as new_key
from protocols.signing import key_id, public_to_b64
from server.evaluation.indicators import compute
from server.evaluation.period import Period
from sim import backfill, seed
from sim.catalog import INSTRUMENTS, ORGS, PEOPLE, UNITS
from sim.devstack import PostgresServer
from sim.history import VirtualAgent, envelopes, profile
from sim.model import generate, ms

PERIOD = Period(date(2025, 3, 3), date(2025, 3, 17))


def _fill(dsn: str) -> None:
    specs = [s for s in INSTRUMENTS if s.id in ("imu-xrd", "btri-tga")]
    keys = {s.id: new_key() for s in specs}
    with psycopg.connect(dsn, autocommit=True) as conn:
        seed.registry(conn, UNITS, ORGS, PEOPLE, specs)
        seed.logins(conn, "pw-for-tests")
        seed.enrol(conn, [(f"{s.id}-a1", s.id, key_id(keys[s.id]), public_to_b64(keys[s.id])) for s in specs])
    items: list[tuple[str, bytes, float]] = []
    truths = []
    for s in specs:
        tr = generate(s, PEOPLE, ms(PERIOD.t0), ms(PERIOD.t1), seed=3)
        truths.append(tr)
        recs = VirtualAgent(f"{s.id}-a1", s, tr, profile(s), seed=3).run()
        top = topics.topic(s.unit_id, s.id, topics.Kind.REC)
        items += [(top, e, time.time()) for e in envelopes(f"{s.id}-a1", s.unit_id, s.id, keys[s.id], recs,
                                                            int(time.time() * 1000))]
    assert backfill.direct(dsn, items) > 5_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        seed.service_records(conn, truths, PEOPLE, ORGS, seed=3)


def _snapshot(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ev = compute(conn, PERIOD)
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                  for t in ("records", "envelopes", "usage_segments", "user_sessions", "coverage", "service_records",
                            "audit_log", "agent_keys", "web_accounts")}
    return {"region": ev.region.as_dict(), "instruments": {k: v.as_dict() for k, v in ev.instruments.items()},
            "counts": counts}


def _run(pg: PostgresServer, tool: str, *args: str) -> None:
    subprocess.run([str(pg.bindir / tool), *args], check=True, capture_output=True, timeout=120)


def test_dump_wipe_restore_keeps_the_indicators(pg_server: PostgresServer, fresh_db: str, tmp_path: Path) -> None:
    pg, src = pg_server, fresh_db
    _fill(src)
    before = _snapshot(src)
    assert before["region"]["running_hours"]["verified"] > 50 and before["region"]["external_hours"]["verified"] > 0
    dump = tmp_path / "jishi.dump"
    # 1. backup: custom format, compressed; TimescaleDB's hypertable chunks are dumped as tables
    _run(pg, "pg_dump", "--format=custom", "--file", str(dump), src)
    # 2. wipe
    pg.drop_database(src.rsplit("/", 1)[1])
    # 3. restore into a new database: extension first, pre-restore, pg_restore, post-restore
    pg.drop_database("jishi_restored")
    dst = pg.create_database("jishi_restored")
    with psycopg.connect(dst, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute("SELECT timescaledb_pre_restore()")
    _run(pg, "pg_restore", "--dbname", dst, "--no-owner", str(dump))
    with psycopg.connect(dst, autocommit=True) as conn:
        conn.execute("SELECT timescaledb_post_restore()")
    try:
        after = _snapshot(dst)
        assert after == before
        with psycopg.connect(dst, autocommit=True) as conn:
            # still a hypertable, and the audit log still refuses changes
            assert conn.execute("SELECT count(*) FROM timescaledb_information.hypertables"
                                " WHERE hypertable_name = 'records'").fetchone() == (1,)
            try:
                conn.execute("DELETE FROM audit_log")
                raise AssertionError("audit_log accepted a DELETE after the restore")
            except psycopg.errors.InsufficientPrivilege:
                pass
    finally:
        pg.drop_database("jishi_restored")
