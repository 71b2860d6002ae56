"""The real agent (a simulated power meter, kill -9 several times) -> broker -> ingest -> database.

Every record the agent made is stored exactly once, nothing is quarantined, the server's acks
reach the agent (its spool's acked watermark follows), and each crash shows as offline coverage
(agent_restart) between two boots.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from protocols.signing import key_id, load_private, public_to_b64
from server.ingest.service import Ingest
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, corrupt_spool_row, spool_meta, write_config
from tests.e2e.helpers import agent_with_ingest
from tests.server.helpers import Publisher, query, settings_for, wait_for

METER = """
[detectors.power]
kind = "power_meter"
port = "{port}"
timeout_s = 0.05
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""


@contextmanager
def metered_agent(dsn: str, broker: Any, tmp_path: Path, prefix: str) -> Iterator[tuple[str, str, ModbusMeter, Path]]:
    """(tag, agent id, its power meter, its config): an agent on a third-party Modbus meter
    (pymodbus), registered in its own organisation, unit and instrument."""
    tag = uuid.uuid4().hex[:6]
    agent_id = f"{prefix}-{tag}"
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=broker, detectors=METER.format(port=meter.port),
                           running="power", period=0.05, heartbeat=0.2)
        key = load_private(tmp_path / "agent.key")
        unit, instrument = f"u-{agent_id}", f"i-{agent_id}"
        query(dsn, "INSERT INTO organisations (id, name) VALUES (%s, 'Agent Test Univ') RETURNING 1", (f"o-{tag}",))
        query(dsn, "INSERT INTO units (id, org_id, name) VALUES (%s, %s, 'u') RETURNING 1", (unit, f"o-{tag}"))
        query(dsn, "INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i') RETURNING 1", (instrument, unit))
        query(dsn, "INSERT INTO agents (id, instrument_id) VALUES (%s, %s) RETURNING 1", (agent_id, instrument))
        query(dsn, "INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s) RETURNING 1",
              (key_id(key), agent_id, public_to_b64(key)))
        yield tag, agent_id, meter, cfg


def test_real_agent_through_ingest(pg_dsn: str, mqtt_broker: Any, tmp_path: Path) -> None:
    dsn = pg_dsn
    with metered_agent(dsn, mqtt_broker, tmp_path, "ag") as (tag, agent_id, meter, cfg):
        unit, instrument = f"u-{agent_id}", f"i-{agent_id}"
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


def test_a_changed_spool_row_becomes_a_gap_and_the_rest_is_stored(pg_dsn: str, mqtt_broker: Any,
                                                                  tmp_path: Path) -> None:
    """SPEC.md §9.2: a spool row changed on disk (here torn in half) is never sent; the server asks
    for it, gets nothing, records it as lost and derives the time around it as a gap, stores every
    other record, and its ack passes the hole so that the agent's spool is trimmed. (Before, such
    a row stopped the agent's publishing for good.)"""
    dsn = pg_dsn
    with metered_agent(dsn, mqtt_broker, tmp_path, "chg") as (tag, agent_id, _meter, cfg):
        agent = AgentProc(cfg)
        try:  # records made while no server listens: all in the spool, none acknowledged
            agent.start()
            spool = cfg.parent / "data" / "spool.db"
            wait_for(lambda: spool.exists() and spool_meta(cfg).get("next_seq", 0) > 12, 20,
                     what="a dozen records spooled")
            assert agent.stop() == 0
        finally:
            if agent.alive():
                agent.kill()
        db = sqlite3.connect(spool)
        (body,) = db.execute("SELECT body FROM records WHERE seq = 6").fetchone()
        db.close()
        corrupt_spool_row(spool, 6, body[: len(body) // 2])
        made = spool_meta(cfg)["next_seq"] - 1
        with agent_with_ingest(dsn, mqtt_broker, cfg, tag, resend_after_s=0.3, resend_max_attempts=1,
                               gap_give_up_after_s=1.0) as agent:

            def passed() -> bool:
                rows = query(dsn, "SELECT watermark FROM agent_progress WHERE agent_id = %s", (agent_id,))
                return bool(rows) and rows[0][0] >= made

            wait_for(passed, 30, what=f"the watermark past seq 6 up to {made}")
            wait_for(lambda: spool_meta(cfg)["acked"] >= made, 10, what="the agent's spool acknowledged past the gap")
            assert agent.stop() == 0
    gaps = query(dsn, "SELECT first_seq, last_seq, kind FROM gaps g JOIN agent_progress p USING (agent_no)"
                 " WHERE p.agent_id = %s", (agent_id,))
    assert gaps == [(6, 6, "lost")]
    seqs = {r[0] for r in query(dsn, "SELECT seq FROM records r JOIN agent_progress p USING (agent_no)"
                                " WHERE p.agent_id = %s", (agent_id,))}
    assert 6 not in seqs and set(range(1, made + 1)) - {6} <= seqs
    assert query(dsn, "SELECT reason FROM quarantine WHERE agent_id = %s", (agent_id,)) == []
    cov = query(dsn, "SELECT status, reason FROM coverage WHERE agent_id = %s ORDER BY start_at", (agent_id,))
    assert ("gap", "records_lost") in cov, cov
