"""A power meter whose energy counter stands still while its power adds up (`e_stuck`, issue 14):
the records are stored like any other, the envelope is flagged at ingest, and the instrument's
plausibility checks name it; a meter whose counter follows its power is not flagged."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg

from server.evaluation import plausibility
from server.ingest.worker import Pipeline
from server.store.times import ms_to_dt
from tests.server.helpers import TestAgent, register, settings_for

S = 1000


def _meter(wh: int, pwh: int, stuck: bool) -> dict[str, Any]:
    return {"meter": {"mw": 1_500_000, "wh": wh, "pwh": pwh, "e_stuck": stuck}}


def test_a_stuck_energy_counter_is_stored_and_flagged(fresh_db: str) -> None:
    honest, stuck = TestAgent("e-honest"), TestAgent("e-stuck")
    for a in (honest, stuck):
        register(fresh_db, a)
    now = int(time.time() * 1000)
    pipe = Pipeline(settings_for(fresh_db), "t")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for a, is_stuck in ((honest, False), (stuck, True)):
            recs = [a.record(now - 30 * 60 * S, "state", state="running", prev_state="idle", rule="test",
                             evidence=_meter(100, 0, False)),
                    a.record(now - 20 * 60 * S, "heartbeat", state="running", period_ms=600_000,
                             evidence=_meter(100, 250, is_stuck)),
                    a.record(now - 10 * 60 * S, "heartbeat", state="running", period_ms=600_000,
                             evidence=_meter(100, 500, is_stuck))]
            out = pipe.process(conn, [a.msg(a.seal(recs))])
            assert not out.rejections, out.rejections
        stored = conn.execute("SELECT count(*) FROM records").fetchone()
        assert stored == (6,)  # nothing refused for it
        rows = conn.execute("SELECT agent_id, records, detector, max_pwh FROM energy_flags").fetchall()
        assert rows == [(stuck.agent, 2, "meter", 500)]
        t0, t1 = ms_to_dt(now) - timedelta(days=1), ms_to_dt(now) + timedelta(days=1)
        flags = plausibility.check_instrument(conn, stuck.instrument, t0, t1)
        assert [f.check for f in flags] == ["energy_stuck"] and flags[0].value == 2.0
        assert plausibility.check_instrument(conn, honest.instrument, t0, t1) == []
