"""Ingest rides out a database outage (backs off, acks nothing, stores everything afterwards) and
a broker restart (reconnects to its persistent session)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from protocols import topics
from server.ingest.service import Ingest
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

S = 1000


def test_database_outage_and_broker_restart(pg_server: Any, pg_dsn: str, mqtt_broker: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    a = TestAgent(f"res-{tag}", unit=f"u-{tag}")
    register(pg_dsn, a, org=f"org-{tag}")
    s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}", retry_initial_s=0.2, retry_max_s=0.5)
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    now = int(time.time() * 1000)
    ack_topic = a.topic(topics.Kind.ACK)

    def acked() -> int:
        vals = [orjson.loads(p)["acked"] for t, p in list(pub.received) if t == ack_topic and p]
        return max(vals, default=0)

    def watermark() -> int:
        rows = query(pg_dsn, "SELECT watermark FROM agent_progress WHERE agent_id = %s", (a.agent,))
        return int(rows[0][0]) if rows else 0

    try:
        assert ing.wait_connected()
        pub.publish(a.topic(), a.seal([a.state(now - 50 * S, "running")]))
        wait_for(lambda: acked() == 1, 10, what="first ack")

        pg_server.stop()
        for k in range(4):
            pub.publish(a.topic(), a.seal([a.heartbeat(now - (40 - k) * S, "running")]))
        time.sleep(2.0)
        assert acked() == 1, "nothing may be acknowledged while the database is down"
        assert ing.worker.thread.is_alive()
        assert (ing.metrics.registry.get_sample_value("jishi_ingest_db_errors_total") or 0) >= 1
        pg_server.start()
        wait_for(lambda: acked() == 5, 30, what="ack after the database came back")
        assert watermark() == 5

        mqtt_broker.restart()
        wait_for(lambda: ing.subscriber.connected.is_set(), 30, what="ingest reconnected to the broker")
        pub.close()
        pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
        pub.publish(a.topic(), a.seal([a.heartbeat(now - 30 * S, "running")]))
        wait_for(lambda: watermark() == 6, 20, what="a record after the broker restart")
        n = query(pg_dsn, "SELECT count(*) FROM records r JOIN agent_progress p USING (agent_no)"
                  " WHERE p.agent_id = %s", (a.agent,))[0][0]
        assert n == 6
    finally:
        pub.close()
        ing.stop()
