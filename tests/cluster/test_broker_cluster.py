"""A three-node RabbitMQ cluster (Debian's 3.10, MQTT plugin) in place of Mosquitto: a node is
killed (SIGKILL) under load and nothing is lost.

Real agent processes (each reading a simulated power meter that follows a known schedule) publish
over MQTT 3.1.1, spread over the three nodes, each with the others as `more_brokers`; ingest
consumes the replicated quorum queue over AMQP (server/ingest/amqp.py) and acks after COMMIT.
The node killed is the one ingest is connected to, where the quorum queue's leader was declared,
and where a third of the agents publish: all three move (agents and ingest to another node, the
queue's leadership to another replica). Then: every record stored once, no gap, nothing refused,
running time equal to the schedule's, agents publishing again within their retry bound.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from server.ingest.service import Ingest
from sim.modbus_meter import ModbusMeter
from sim.rabbitcluster import RabbitCluster
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
from tests.server.helpers import TestAgent, query, register, settings_for

AGENTS = 6
FLEET = 200
FLEET_RECORDS = 10
RECONNECT_BOUND_S = 15.0
"""an agent's retry bound here: connect timeout 3 s + back-off <= 1 s, with a node dead: twice that,
plus the MQTT keepalive the plugin needs to notice nothing (the socket is closed at once)"""


class Fleet:
    """FLEET simulated agents (signed, chained records) publishing over MQTT 3.1.1 through one client
    on a node that stays up, paced so that the stream spans the node's death: load on ingest and
    on the quorum queue while its leader moves."""

    def __init__(self, dsn: str, tag: str, node: Any) -> None:
        self.agents = [TestAgent(f"fl{i}-{tag}", unit=f"uf-{tag}") for i in range(FLEET)]
        t0 = int(time.time() * 1000) - FLEET_RECORDS * 60_000
        for ag in self.agents:
            register(dsn, ag, org=f"of-{tag}")
            ag.state(t0, "running")
            for k in range(1, FLEET_RECORDS):
                ag.heartbeat(t0 + k * 60_000, "running", period_ms=60_000)
        self.items = [(ag.topic(), ag.seal(ag.made[i:i + 5])) for i in range(0, FLEET_RECORDS, 5)
                      for ag in self.agents]
        self.sent = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-{tag}", protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.client.connect(node.host, node.port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for topic, payload in self.items:
            info = self.client.publish(topic, payload, qos=1)
            info.wait_for_publish(60)
            if not info.is_published():
                return  # never confirmed: the test sees the stream unfinished
            self.sent += 1

    def close(self) -> None:
        self.thread.join(120)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def rabbit(services_dir: Path) -> Iterator[RabbitCluster]:
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        pytest.skip("rabbitmq-server is not installed (deploy/install.sh installs it)")
    root = Path(tempfile.mkdtemp(prefix="rmq-", dir=services_dir))
    root.chmod(0o755)
    cluster = RabbitCluster(root, 3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_node_killed_under_load_nothing_lost(rabbit: RabbitCluster, fresh_db: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    nodes = rabbit.nodes
    s = settings_for(fresh_db, None, client_id=f"ing-{tag}", retry_initial_s=0.1, retry_max_s=0.5)
    s.amqp.addresses = [f"{n.host}:{n.amqp_port}" for n in nodes]
    s.amqp.queue = f"jishi-ingest-{tag}"
    ing = Ingest(s).start()
    meters = [ModbusMeter(watts=40.0).__enter__() for _ in range(AGENTS)]
    agents: list[tuple[str, Path, AgentProc, Schedule]] = []
    fleet: Fleet | None = None
    try:
        assert ing.wait_connected(30)
        for i, meter in enumerate(meters):
            aid = f"rc{i}-{tag}"
            home, others = nodes[i % 3], [n for k, n in enumerate(nodes) if k != i % 3]
            d = tmp_path / aid
            d.mkdir()
            more = ", ".join(f'"{n.host}:{n.port}"' for n in others)
            cfg = write_config(d, agent_id=aid, broker=home, detectors=meter_toml(meter), running="power",
                               period=PERIOD, heartbeat=2 * HEARTBEAT, mqtt_extra=f"more_brokers = [{more}]")
            enrol(fresh_db, d, aid)
            agents.append((aid, cfg, AgentProc(cfg), Schedule(meter, run_s=1.5, idle_s=1.0)))
        for _, _, proc, sched in agents:
            sched.start()
            proc.start()
        for aid, _, _, _ in agents:
            wait_until(lambda a=aid: progress(fresh_db, a)[0] >= 10, 60, f"{aid}'s records flowing")
        fleet = Fleet(fresh_db, tag, nodes[1])
        fleet.thread.start()
        wait_until(lambda: fleet.sent >= len(fleet.items) // 4, 60, "the fleet's stream under way")
        before = {aid: spool_meta(cfg)["next_seq"] for aid, cfg, _, _ in agents}
        nodes[0].kill()
        assert fleet.sent < len(fleet.items) * 3 // 4, "the fleet's stream should span the kill"
        killed = time.monotonic()
        resumed: dict[str, float] = {}

        def all_resumed() -> bool:
            for aid, _, _, _ in agents:
                if aid not in resumed and progress(fresh_db, aid)[0] > before[aid] + 5:
                    resumed[aid] = time.monotonic() - killed
            return len(resumed) == len(agents)

        wait_until(all_resumed, 60, "every agent's records stored again after the node died")
        time.sleep(3.0)
        for _, _, proc, sched in agents:
            sched.stop()
            assert proc.stop() == 0
        last = {aid: spool_meta(cfg)["next_seq"] - 1 for aid, cfg, _, _ in agents}
        for aid, _, _, _ in agents:
            wait_until(lambda a=aid: progress(fresh_db, a) == (last[a], last[a]), 60, f"all of {aid} derived")
        fleet.close()
        assert fleet.sent == len(fleet.items)
        fleet_ids = [a.agent for a in fleet.agents]
        wait_until(lambda: query(fresh_db, "SELECT count(*) FROM agent_progress WHERE agent_id = ANY(%s)"
                                 " AND watermark = %s AND derived_seq = %s",
                                 (fleet_ids, FLEET_RECORDS, FLEET_RECORDS))[0][0] == FLEET, 60,
                   "every fleet record stored and derived")
    finally:
        for _, _, proc, sched in agents:
            sched.stop()
            if proc.alive():
                proc.kill()
        if fleet is not None:
            fleet.client.loop_stop()
        ing.stop()
        for meter in meters:
            meter.__exit__(None, None, None)
    assert max(resumed.values()) <= RECONNECT_BOUND_S, resumed
    assert query(fresh_db, "SELECT count(*), count(DISTINCT (r.agent_no, r.seq)) FROM records r"
                 " JOIN agent_progress p USING (agent_no) WHERE p.agent_id = ANY(%s)",
                 (fleet_ids,)) == [(FLEET * FLEET_RECORDS, FLEET * FLEET_RECORDS)], "fleet: lost or twice"
    for aid, _, proc, sched in agents:
        got = outcome(fresh_db, aid)
        assert got["records"] == got["distinct"] == last[aid], f"{aid}: records lost or stored twice"
        assert got["gaps"] == [] and got["quarantine"] == [], (aid, got["gaps"], got["quarantine"])
        t_first, t_last = got["coverage"][0][2], got["coverage"][-1][3]
        assert not_watching(got["coverage"], t_first, t_last) == [], aid
        truth = sched.running_s(t_first, t_last)
        allowance = EDGE_ALLOWANCE_S * sched.switches(t_first, t_last) + 0.5
        assert abs(got["running_s"] - truth) <= allowance, (aid, got["running_s"], truth)
        assert "Traceback" not in proc.log.read_text(errors="replace")
    print(f"RabbitMQ node killed: {AGENTS} agents resumed in {sorted(round(v, 1) for v in resumed.values())} s;"
          f" {sum(last.values())} agent records and {FLEET * FLEET_RECORDS} of {FLEET} simulated agents"
          f" stored once")
