"""Failover of a synchronously replicated database under load: nothing acknowledged is lost.

Twenty simulated agents stream signed records through the broker into a running ingest in HA mode
(``database.ha``), which reaches the database through a multi-host connection string
(``target_session_attrs=read-write``). Mid-stream the primary is killed (SIGKILL to every process
of it) and the standby promoted. Then:

- every record whose ack an agent had received (and so dropped from its spool) is on the new
  primary, checked before anything else is written there: acked records lost 0;
- the new primary has no synchronous standby yet, so HA-mode ingest stores and acks nothing on it
  (a COMMIT there would be acknowledged with no copy anywhere else) until a new standby is built
  from it; then ingest resumes through the same connection string;
- the web's connection pool, on the same connection string, reaches the new primary;
- at the end every record is stored exactly once (duplicates 0: the batch in flight at the crash
  comes again from the broker and is recognised) and derived as made, on the new standby too.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import orjson
import pytest

from server.ingest.service import Ingest
from server.web.db import Database
from sim.pgha import PgCluster
from tests.cluster.conftest import HA_DB
from tests.server.helpers import Publisher, TestAgent, register, settings_for, wait_for

AGENTS = 20
RECORDS = 400
PER_ENVELOPE = 5
MINUTE = 60_000


def _fleet(dsn: str, tag: str) -> tuple[list[TestAgent], list[tuple[str, bytes]]]:
    """Agents with RECORDS minutes each (running, then idle), sealed PER_ENVELOPE records a message,
    interleaved as a live fleet sends them."""
    fleet = [TestAgent(f"ha{i}-{tag}", unit=f"u-{tag}") for i in range(AGENTS)]
    t0 = int(time.time() * 1000) - RECORDS * MINUTE
    for ag in fleet:
        register(dsn, ag, org=f"org-{tag}")
        ag.state(t0, "running")
        for k in range(1, RECORDS):
            ag.heartbeat(t0 + k * MINUTE, "running" if k < RECORDS // 2 else "idle", period_ms=MINUTE)
    items = [(ag.topic(), ag.seal(ag.made[i:i + PER_ENVELOPE]))
             for i in range(0, RECORDS, PER_ENVELOPE) for ag in fleet]
    return fleet, items


def _acked(pub: Publisher, agents: set[str]) -> dict[str, int]:
    """The highest watermark each agent has been told (what it may drop from its spool)."""
    out: dict[str, int] = {}
    for topic, payload in list(pub.received):
        if topic.endswith("/ack") and payload:
            body = orjson.loads(payload)
            if body["agent"] in agents:
                out[body["agent"]] = max(out.get(body["agent"], 0), int(body["acked"]))
    return out


def _stored(cluster: PgCluster, node: str, agents: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per agent on ``node``: (records, distinct seqs, highest seq such that 1..it are all there)."""
    rows = cluster.query(node, """
        SELECT p.agent_id, count(*), count(DISTINCT r.seq),
               coalesce(min(r.seq) FILTER (WHERE NOT EXISTS (
                   SELECT 1 FROM records r2 WHERE r2.agent_no = r.agent_no AND r2.seq = r.seq + 1)), 0)
        FROM records r JOIN agent_progress p USING (agent_no)
        WHERE p.agent_id = ANY(%s) GROUP BY p.agent_id""", (agents,), dbname=HA_DB)
    got = {str(a): (int(n), int(d), int(c)) for a, n, d, c in rows}
    return {a: got.get(a, (0, 0, 0)) for a in agents}


