"""A three-node RabbitMQ cluster (Debian's 3.10, MQTT plugin) in place of Mosquitto: under load,
one node is partitioned away and healed, then another is killed (SIGKILL); nothing is lost.

Real agent processes (each reading a simulated power meter that follows a known schedule) publish
over MQTT 3.1.1, spread over the three nodes, each with the others as `more_brokers`; 200 simulated
agents publish through the third node; ingest consumes the replicated quorum queue over AMQP and
acks after COMMIT.

- **Partition**: node 1 (ingest's node, where the quorum queue's leader was declared, home of a third
  of the agents) is cut away from the other two (sim/rabbitcluster.py: at the Erlang distribution;
  it stays reachable by its clients) for longer than 1.5x the agents' keepalive, then healed. With
  ``pause_minority`` it stops serving at once (agents and ingest move to the majority, the queue's
  leadership too), serves nobody while cut, and after the heal is a member again whose publishes
  reach the store.
- **Node kill**: then node 2, where ingest went, is killed.

After both: every record stored once, no gap, nothing refused, running time equal to the
schedule's, agents publishing again within their retry bound after each fault. One scenario for
both faults keeps the cluster tests short (forming the cluster and loading it are most of the time).
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocols.signing import key_id, public_to_b64
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
KEEPALIVE_S = 5
"""the agents' MQTT keepalive here (minimum 5 s): the broker ends a silent session after 1.5x it"""
PARTITION_S = 8.0
"""how long the node stays cut away: longer than 1.5x the keepalive (a session of the cut node's
agents would have expired by then) and than the cluster's failure detection"""


class Fleet:
    """FLEET simulated agents (signed, chained records) publishing over MQTT 3.1.1 through one client
    on a node that stays up, gated so that the stream spans each fault: load on ingest and on the
    quorum queue while its leader moves."""

    def __init__(self, dsn: str, tag: str, node: Any, gates: int, pace_s: float = 0.02) -> None:
        self.pace_s = pace_s
        self.agents = [TestAgent(f"fl{i}-{tag}", unit=f"uf-{tag}") for i in range(FLEET)]
        t0 = int(time.time() * 1000) - FLEET_RECORDS * 60_000
        _register_all(dsn, self.agents, f"of-{tag}")
        for ag in self.agents:
            ag.state(t0, "running")
            for k in range(1, FLEET_RECORDS):
                ag.heartbeat(t0 + k * 60_000, "running", period_ms=60_000)
        self.items = [(ag.topic(), ag.seal(ag.made[i:i + 5])) for i in range(0, FLEET_RECORDS, 5)
                      for ag in self.agents]
        self.sent = 0
        step = len(self.items) // (gates + 1)
        self.gates = {step * (k + 1): threading.Event() for k in range(gates)}
        """the stream waits at each until the test opens it, just before a fault: every fault falls
        inside the stream, whatever the machine's speed"""
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-{tag}", protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.client.connect(node.host, node.port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for k, (topic, payload) in enumerate(self.items):
            if k in self.gates:
                self.gates[k].wait(300)
            info = self.client.publish(topic, payload, qos=1)
            info.wait_for_publish(60)
            if not info.is_published():
                return  # never confirmed: the test sees the stream unfinished
            self.sent += 1
            time.sleep(self.pace_s)

    def close(self) -> None:
        self.thread.join(120)
        self.client.loop_stop()
        self.client.disconnect()


