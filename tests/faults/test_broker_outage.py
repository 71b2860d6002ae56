"""The broker is down (crashed: SIGKILL) for a while under a real agent and a running ingest: the
agent keeps recording into its spool, and when the broker returns everything arrives, is stored
once, and the machine-hours are those of the known schedule (nothing lost, nothing twice, no
unwatched time because of the outage).

This is the short version of `bench/fault_outages.py broker` (30 minutes by default). Why a
~12 s outage shows what a 30-minute one would:
- the agent's reconnect back-off is exponential with a cap (`backoff_max_s`, 120 s by default):
  here backoff_min 0.2 s / max 1 s reaches the cap after 3 attempts, so most of the outage is
  spent retrying at the cap, as a 30-minute outage does at 120 s (a 30-minute outage costs at
  most one cap period, 2 minutes, of extra delay before the flush starts; nothing else changes);
- the spool only grows during an outage: at the defaults (heartbeat 300 s) 30 minutes are six
  heartbeats and the state changes; here a heartbeat every 0.5 s and a switch every ~2 s make
  this outage's backlog larger (~60 records); both are far below the spool limit (200 MB), so
  the limit drops nothing in either (tests/faults/test_agent_disk_full.py covers dropping);
- after reconnecting the agent sends everything above the server's ack from its spool, in
  envelopes of up to 500 records: the same code path whatever the backlog;
- ingest's own reconnect back-off doubles up to a cap of 30 s (paho), reached after ~31 s of
  outage: this outage ends while it is still doubling, a long one sits at the cap; either way
  ingest is back within 30 s of the broker and its persistent session (saved by the broker) resumes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from server.ingest.service import Ingest
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, write_config
from tests.faults.common import (
    EDGE_ALLOWANCE_S,
    HEARTBEAT,
    PERIOD,
    Schedule,
    enrol,
    meter_toml,
    not_watching,
    outcome,
    progress,
    spool_meta,
    wait_until,
)
from tests.server.helpers import settings_for

OUTAGE_S = 12.0


def test_broker_down_agent_spools_and_everything_arrives_once(pg_dsn: str, mqtt_broker: Any,
                                                              tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    agent_id = f"bo-{tag}"
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=mqtt_broker, detectors=meter_toml(meter),
                           running="power", period=PERIOD, heartbeat=HEARTBEAT)
        enrol(pg_dsn, tmp_path, agent_id)
        s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}")
        s.mqtt.share_group = f"g-{tag}"
        s.derive.heartbeat_s = 1
        ing = Ingest(s).start()
        agent = AgentProc(cfg)
        schedule = Schedule(meter)
        try:
            assert ing.wait_connected()
            schedule.start()
            agent.start()
            wait_until(lambda: progress(pg_dsn, agent_id)[0] >= 10, 30, "records flowing")
            down_at = spool_meta(cfg)["next_seq"]
            mqtt_broker.kill()
            time.sleep(OUTAGE_S)
            assert agent.alive()
            during = spool_meta(cfg)
            assert during["next_seq"] > down_at + 20, "the agent kept recording into its spool"
            assert during["acked"] < down_at, "nothing spooled during the outage can have been acknowledged"
            mqtt_broker.start()
            wait_until(lambda: progress(pg_dsn, agent_id)[0] >= during["next_seq"] - 1, 60,
                       "the outage's backlog stored")
            time.sleep(2.0)
            schedule.stop()
            assert agent.stop() == 0
            last = spool_meta(cfg)["next_seq"] - 1
            wait_until(lambda: progress(pg_dsn, agent_id) == (last, last), 30, f"all {last} records derived")
        finally:
            schedule.stop()
            if agent.alive():
                agent.kill()
            if not mqtt_broker.running:
                mqtt_broker.start()
            ing.stop()
    assert "Traceback" not in agent.text(), agent.text()[-3000:]
    got = outcome(pg_dsn, agent_id)
    assert got["records"] == got["distinct"] == last, "records lost or stored twice"
    assert got["gaps"] == [] and got["quarantine"] == []
    t_first, t_last = got["coverage"][0][2], got["coverage"][-1][3]
    assert not_watching(got["coverage"], t_first, t_last) == [], "the outage cost watched time"
    truth = schedule.running_s(t_first, t_last)
    allowance = EDGE_ALLOWANCE_S * schedule.switches(t_first, t_last) + 0.5
    assert abs(got["running_s"] - truth) <= allowance, (got["running_s"], truth)
    print(f"broker down {OUTAGE_S:.0f} s: {last} records ({during['next_seq'] - down_at} spooled during the "
          f"outage), stored once; running {got['running_s']:.1f} s measured vs {truth:.1f} s true")
