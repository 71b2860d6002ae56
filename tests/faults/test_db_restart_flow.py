"""PostgreSQL stopped (fast shutdown: open transactions aborted) and started again while records
are flowing into a running ingest: batches in flight are rolled back and retried, nothing is acked
meanwhile, and afterwards every record is stored exactly once and derived as the ground truth.

(tests/e2e/test_ingest_resilience.py stops the database between publishes; here it stops under a
steady stream, so a batch is inside its transaction when the server goes away.)

The `pg_server` fixture is shared by the whole session: it is started again in `finally`.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from server.ingest.service import Ingest
from sim.devstack import PostgresServer
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

S = 1000
RECORDS = 3000
PER_ENVELOPE = 10


def test_database_restart_while_records_flow(pg_server: PostgresServer, pg_dsn: str, mqtt_broker: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    a = TestAgent(f"dbr-{tag}", unit=f"ud-{tag}")
    register(pg_dsn, a, org=f"org-{tag}")
    t0 = int(time.time() * 1000) - RECORDS * 60 * S
    a.state(t0, "running")
    for k in range(1, RECORDS):
        a.heartbeat(t0 + k * 60 * S, "running" if k < RECORDS // 2 else "idle", period_ms=60_000)
    items = [(a.topic(), a.seal(a.made[i:i + PER_ENVELOPE])) for i in range(0, RECORDS, PER_ENVELOPE)]
    s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}", retry_initial_s=0.1, retry_max_s=0.5,
                     batch_max_messages=5)
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    stopped_at: list[int] = []

    def stream() -> None:
        for topic, payload in items:
            pub.publish(topic, payload)
            time.sleep(0.01)

    def stored() -> int:
        return int(query(pg_dsn, "SELECT count(*) FROM records r JOIN agent_progress p USING (agent_no)"
                         " WHERE p.agent_id = %s", (a.agent,))[0][0])

    sender = threading.Thread(target=stream, daemon=True)
    try:
        assert ing.wait_connected()
        sender.start()
        wait_for(lambda: stored() >= RECORDS // 5, 20, every=0.01, what="records flowing")
        stopped_at.append(stored())
        pg_server.stop()
        time.sleep(2.0)
        assert ing.worker.thread.is_alive()
        pg_server.start()
        sender.join(60)
        wait_for(lambda: query(pg_dsn, "SELECT watermark, derived_seq FROM agent_progress WHERE agent_id = %s",
                               (a.agent,)) == [(RECORDS, RECORDS)], 30, what="every record after the restart")
    finally:
        if not pg_server.is_running():
            pg_server.start()  # shared with every other test of the session
        pub.close()
        ing.stop()
    assert stopped_at[0] < RECORDS, "the stream finished before the database stopped"
    rows = query(pg_dsn, "SELECT count(*), count(DISTINCT r.seq) FROM records r JOIN agent_progress p"
                 " USING (agent_no) WHERE p.agent_id = %s", (a.agent,))
    assert rows == [(RECORDS, RECORDS)]
    segs = query(pg_dsn, "SELECT state, watched, extract(epoch FROM end_at - start_at) FROM usage_segments"
                 " WHERE agent_id = %s ORDER BY start_at", (a.agent,))
    half = RECORDS // 2
    assert [(st, w, float(d)) for st, w, d in segs] == [("running", True, half * 60.0),
                                                       ("idle", True, (RECORDS - 1 - half) * 60.0)]
    assert query(pg_dsn, "SELECT count(*) FROM quarantine WHERE agent_id = %s", (a.agent,)) == [(0,)]
    assert (ing.metrics.registry.get_sample_value("jishi_ingest_db_errors_total") or 0) >= 1
    print(f"database stopped at {stopped_at[0]} of {RECORDS} records")
