"""kill -9 an ingest process in the middle of a backlog and start it again: nothing lost, nothing
stored twice, watermarks and derivation exactly at the last seq."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from protocols import topics
from tests.server.helpers import Publisher, query, spool_backlog, wait_for
from tests.server.procs import IngestProc, write_config

S = 1000
AGENTS = 4
RECORDS = 3000
PER_ENVELOPE = 10


def test_kill9_mid_batch_loses_and_duplicates_nothing(pg_dsn: str, mqtt_broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    dsn = pg_dsn
    agents, items = spool_backlog(dsn, "k", tag, AGENTS, RECORDS, PER_ENVELOPE)
    t0 = int(agents[0].made[0]["t"])

    cfg = write_config(tmp_path / "ingest.toml", dsn, mqtt_broker, f"ing-{tag}", f"g-{tag}",
                       batch_max_messages=40)
    proc = IngestProc(cfg).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    names = [ag.agent for ag in agents]

    def progress() -> list[tuple[int, int]]:
        return [(r[0], r[1]) for r in query(
            dsn, "SELECT watermark, derived_seq FROM agent_progress WHERE agent_id = ANY(%s)", (names,))]

    try:
        # the persistent session must exist before the backlog is published: wait for a birth to land
        def subscribed() -> bool:
            pub.publish(agents[0].topic(topics.Kind.BIRTH), agents[0].birth(t0, next_seq=1))
            return bool(query(dsn, "SELECT 1 FROM agent_progress WHERE agent_id = %s", (names[0],)))

        wait_for(subscribed, 20, every=0.3, what="ingest subscribed")
        pub.publish_many(items)
        wait_for(lambda: sum(w for w, _ in progress()) > RECORDS // 4, 60, every=0.005, what="some progress")
        proc.kill9()
        at_kill = sum(w for w, _ in progress())
        assert at_kill < AGENTS * RECORDS, "the backlog drained before the kill: make it bigger"
        proc = IngestProc(cfg).start()
        wait_for(lambda: progress() == [(RECORDS, RECORDS)] * AGENTS, 90, every=0.2, what="all records after restart")
        assert "Traceback" not in proc.output()
    finally:
        pub.close()
        proc.stop()

    rows = query(dsn, "SELECT count(*), count(DISTINCT (r.agent_no, r.seq)) FROM records r"
                 " JOIN agent_progress p USING (agent_no) WHERE p.agent_id = ANY(%s)", (names,))
    assert rows == [(AGENTS * RECORDS, AGENTS * RECORDS)]
    segs = query(dsn, "SELECT agent_id, state, watched, extract(epoch FROM end_at - start_at) FROM usage_segments"
                 " WHERE agent_id = ANY(%s) ORDER BY agent_id, start_at", (names,))
    half = RECORDS // 2
    for ag in agents:
        mine = [(s, w, float(d)) for a_, s, w, d in segs if a_ == ag.agent]
        assert mine == [("running", True, half * 60.0), ("idle", True, (RECORDS - 1 - half) * 60.0)]
    assert query(dsn, "SELECT count(*) FROM quarantine WHERE agent_id = ANY(%s)", (names,)) == [(0,)]
    print(f"killed at {at_kill} of {AGENTS * RECORDS} records")
