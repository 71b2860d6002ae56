"""Two `jishi-server ingest` processes share the load (one share group); both are killed with
SIGKILL mid-backlog, one after the other, and restarted in either order: nothing lost, nothing
stored twice, every agent's watermark and derivation at its last seq, usage equal to the truth.

(tests/e2e/test_ingest_kill.py kills a single process once; this adds the second worker, the
double kill and the restart order.)
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from protocols import topics
from tests.server.helpers import Publisher, query, spool_backlog, wait_for
from tests.server.procs import IngestProc, write_config

S = 1000
AGENTS = 4
RECORDS = 1500
PER_ENVELOPE = 10


@pytest.mark.parametrize("order", ["same", "reverse"])
def test_both_workers_killed_and_restarted(order: str, pg_dsn: str, mqtt_broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    dsn = pg_dsn
    agents, items = spool_backlog(dsn, "w", tag, AGENTS, RECORDS, PER_ENVELOPE)
    t0 = int(agents[0].made[0]["t"])
    cfgs = [write_config(tmp_path / f"ingest{n}.toml", dsn, mqtt_broker, f"ing{n}-{tag}", f"g-{tag}",
                         batch_max_messages=20) for n in (1, 2)]
    procs = [IngestProc(c).start() for c in cfgs]
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    names = [ag.agent for ag in agents]

    def progress() -> list[tuple[int, int]]:
        return [(r[0], r[1]) for r in query(
            dsn, "SELECT watermark, derived_seq FROM agent_progress WHERE agent_id = ANY(%s) ORDER BY agent_id",
            (names,))]

    def stored() -> int:
        return int(query(dsn, "SELECT count(*) FROM records r JOIN agent_progress p USING (agent_no)"
                         " WHERE p.agent_id = ANY(%s)", (names,))[0][0])

    try:
        # both persistent sessions must exist before the backlog: each member gets births until one lands
        def subscribed() -> bool:
            for ag in agents:
                pub.publish(ag.topic(topics.Kind.BIRTH), ag.birth(t0, next_seq=1))
            return len(progress()) == AGENTS

        wait_for(subscribed, 20, every=0.3, what="both ingest processes subscribed")
        pub.publish_many(items)
        total = AGENTS * RECORDS
        wait_for(lambda: stored() > total // 6, 30, every=0.005, what="some progress")
        procs[0].kill9()
        wait_for(lambda: stored() > total // 3, 30, every=0.005, what="more progress on the survivor")
        procs[1].kill9()
        at_kill = stored()
        assert at_kill < total, "the backlog drained before the second kill: make it bigger"
        first, second = (0, 1) if order == "same" else (1, 0)
        procs[first] = IngestProc(cfgs[first]).start()
        time.sleep(1.0)
        procs[second] = IngestProc(cfgs[second]).start()
        wait_for(lambda: progress() == [(RECORDS, RECORDS)] * AGENTS, 60, every=0.2,
                 what="all records after both restarts")
        for p in procs:
            assert "Traceback" not in p.output(), p.output()
    finally:
        pub.close()
        for p in procs:
            p.stop()

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
    print(f"{order}: second kill at {at_kill} of {AGENTS * RECORDS} records")