def _register_all(dsn: str, agents: list[TestAgent], org: str) -> None:
    """tests.server.helpers.register for many agents in one transaction (200 connections are slow)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO organisations (id, name, kind) VALUES (%s, 'Fleet University', 'university')",
                     (org,))
        conn.execute("INSERT INTO units (id, org_id, name) VALUES (%s, %s, 'fleet')", (agents[0].unit, org))
        for ag in agents:
            conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i')", (ag.instrument, ag.unit))
            conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (ag.agent, ag.instrument))
            conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                         (key_id(ag.key), ag.agent, public_to_b64(ag.key)))


def _listening(node: Any) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((node.host, node.port), timeout=0.5):
        return True
    return False


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


Fault = Callable[[RabbitCluster], Callable[[], None] | None]
"""breaks the cluster (returning once broken); returns what to do once every agent has resumed"""


def _under_load(rabbit: RabbitCluster, dsn: str, tmp_path: Path, faults: list[tuple[str, Fault]]) -> None:
    """Agents and a fleet under load, ingest on the quorum queue; the faults one after the other,
    each once the agents have resumed after the one before; then nothing lost or twice."""
    tag = uuid.uuid4().hex[:6]
    nodes = rabbit.nodes
    t0 = time.monotonic()

    def phase(name: str) -> None:
        print(f"  {time.monotonic() - t0:5.1f} s  {name}", flush=True)

    s = settings_for(dsn, None, client_id=f"ing-{tag}", retry_initial_s=0.1, retry_max_s=0.5)
    s.amqp.addresses = [f"{n.host}:{n.amqp_port}" for n in nodes]
    s.amqp.queue = f"jishi-ingest-{tag}"
    fleet = Fleet(dsn, tag, nodes[2], gates=len(faults))
    ing = Ingest(s).start()
    meters = [ModbusMeter(watts=40.0).__enter__() for _ in range(AGENTS)]
    agents: list[tuple[str, Path, AgentProc, Schedule]] = []
    resumed: dict[str, dict[str, float]] = {}
    try:
        assert ing.wait_connected(30)
        for i, meter in enumerate(meters):
            aid = f"rc{i}-{tag}"
            home, others = nodes[i % 3], [n for k, n in enumerate(nodes) if k != i % 3]
            d = tmp_path / aid
            d.mkdir()
            more = ", ".join(f'"{n.host}:{n.port}"' for n in others)
            cfg = write_config(d, agent_id=aid, broker=home, detectors=meter_toml(meter), running="power",
                               period=PERIOD, heartbeat=2 * HEARTBEAT,
                               mqtt_extra=f"more_brokers = [{more}]\nkeepalive_s = {KEEPALIVE_S}")
            enrol(dsn, d, aid)
            agents.append((aid, cfg, AgentProc(cfg), Schedule(meter, run_s=1.5, idle_s=1.0)))
        for _, _, proc, sched in agents:
            sched.start()
            proc.start()
        fleet.thread.start()
        for aid, _, _, _ in agents:
            wait_until(lambda a=aid: progress(dsn, a)[0] >= 10, 60, f"{aid}'s records flowing")
        phase("agents' records flowing")
        for gate, (what, fault) in zip(fleet.gates.values(), faults, strict=True):
            before = {aid: spool_meta(cfg)["next_seq"] for aid, cfg, _, _ in agents}
            gate.set()
            recover = fault(rabbit)
            broken = time.monotonic()
            assert fleet.sent < len(fleet.items), "the fleet's stream should span the fault"
            phase(f"{what}; fleet {fleet.sent} of {len(fleet.items)} sent")
            back: dict[str, float] = resumed.setdefault(what, {})

            def all_resumed(back: dict[str, float] = back, before: dict[str, int] = before,
                            broken: float = broken) -> bool:
                for aid, _, _, _ in agents:
                    if aid not in back and progress(dsn, aid)[0] > before[aid] + 5:
                        back[aid] = time.monotonic() - broken
                return len(back) == len(agents)

            wait_until(all_resumed, 60, f"every agent's records stored again after: {what}")
            phase(f"every agent resumed after: {what}")
            if recover is not None:
                recover()
                phase("recovered")
        after = {aid: progress(dsn, aid)[0] for aid, _, _, _ in agents}
        for aid, _, _, _ in agents:  # records made after the last recovery reach the store too
            wait_until(lambda a=aid: progress(dsn, a)[0] >= after[a] + 3, 60, f"{aid} publishing after the faults")
        for _, _, proc, sched in agents:
            sched.stop()
            assert proc.stop() == 0
        last = {aid: spool_meta(cfg)["next_seq"] - 1 for aid, cfg, _, _ in agents}
        for aid, _, _, _ in agents:
            wait_until(lambda a=aid: progress(dsn, a) == (last[a], last[a]), 60, f"all of {aid} derived")
        phase("agents stopped, all derived")
        fleet.close()
        assert fleet.sent == len(fleet.items)
        fleet_ids = [a.agent for a in fleet.agents]
        wait_until(lambda: query(dsn, "SELECT count(*) FROM agent_progress WHERE agent_id = ANY(%s)"
                                 " AND watermark = %s AND derived_seq = %s",
                                 (fleet_ids, FLEET_RECORDS, FLEET_RECORDS))[0][0] == FLEET, 60,
                   "every fleet record stored and derived")
        phase("fleet stored")
    finally:
        for gate in fleet.gates.values():
            gate.set()
        for _, _, proc, sched in agents:
            sched.stop()
            if proc.alive():
                proc.kill()
        fleet.client.loop_stop()
        ing.stop()
        for meter in meters:
            meter.__exit__(None, None, None)
    for what, back in resumed.items():
        assert max(back.values()) <= RECONNECT_BOUND_S, (what, back)
    assert query(dsn, "SELECT count(*), count(DISTINCT (r.agent_no, r.seq)) FROM records r"
                 " JOIN agent_progress p USING (agent_no) WHERE p.agent_id = ANY(%s)",
                 (fleet_ids,)) == [(FLEET * FLEET_RECORDS, FLEET * FLEET_RECORDS)], "fleet: lost or twice"
    for aid, _, proc, sched in agents:
        got = outcome(dsn, aid)
        assert got["records"] == got["distinct"] == last[aid], f"{aid}: records lost or stored twice"
        assert got["gaps"] == [] and got["quarantine"] == [], (aid, got["gaps"], got["quarantine"])
        t_first, t_last = got["coverage"][0][2], got["coverage"][-1][3]
        assert not_watching(got["coverage"], t_first, t_last) == [], aid
        truth = sched.running_s(t_first, t_last)
        allowance = EDGE_ALLOWANCE_S * sched.switches(t_first, t_last) + 0.5
        assert abs(got["running_s"] - truth) <= allowance, (aid, got["running_s"], truth)
        assert "Traceback" not in proc.log.read_text(errors="replace")
    for what, back in resumed.items():
        print(f"RabbitMQ {what}: {AGENTS} agents resumed in {sorted(round(v, 1) for v in back.values())} s")
    print(f"{sum(last.values())} agent records and {FLEET * FLEET_RECORDS} of {FLEET} simulated agents stored once")


def partition_fault(dsn: str, timings: dict[str, float]) -> Fault:
    """Cut nodes[0] away; once every agent has resumed, hold the cut PARTITION_S in all, heal, and
    check the node is a member again whose publishes reach the store."""

    def cut(cluster: RabbitCluster) -> Callable[[], None]:
        node, majority = cluster.nodes[0], cluster.nodes[1:]
        cluster.partition(node)
        cut_at = time.monotonic()
        # pause_minority: the cut node stops serving its clients; the majority goes on without it
        wait_until(lambda: not _listening(node), 30, "the cut node to stop serving (pause_minority)")
        timings["paused"] = time.monotonic() - cut_at

        def heal() -> None:
            assert not _listening(node), "the cut node served clients during the partition"
            left = PARTITION_S - (time.monotonic() - cut_at)
            if left > 0:
                time.sleep(left)  # the partition's length is the scenario itself, not a wait for a condition
            timings["cut"] = time.monotonic() - cut_at
            cluster.heal(node)
            healed_at = time.monotonic()
            whole = {n.node for n in cluster.nodes}
            # each check of the membership is a rabbitmqctl call (an Erlang VM's start): only once
            # the node serves again, which pause_minority lets it do only back in the majority
            wait_until(lambda: _listening(node), 90, "the cut node serving again")
            wait_until(lambda: cluster.running_nodes(majority[0]) == whole, 60, "the cut node back in the cluster")
            timings["rejoined"] = time.monotonic() - healed_at
            # a working member again: a publish through it reaches the store
            ag = TestAgent(f"ph-{uuid.uuid4().hex[:6]}", unit="ph-unit")
            register(dsn, ag, org="ph-org")
            ag.state(int(time.time() * 1000), "running")
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ag.agent, protocol=mqtt.MQTTv311)
            client.connect(node.host, node.port)
            client.loop_start()
            try:
                info = client.publish(ag.topic(), ag.seal(ag.made), qos=1)
                info.wait_for_publish(30)
                assert info.is_published()
                wait_until(lambda: progress(dsn, ag.agent) == (1, 1), 30, "a record sent through the healed node")
            finally:
                client.loop_stop()
                client.disconnect()

        return heal

    return cut


def test_partition_then_node_kill_under_load_nothing_lost(rabbit: RabbitCluster, fresh_db: str,
                                                          tmp_path: Path) -> None:
    timings: dict[str, float] = {}

    def kill(cluster: RabbitCluster) -> None:
        cluster.nodes[1].kill()

    _under_load(rabbit, fresh_db, tmp_path, [("node 1 partitioned away", partition_fault(fresh_db, timings)),
                                             ("node 2 killed", kill)])
    print(f"partition: node 1 paused {timings['paused']:.1f} s after the cut, cut for {timings['cut']:.1f} s,"
          f" back in the cluster {timings['rejoined']:.1f} s after the heal")
