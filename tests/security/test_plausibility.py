"""Plausibility checks (server/evaluation/plausibility.py): each pattern flagged, its honest
neighbour not; and the named queries over data stored by the real ingest pipeline."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg

from server.evaluation.plausibility import (
    PowerBeat,
    Segment,
    check_instrument,
    continuous_running,
    late_share,
    power_below_standby,
    synthetic_heartbeats,
)
from server.ingest.service import Ingest
from server.store.times import TZ
from tests.server.helpers import Publisher, TestAgent, query, register, settings_for, wait_for

D0 = datetime(2026, 3, 2, tzinfo=TZ)  # a Monday, local midnight
H = timedelta(hours=1)


def _days(n: int, running_h: float, idle_h: float = 0.0, start: datetime = D0) -> list[Segment]:
    segs: list[Segment] = []
    for d in range(n):
        t = start + timedelta(days=d)
        segs.append(Segment(t, t + running_h * H, "running"))
        if idle_h:
            segs.append(Segment(t + running_h * H, t + (running_h + idle_h) * H, "idle"))
    return segs


def test_continuous_running_week_flagged() -> None:
    flags = continuous_running(_days(8, 24.0))
    assert [f.check for f in flags] == ["continuous_running"]
    assert flags[0].value == 8.0 and flags[0].start == D0 and flags[0].end == D0 + timedelta(days=8)
    # one long segment spanning 9 days is cut at local midnights and flagged the same
    assert continuous_running([Segment(D0, D0 + timedelta(days=9), "running")])[0].value == 9.0


def test_continuous_running_honest_neighbours_not_flagged() -> None:
    assert continuous_running(_days(6, 24.0)) == []                      # 6 days only
    assert continuous_running(_days(10, 21.5)) == []                     # under 22 h a day
    assert continuous_running(_days(10, 22.5, idle_h=0.5)) == []         # idle every day
    week = _days(10, 24.0)
    week[4] = Segment(week[4].start, week[4].end, "running", watched=False)  # unwatched day breaks the run
    assert continuous_running(week) == []
    # in UTC the days would be split differently; local days are what counts
    assert continuous_running(_days(8, 24.0, start=D0 + 8 * H)) != []


def test_power_below_standby() -> None:
    t = 1_770_000_000_000
    honest = [PowerBeat(t + k * 300_000, "running", 900_000) for k in range(100)]
    fake = [PowerBeat(t + k * 300_000, "running", 40_000 if k % 3 == 0 else 900_000) for k in range(100)]
    assert power_below_standby(honest, standby_mw=120_000) == []
    flags = power_below_standby(fake, standby_mw=120_000)
    assert [f.check for f in flags] == ["power_below_standby"] and abs(flags[0].value - 0.34) < 0.01
    assert power_below_standby(fake, standby_mw=120_000, inverted=True) == []  # running below standby by design
    idle_low = [PowerBeat(b.t_ms, "idle", 1) for b in fake]
    assert power_below_standby(idle_low, standby_mw=120_000) == []
    no_meter = [PowerBeat(b.t_ms, "running", None) for b in fake]
    assert power_below_standby(no_meter, standby_mw=120_000) == []


def test_late_share() -> None:
    live = [Segment(D0 + k * H, D0 + (k + 1) * H, "running", arrival="live") for k in range(20)]
    spool = [Segment(D0 + k * H, D0 + (k + 1) * H, "running", arrival="spool") for k in range(20, 60)]
    assert late_share(live + spool[:10]) == []
    flags = late_share(live + spool)
    assert flags[0].check == "late_share" and abs(flags[0].value - 40 / 60) < 1e-9
    assert late_share(spool[:5]) == []  # too little running time to judge
    idle_spool = [Segment(s.start, s.end, "idle", arrival="spool") for s in spool]
    assert late_share(live + idle_spool) == []


def test_synthetic_heartbeats() -> None:
    t = 1_770_000_000_000
    exact = [t + k * 300_000 for k in range(200)]
    rng = random.Random(7)
    jitter = [t + k * 300_000 + rng.randint(-40, 40) for k in range(200)]
    flags = synthetic_heartbeats(exact)
    assert flags[0].check == "synthetic_heartbeats" and flags[0].value == 199.0
    assert synthetic_heartbeats(jitter) == []
    assert synthetic_heartbeats(exact[:100]) == []  # 99 intervals: too few to say
    # a regular stretch inside jittery data is found
    assert synthetic_heartbeats(jitter[:50] + [jitter[49] + k * 60_000 for k in range(1, 150)])[0].value == 149.0


def test_named_queries_over_ingested_records(pg_dsn: str, mqtt_broker: Any) -> None:
    """A script-like agent (exact 60 s heartbeats, running non-stop, everything sent late) stored
    by the real ingest is flagged by check_instrument."""
    tag = uuid.uuid4().hex[:6]
    a = TestAgent(f"pl-{tag}", unit=f"upl-{tag}")
    register(pg_dsn, a, org=f"org-{tag}")
    s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}")
    s.mqtt.share_group = f"g-{tag}"
    ing = Ingest(s).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    start_ms = int(D0.timestamp() * 1000)
    a.state(start_ms, "running")
    n = 8 * 24 * 60  # 8 days of minute heartbeats
    for k in range(1, n + 1):
        a.heartbeat(start_ms + k * 60_000, "running", period_ms=60_000)
    try:
        assert ing.wait_connected()
        pub.publish_many([(a.topic(), a.seal(a.made[i:i + 500])) for i in range(0, len(a.made), 500)])
        wait_for(lambda: query(pg_dsn, "SELECT derived_seq FROM agent_progress WHERE agent_id = %s",
                               (a.agent,)) == [(n + 1,)], 30, what="all records derived")
    finally:
        pub.close()
        ing.stop()
    with psycopg.connect(pg_dsn) as conn:
        flags = check_instrument(conn, a.instrument, D0, D0 + timedelta(days=10))
    assert sorted(f.check for f in flags) == ["continuous_running", "late_share", "synthetic_heartbeats"]
    assert next(f for f in flags if f.check == "continuous_running").value == 8.0
