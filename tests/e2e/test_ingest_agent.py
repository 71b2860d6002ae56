"""The real agent (a simulated power meter, kill -9 several times) -> broker -> ingest -> database.

Every record the agent made is stored exactly once, nothing is quarantined, the server's acks
reach the agent (its spool's acked watermark follows), and each crash shows as offline coverage
(agent_restart) between two boots.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from protocols.signing import key_id, load_private, public_to_b64
from server.ingest.service import Ingest
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, write_config
from tests.server.helpers import Publisher, query, settings_for, wait_for

METER = """
[detectors.power]
kind = "power_meter"
port = "{port}"
timeout_s = 0.05
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""


def spool_meta(cfg: Path) -> dict[str, int]:
    db = sqlite3.connect(cfg.parent / "data" / "spool.db")
    meta = {k: int(v) for k, v in db.execute("SELECT key, value FROM meta WHERE key IN ('next_seq', 'acked', 'boot')")}
    db.close()
    return meta


def test_real_agent_through_ingest(pg_dsn: str, mqtt_broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    agent_id = f"ag-{tag}"
    dsn = pg_dsn
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=mqtt_broker, detectors=METER.format(port=meter.port),
                           running="power", period=0.05, heartbeat=0.2)
        key = load_private(tmp_path / "agent.key")
        unit, instrument = f"u-{agent_id}", f"i-{agent_id}"
        query(dsn, "INSERT INTO organisations (id, name) VALUES (%s, 'Agent Test Univ') RETURNING 1", (f"o-{tag}",))
        query(dsn, "INSERT INTO units (id, org_id, name) VALUES (%s, %s, 'u') RETURNING 1", (unit, f"o-{tag}"))
        query(dsn, "INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i') RETURNING 1", (instrument, unit))
        query(dsn, "INSERT INTO agents (id, instrument_id) VALUES (%s, %s) RETURNING 1", (agent_id, instrument))
        query(dsn, "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s) RETURNING 1",
              (key_id(key), agent_id, public_to_b64(key)))
        s = settings_for(dsn, mqtt_broker, client_id=f"ing-{tag}")
        s.mqtt.share_group = f"g-{tag}"
        ing = Ingest(s).start()
        agent = AgentProc(cfg)
        try:
            assert ing.wait_connected()
            for i in range(3):
                agent.start()
                time.sleep(1.2 + 0.3 * i)
                meter.watts = 900.0 if meter.watts < 100 else 40.0
                time.sleep(0.6)
                agent.kill()
            agent.start()
            time.sleep(1.5)
            assert agent.stop() == 0
            meta = spool_meta(cfg)
            last = meta["next_seq"] - 1

            def done() -> bool:
                rows = query(dsn, "SELECT watermark, derived_seq FROM agent_progress WHERE agent_id = %s", (agent_id,))
                return bool(rows) and rows[0] == (last, last)

            wait_for(done, 30, what=f"all {last} records of the agent stored and derived")
        finally:
            if agent.alive():
                agent.kill()
            ing.stop()
    n = query(dsn, "SELECT count(*), count(DISTINCT seq) FROM records r JOIN agent_progress p USING (agent_no)"
               " WHERE p.agent_id = %s", (agent_id,))
    assert n == [(last, last)]
    assert query(dsn, "SELECT reason, detail FROM quarantine WHERE agent_id = %s", (agent_id,)) == []
    # the agent heard the server's acks (those for the records its clean stop writes — session end,
    # last heartbeat, stop — may come after it exited), and the retained ack it will find at its
    # next start says everything
    assert spool_meta(cfg)["acked"] >= last - 4
    pub = Publisher(mqtt_broker, client_id=f"check-{tag}")
    try:
        wait_for(lambda: any(t == f"jishi/v1/{unit}/{instrument}/ack" and orjson.loads(p)["acked"] == last
                             for t, p in list(pub.received)), 10, what="the retained ack")
    finally:
        pub.close()
    cov = query(dsn, "SELECT status, reason FROM coverage WHERE agent_id = %s ORDER BY start_at", (agent_id,))
    restarts = [c for c in cov if c == ("offline", "agent_restart")]
    assert len(restarts) >= 3, cov
    states = {r[0] for r in query(dsn, "SELECT state FROM usage_segments WHERE agent_id = %s", (agent_id,))}
    assert {"idle", "running"} <= states
