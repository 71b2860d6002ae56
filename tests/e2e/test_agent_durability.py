"""End to end: nothing is lost. kill -9 mid-run and restart; broker down and back; a crashing
broker (SIGKILL). Each time every record from seq 1 arrives, verified, chained from GENESIS."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, Collector, meter_toml, wait_until, write_config

PERIOD = 0.05


class Toggler:
    """Switches the meter between standby and running draw every `every` seconds."""

    def __init__(self, meter: ModbusMeter, every: float = 0.3) -> None:
        self.meter, self.every = meter, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self.meter.watts = 40.0 if self.meter.watts > 100 else 900.0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)


def spool_state(cfg: Path) -> tuple[int, int]:
    db = sqlite3.connect(cfg.parent / "data" / "spool.db")
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    db.close()
    return int(meta["next_seq"]), int(meta["boot"])


def test_kill_9_mid_run_loses_nothing(mqtt_broker: Any, tmp_path: Path) -> None:
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id="kill9", broker=mqtt_broker, detectors=meter_toml(meter),
                           running="power", period=PERIOD, heartbeat=0.1)
        collector = Collector(mqtt_broker, tmp_path, "kill9")
        toggler = Toggler(meter)
        agent = AgentProc(cfg)
        try:
            for i in range(4):
                agent.start()
                # let it run and publish, then kill it at an arbitrary moment mid-run
                time.sleep(1.0 + 0.37 * i)
                agent.kill()
            agent.start()
            time.sleep(1.0)
            assert agent.stop() == 0
        finally:
            toggler.close()
            if agent.alive():
                agent.kill()
        next_seq, boot = spool_state(cfg)
        assert boot == 5
        collector.wait_for(lambda c: len(c.records) >= next_seq - 1, 20, f"all {next_seq - 1} records")
        collector.close()
    recs = collector.check_complete_chain()
    assert not collector.errors, collector.errors
    assert len(recs) == next_seq - 1
    assert {r["boot"] for r in recs} == {1, 2, 3, 4, 5}
    boots = [r for r in recs if r["type"] == "lifecycle" and r["event"] == "boot"]
    assert [r["boot"] for r in boots] == [1, 2, 3, 4, 5]
    # boots never go backwards along the chain
    assert all(a["boot"] <= b["boot"] for a, b in itertools.pairwise(recs))
    assert sum(1 for r in recs if r["type"] == "state") >= 10
    # the Will told the server about each crash: death messages with clean=false (retained, so at
    # least the last one is seen) and a clean one at the end
    assert any(d.clean for d in collector.deaths)
    assert any(not d.clean for d in collector.deaths)


def test_broker_outage_everything_arrives_in_seq_order(mqtt_broker: Any, tmp_path: Path) -> None:
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id="outage", broker=mqtt_broker, detectors=meter_toml(meter),
                           running="power", period=PERIOD, heartbeat=0.2)
        collector = Collector(mqtt_broker, tmp_path, "outage", persistent=True)
        agent = AgentProc(cfg).start()
        toggler = Toggler(meter)
        try:
            collector.wait_for(lambda c: len(c.records) >= 5, 15, "first records")
            mqtt_broker.stop()
            outage_from = spool_state(cfg)[0]
            time.sleep(3.0)  # the agent keeps recording into its spool
            assert agent.alive()
            during = spool_state(cfg)[0]
            assert during > outage_from + 10, "records kept being spooled during the outage"
            mqtt_broker.start()
            wait_until(lambda: collector.client.is_connected(), 15, "collector reconnect")
            time.sleep(1.0)
            mqtt_broker.kill()  # a crash this time: in-flight messages may be lost by the broker
            time.sleep(1.0)
            mqtt_broker.start()
            time.sleep(1.5)
            assert agent.stop() == 0
        finally:
            toggler.close()
            if agent.alive():
                agent.kill()
            if not mqtt_broker.running:
                mqtt_broker.start()
        next_seq, _ = spool_state(cfg)
        collector.wait_for(lambda c: len(c.records) >= next_seq - 1, 30, f"all {next_seq - 1} records")
        collector.close()
    recs = collector.check_complete_chain()
    assert not collector.errors, collector.errors
    assert len(recs) == next_seq - 1 > during
    assert collector.arrival == sorted(collector.arrival), "records did not arrive in seq order"
    # one birth per connection, each saying where the agent stood
    conns = sorted({b.conn for b in collector.births})
    assert len(conns) >= 3 and conns[0] == 1
