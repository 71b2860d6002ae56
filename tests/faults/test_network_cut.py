"""Network cuts longer than the broker keeps a session, between the broker and each side.

Both the agent and the ingest reach the broker through TCP proxies (sim.devstack.TcpProxy)
that the test cuts (connections dropped, new ones refused) and restores.

1. Ingest cut off for longer than its session expiry (`mqtt.session_expiry_s` = 2 s here, 7 days
   by default): the broker drops the session with its shared subscription, and the records the
   agent publishes meanwhile reach no one. Ingest reconnects without a session, subscribes again,
   sees the hole when the next records arrive and sends `resend`; the agent, which never got an
   ack for them, still holds them and sends them again.
2. The agent cut off (its connection dropped; the broker publishes its Will). The agent connects
   with a clean session on purpose (a fresh client per connection: its spool is the only queue,
   agent/publisher.py), so every reconnect is the "expired session" case: after it, the agent must
   subscribe to its `ack` and `cmd` topics again (shown by its spool's acked watermark following
   the server's after the cut), and re-send everything above the last ack from its spool.

Nothing is lost, nothing is stored twice, machine-hours are those of the known schedule, and the
time of both cuts is watched time (the agent was watching; only the network was down).
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from server.ingest.service import Ingest
from sim.devstack import TcpProxy
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

SESSION_EXPIRY_S = 2
CUT_S = 8.0


def test_cuts_longer_than_session_expiry_lose_nothing(pg_dsn: str, mqtt_broker: Any, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.ingest")
    tag = uuid.uuid4().hex[:6]
    agent_id = f"nc-{tag}"
    to_agent = TcpProxy(mqtt_broker.port).start()
    to_ingest = TcpProxy(mqtt_broker.port).start()

    class Via:
        host, port = to_agent.host, to_agent.port

    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=Via, detectors=meter_toml(meter),
                           running="power", period=PERIOD, heartbeat=HEARTBEAT)
        enrol(pg_dsn, tmp_path, agent_id)
        s = settings_for(pg_dsn, client_id=f"ing-{tag}", gap_give_up_after_s=120.0, resend_max_attempts=10)
        s.mqtt.host, s.mqtt.port = to_ingest.host, to_ingest.port
        s.mqtt.share_group = f"g-{tag}"
        s.mqtt.session_expiry_s = SESSION_EXPIRY_S
        s.mqtt.keepalive_s = 5
        s.derive.heartbeat_s = 1
        ing = Ingest(s).start()
        agent = AgentProc(cfg)
        schedule = Schedule(meter)
        try:
            assert ing.wait_connected()
            schedule.start()
            agent.start()
            wait_until(lambda: progress(pg_dsn, agent_id)[0] >= 10, 30, "records flowing")

            # 1. ingest cut off for longer than its session expiry
            to_ingest.cut()
            before = spool_meta(cfg)["next_seq"]
            time.sleep(CUT_S)
            missed = spool_meta(cfg)["next_seq"] - before
            assert missed > 10, "the agent kept publishing while ingest was away"
            to_ingest.restore()
            wait_until(lambda: ing.subscriber.connected.is_set(), 40, "ingest reconnected")
            wait_until(lambda: progress(pg_dsn, agent_id)[0] >= before + missed, 40,
                       "the records published while ingest had no session")
            resends = ing.metrics.registry.get_sample_value("jishi_ingest_resend_requests_total") or 0

            # 2. the agent cut off
            acked_before = spool_meta(cfg)["acked"]
            to_agent.cut()
            time.sleep(CUT_S)
            assert agent.alive()
            cut_end = spool_meta(cfg)["next_seq"]
            assert spool_meta(cfg)["acked"] <= cut_end - 10
            to_agent.restore()
            wait_until(lambda: spool_meta(cfg)["acked"] >= cut_end - 1, 40,
                       "acks reaching the agent again after it reconnected")
            time.sleep(1.0)
            schedule.stop()
            assert agent.stop() == 0
            last = spool_meta(cfg)["next_seq"] - 1
            wait_until(lambda: progress(pg_dsn, agent_id) == (last, last), 30, f"all {last} records derived")
        finally:
            schedule.stop()
            if agent.alive():
                agent.kill()
            ing.stop()
            to_agent.stop()
            to_ingest.stop()
    sessions = [r.getMessage() for r in caplog.records if "session present" in r.getMessage()]
    assert len(sessions) >= 2 and sessions[-1].endswith("(session present: False)"), sessions
    assert resends >= 1, "the broker had kept the messages: the session did not expire"
    assert acked_before < cut_end
    assert "Traceback" not in agent.text()
    got = outcome(pg_dsn, agent_id)
    assert got["records"] == got["distinct"] == last, "records lost or stored twice"
    assert got["gaps"] == [] and got["quarantine"] == []
    t_first, t_last = got["coverage"][0][2], got["coverage"][-1][3]
    assert not_watching(got["coverage"], t_first, t_last) == []
    truth = schedule.running_s(t_first, t_last)
    allowance = EDGE_ALLOWANCE_S * schedule.switches(t_first, t_last) + 0.5
    assert abs(got["running_s"] - truth) <= allowance, (got["running_s"], truth)
    print(f"network cuts: {missed} records published while ingest's session had expired, recovered by "
          f"{resends:.0f} resend request(s); {last} records stored once; running {got['running_s']:.1f} s "
          f"vs {truth:.1f} s true")