def test_primary_killed_under_load_nothing_acked_is_lost(pg_ha: PgCluster, mqtt_broker: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="server.ingest.worker")
    tag = uuid.uuid4().hex[:6]
    dsn = pg_ha.dsn(HA_DB, ["a", "b"])
    fleet, items = _fleet(pg_ha.nodes["a"].dsn(HA_DB), tag)
    ids = [a.agent for a in fleet]
    s = settings_for(dsn, mqtt_broker, client_id=f"ing-{tag}", retry_initial_s=0.1, retry_max_s=0.5,
                     batch_max_messages=20)
    s.mqtt.share_group = f"g-{tag}"
    s.database.ha = True
    s.database.connect_timeout_s = 2
    ing = Ingest(s).start()
    web = Database(dsn, min_size=2, max_size=2)  # the web's pool, on the same connection string
    web.open()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    sent, killed = threading.Event(), threading.Event()

    def stream() -> None:
        # the second half only once the primary is dead, whatever the machine's speed: the kill
        # always falls in the middle of the stream (a loaded machine acks more slowly than it sends)
        for k, (topic, payload) in enumerate(items):
            if k == len(items) // 2:
                killed.wait(300)
            pub.publish(topic, payload)
            time.sleep(0.002)
        sent.set()

    sender = threading.Thread(target=stream, daemon=True)
    try:
        assert ing.wait_connected()
        sender.start()
        wait_for(lambda: sum(_acked(pub, set(ids)).values()) >= AGENTS * RECORDS // 4, 120, every=0.02,
                 what="a quarter of the records acked")
        pg_ha.kill9("a")
        killed_at = time.monotonic()
        killed.set()
        acked = _acked(pub, set(ids))  # from here no ack can come from the dead primary's commits
        pg_ha.promote("b")
        promoted_s = time.monotonic() - killed_at
        on_b = _stored(pg_ha, "b", ids)
        lost = {a: (acked[a], on_b[a][2]) for a in ids if on_b[a][2] < acked.get(a, 0)}
        assert lost == {}, f"acked but not on the promoted standby (acked, contiguous): {lost}"
        assert not sent.is_set(), "the stream finished before the failover"
        with web.read() as conn:  # the pool drops its dead connections and reaches the new primary
            assert conn.execute("SELECT pg_is_in_recovery(), current_setting('cluster_name')").fetchone() \
                == (False, "b")
        # HA mode: nothing is stored (so nothing acked) on a primary with no synchronous standby;
        # the refusal is logged only once ingest has reached the promoted node
        wait_for(lambda: "has no synchronous standby" in caplog.text, 60, what="ingest saying why it waits")
        assert _stored(pg_ha, "b", ids) == on_b
        pg_ha.add_standby("c", "b", synchronous=True)
        rebuilt_s = time.monotonic() - killed_at
        sender.join(180)
        assert sent.is_set()
        wait_for(lambda: all(v == (RECORDS, RECORDS, RECORDS) for v in _stored(pg_ha, "b", ids).values()), 180,
                 every=0.2, what="every record on the new primary")
        wait_for(lambda: all(_acked(pub, {a}).get(a) == RECORDS for a in ids), 90, what="every record acked")
    finally:
        killed.set()
        pub.close()
        ing.stop()
        web.close()
    final = _stored(pg_ha, "b", ids)
    assert final == {a: (RECORDS, RECORDS, RECORDS) for a in ids}, "records lost or stored twice"
    progress = pg_ha.query("b", "SELECT agent_id, watermark, derived_seq FROM agent_progress"
                           " WHERE agent_id = ANY(%s)", (ids,), dbname=HA_DB)
    assert sorted(progress) == sorted((a, RECORDS, RECORDS) for a in ids)
    segs = pg_ha.query("b", "SELECT state, count(*), sum(extract(epoch FROM end_at - start_at)) FROM usage_segments"
                       " WHERE agent_id = ANY(%s) AND watched GROUP BY state ORDER BY state", (ids,), dbname=HA_DB)
    half = RECORDS // 2
    assert [(st, int(n), float(d)) for st, n, d in segs] == [
        ("idle", AGENTS, AGENTS * (RECORDS - 1 - half) * 60.0), ("running", AGENTS, AGENTS * half * 60.0)]
    # this test's agents only: the broker is the session's, and a slow machine may still carry an
    # earlier test's stragglers, which this ingest rightly quarantines as unknown agents
    assert pg_ha.query("b", "SELECT reason, count(*) FROM quarantine WHERE topic LIKE %s GROUP BY reason",
                       (f"%-{tag}/%",), dbname=HA_DB) == []
    # the new standby holds what was acked too
    wait_for(lambda: pg_ha.replay_lag_bytes("b").get("c") == 0, 90, what="standby c caught up")
    assert _stored(pg_ha, "c", ids) == final
    print(f"failover: {sum(acked.values())} records acked before the kill, all on the promoted standby;"
          f" promoted in {promoted_s:.1f} s, new synchronous standby after {rebuilt_s:.1f} s;"
          f" {AGENTS * RECORDS} records stored once")
