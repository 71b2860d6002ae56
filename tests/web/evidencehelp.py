"""Signed records of one agent on `ua-nmr` (unit ua), stored through the real ingest pipeline, so
the evidence routes read real envelopes back: a running interval with a power meter (samples and
heartbeat summaries), a process detector, a data-file detector, a session of `LAB\\zhang`, and one
envelope that arrived late (from the spool).

Times: 2025-03-04 10:00–11:00 Asia/Shanghai running, idle before and after.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from protocols.signing import key_id, public_to_b64
from server.ingest.worker import Pipeline
from tests.server.helpers import TestAgent, settings_for

AGENT = "ua-nmr-a1"
START = datetime(2025, 3, 4, 2, 0, tzinfo=UTC)  # 10:00 Asia/Shanghai
END = datetime(2025, 3, 4, 3, 0, tzinfo=UTC)
SHA = "5f" * 32
FILE = "nmr-sample-0042.fid"


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def store_nmr_records(dsn: str) -> TestAgent:
    agent = TestAgent(AGENT, unit="ua", instrument="ua-nmr")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, 'ua-nmr') ON CONFLICT DO NOTHING", (AGENT,))
        conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                     (key_id(agent.key), AGENT, public_to_b64(agent.key)))
    t0, t1 = _ms(START), _ms(END)
    m = 60_000
    boot_t = t0 - 30 * m
    real_record = agent.record

    def record(t: int, type_: str, **body: object) -> dict[str, object]:
        # the derivation times records by the agent's monotonic clock (record() adds 1000)
        agent.mono = t - boot_t - 1000
        return real_record(t, type_, **body)

    agent.record = record  # type: ignore[method-assign]
    recs = [
        (agent.record(t0 - 30 * m, "lifecycle", event="boot", detail={"version": "0.1.0"}), 1000),
        (agent.record(t0 - 30 * m, "state", state="idle", prev_state="unknown", rule="power.running",
                      evidence={"power": {"mw": 120_000, "lvl": 1}}), 1000),
        (agent.session_start(t0 - 5 * m, "s-nmr-1", "LAB\\zhang"), 1000),
        (agent.record(t0, "state", state="running", prev_state="idle", rule="power.running or topspin.active",
                      evidence={"power": {"mw": 1_250_000, "lvl": 2}, "topspin": {"procs": 2, "cpu": 350, "io": 4,
                                                                                  "children": 1}}), 1000),
        (agent.record(t0, "sample", signal="power_mw", unit="mW", start=t0, step_ms=5 * m,
                      values=[1_250_000, 1_300_000, 1_420_000, None, 1_380_000, 1_350_000]), 1000),
        (agent.record(t0 + 30 * m, "heartbeat", state="running", period_ms=30 * m, evidence={
            "power": {"n": 30, "run": 30, "mw_min": 1_200_000, "mw_max": 1_450_000, "mw_avg": 1_330_000},
            "topspin": {"n": 30, "run": 30, "procs_max": 3, "cpu_max": 420},
            "fid": {"files": 0, "new": 1, "done": 1, "sha": SHA, "name": FILE}}), 1000),
        # this one reached the server a day late: from the spool
        (agent.record(t0 + 30 * m, "sample", signal="power_mw", unit="mW", start=t0 + 30 * m, step_ms=5 * m,
                      values=[1_310_000, 1_290_000, 1_440_000, 1_400_000, 1_360_000, 1_330_000]), 86_400_000),
        (agent.record(t1, "state", state="idle", prev_state="running", rule="power.running",
                      evidence={"power": {"mw": 118_000, "lvl": 1}}), 1000),
        (agent.session_end(t1 + 5 * m, "s-nmr-1"), 1000),
        (agent.heartbeat(t1 + 30 * m, "idle", period_ms=30 * m), 1000),
    ]
    msgs = [agent.msg(agent.seal([r], sent=r["t"] + late), r["t"] + late) for r, late in recs]
    with psycopg.connect(dsn, autocommit=True) as conn:
        out = Pipeline(settings_for(dsn), "web-evidence-test").process(conn, msgs)
        assert out.rejections == [], out.rejections
    return agent
