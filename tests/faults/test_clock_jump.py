"""The agent's wall clock jumps backward, then forward, while the instrument runs; the records go
through the real broker and ingest. The jumps are recorded (signed `lifecycle clock` records,
stored), and machine-hours are never inflated by them.

Ground truth: the instrument ran for 100 real minutes (one record a minute). What Jishi counts, by
the rules of protocols/derive.py (event times clamped non-decreasing; an interval longer than
period x tolerance is not watched):
- records 1-40 on time: 40 min;
- clock set back 30 min at record 41: records 41-70 fall at or before the last time already seen
  and give zero-length intervals; 71-80 add 10 min;
- clock set forward 60 min at record 81: the interval 80->81 is 61 min long, not watched; 81-100
  add 19 min.
So 69 min are counted, never more than the 100 true minutes: a clock change can cost a unit
watched time (up to the size of a backward jump, plus one interval), never give it any.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from server.ingest.service import Ingest
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

MIN = 60_000


def test_clock_jumps_are_recorded_and_never_add_hours(pg_dsn: str, mqtt_broker: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    a = TestAgent(f"clk-{tag}", unit=f"uc-{tag}")
    register(pg_dsn, a, org=f"org-{tag}")
    t0 = int(time.time() * 1000) - 200 * MIN
    a.state(t0, "running")
    for k in range(1, 101):
        skew = 0 if k <= 40 else -30 * MIN if k <= 80 else 30 * MIN
        t = t0 + k * MIN + skew
        if k in (41, 81):
            a.record(t, "lifecycle", event="clock", detail={"jump_ms": -30 * MIN if k == 41 else 60 * MIN})
        else:
            a.heartbeat(t, "running", period_ms=MIN)
    s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}")
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    try:
        assert ing.wait_connected()
        time.sleep(0.3)
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
    assert float(running) <= truth_s
    assert float(running) == 69 * 60, f"{float(running) / 60:.1f} min counted"
    assert query(pg_dsn, "SELECT count(*) FROM quarantine WHERE agent_id = %s", (a.agent,)) == [(0,)]
