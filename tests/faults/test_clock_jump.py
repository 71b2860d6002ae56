"""The agent's wall clock jumps backward, then forward, while the instrument runs; the records go
through the real broker and ingest. The jumps are recorded (signed `lifecycle clock` records,
stored), and machine-hours equal the truth: neither lost nor inflated.

Ground truth: the instrument ran for 100 real minutes (one record a minute, the agent's monotonic
clock `mono` ticking with real time). The wall clock `t` is set back 30 min at record 41 and
forward 60 min at record 81 (so records 41-80 read 30 min behind, 81-100 30 min ahead). Within one
boot protocols/derive.py measures and orders by `mono` and places the boot on the wall-time line by
its first record, so:
- records 1-40: 40 min; 41-80: 40 min (not zero-length, as wall time would make them); 81-100:
  20 min (the wall clock's 60-min step is not an interval of 61 min);
- 100 min counted (the test allows one sampling period either way), at the true times.
Before mono was used, 69 min were counted here (see git history).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from server.ingest.service import Ingest
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

MIN = 60_000


def test_clock_jumps_are_recorded_and_hours_equal_the_truth(pg_dsn: str, mqtt_broker: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    a = TestAgent(f"clk-{tag}", unit=f"uc-{tag}")
    register(pg_dsn, a, org=f"org-{tag}")
    t0 = int(time.time() * 1000) - 200 * MIN
    a.record(t0, "state", mono=1000, state="running", prev_state="unknown", rule="test", evidence={})
    for k in range(1, 101):
        skew = 0 if k <= 40 else -30 * MIN if k <= 80 else 30 * MIN
        t = t0 + k * MIN + skew
        mono = 1000 + k * MIN  # the monotonic clock does not jump
        if k in (41, 81):
            a.record(t, "lifecycle", mono=mono, event="clock",
                     detail={"jump_ms": -30 * MIN if k == 41 else 60 * MIN})
        else:
            a.record(t, "heartbeat", mono=mono, state="running", period_ms=MIN, evidence={})
    s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}")
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    try:
        assert ing.wait_connected()
        pub.publish_many([(a.topic(), a.seal(a.made[i:i + 10])) for i in range(0, len(a.made), 10)])
        wait_for(lambda: query(pg_dsn, "SELECT derived_seq FROM agent_progress WHERE agent_id = %s",
                               (a.agent,)) == [(101,)], 20, what="all records derived")
    finally:
        pub.close()
        ing.stop()
    # recorded: both jumps are stored, signed records (type 6 = lifecycle, server/ingest/book.py)
    jumps = query(pg_dsn, "SELECT r.seq FROM records r JOIN agent_progress p USING (agent_no)"
                  " WHERE p.agent_id = %s AND r.type = 6 ORDER BY r.seq", (a.agent,))
    assert jumps == [(42,), (82,)]  # seq 1 is the state record
    running = query(pg_dsn, "SELECT coalesce(sum(extract(epoch FROM end_at - start_at)), 0) FROM usage_segments"
                    " WHERE agent_id = %s AND state = 'running' AND watched", (a.agent,))[0][0]
    truth_s = 100 * 60
    assert abs(float(running) - truth_s) <= 60, f"{float(running) / 60:.1f} min counted"
    # on the true time line: from the first record to 100 min later, whatever the wall clock said
    span = query(pg_dsn, "SELECT (extract(epoch FROM min(start_at)) * 1000)::bigint,"
                 " (extract(epoch FROM max(end_at)) * 1000)::bigint FROM usage_segments WHERE agent_id = %s",
                 (a.agent,))[0]
    assert span == (t0, t0 + 100 * MIN)
    assert query(pg_dsn, "SELECT count(*) FROM quarantine WHERE agent_id = %s", (a.agent,)) == [(0,)]
