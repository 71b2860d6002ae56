"""The longer broker-cluster run: every node of a three-node RabbitMQ cluster killed in turn (and
started again), a node partitioned away for longer than the agents' session lasts without traffic
(1.5x their default 60 s keepalive) and healed, then the whole cluster restarted, under load;
nothing may be lost or stored twice.

    .venv/bin/python bench/broker_cluster.py [--agents 6] [--fleet 200] [--settle 8]
        [--faults kill,partition,restart] [--partition-s 100]

The partition is made at the Erlang distribution (sim/rabbitcluster.py ``partition``/``heal``): the
node stays reachable by its clients, is cut from its peers, and ``pause_minority`` stops it serving.

Real agent processes (simulated power meters following a known schedule; each agent has the other
nodes as `more_brokers`) and a fleet of simulated agents publishing all along (at least once: a
publish that fails is sent again through another node), ingest on the quorum queue over AMQP.
Prints, per fault, how long until every agent's records were stored again, and at the end records
lost / stored twice and running hours against the schedule. tests/cluster/test_broker_cluster.py
is the short version (one node killed).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from server.db.migrate import apply
from server.ingest.service import Ingest
from sim.devstack import PostgresServer
from sim.modbus_meter import ModbusMeter
from sim.rabbitcluster import RabbitCluster, RabbitNode
from tests.agent.helpers import AgentProc, write_config
from tests.faults.common import (
    EDGE_ALLOWANCE_S,
    HEARTBEAT,
    PERIOD,
    Schedule,
    enrol,
    meter_toml,
    outcome,
    progress,
    spool_meta,
    wait_until,
)
from tests.server.helpers import TestAgent, query, register, settings_for


class Fleet:
    """Simulated agents publishing envelopes at a steady pace through any live node, at least once."""

    def __init__(self, dsn: str, cluster: RabbitCluster, n: int, records: int) -> None:
        self.cluster = cluster
        self.agents = [TestAgent(f"bf{i}-{int(time.time())}", unit="bf-unit") for i in range(n)]
        t0 = int(time.time() * 1000) - records * 60_000
        for ag in self.agents:
            register(dsn, ag, org="bf-org")
            ag.state(t0, "running")
            for k in range(1, records):
                ag.heartbeat(t0 + k * 60_000, "running", period_ms=60_000)
        self.items = [(ag.topic(), ag.seal(ag.made[i:i + 5])) for i in range(0, records, 5) for ag in self.agents]
        self.sent = 0
        self.retries = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _client(self, node: RabbitNode) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-fleet-{time.monotonic_ns()}",
                        protocol=mqtt.MQTTv311)
        c.connect(node.host, node.port)
        c.loop_start()
        return c

    def _run(self) -> None:
        nodes = itertools.cycle(self.cluster.nodes)
        client: mqtt.Client | None = None
        for topic, payload in self.items:
            while True:
                try:
                    if client is None:
                        client = self._client(next(nodes))
                    info = client.publish(topic, payload, qos=1)
                    info.wait_for_publish(10)
                    if not info.is_published():  # no PUBACK: the node may have died with it
                        raise RuntimeError("not confirmed")
                    break
                except (OSError, RuntimeError, ValueError):
                    self.retries += 1
                    if client is not None:
                        client.loop_stop()
                    client = None
                    time.sleep(0.2)
            self.sent += 1
            time.sleep(0.02)
        if client is not None:
            client.loop_stop()
            client.disconnect()


def _listening(node: RabbitNode) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((node.host, node.port), timeout=0.5):
        return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=6)
    ap.add_argument("--fleet", type=int, default=200)
    ap.add_argument("--fleet-records", type=int, default=100, help="records per simulated agent (x5 per envelope)")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds of load between faults")
    ap.add_argument("--faults", default="kill,partition,restart", help="which faults, in this order")
    ap.add_argument("--partition-s", type=float, default=100.0,
                    help="how long node 1 stays cut away (default: longer than 1.5x the 60 s keepalive)")
    args = ap.parse_args()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average {os.getloadavg()[0]:.1f}")
    root = Path(tempfile.mkdtemp(prefix="jishi-bc-"))
    root.chmod(0o755)
    pg = PostgresServer(root / "pg", fast=True).start()
    cluster = RabbitCluster(root / "rmq", 3)
    meters = [ModbusMeter(watts=40.0).__enter__() for _ in range(args.agents)]
    agents: list[tuple[str, Path, AgentProc, Schedule]] = []
    ing: Ingest | None = None
    try:
        dsn = pg.create_database("jishi")
        apply(dsn)
        t = time.monotonic()
        cluster.start()
        print(f"cluster of 3 formed in {time.monotonic() - t:.0f} s")
        nodes = cluster.nodes
        # the deployment's gap settings: a publish re-sent through another node may arrive well
        # after later ones (the simulated fleet answers no resend request)
        s = settings_for(dsn, None, client_id="bench-ingest", retry_initial_s=0.1, retry_max_s=0.5,
                         resend_after_s=30.0, gap_give_up_after_s=600.0)
        s.amqp.addresses = [f"{n.host}:{n.amqp_port}" for n in nodes]
        ing = Ingest(s).start()
        assert ing.wait_connected(60)
        for i, meter in enumerate(meters):
            aid = f"bc{i}-{int(time.time())}"
            d = root / aid
            d.mkdir()
            home, others = nodes[i % 3], [n for k, n in enumerate(nodes) if k != i % 3]
            more = ", ".join(f'"{n.host}:{n.port}"' for n in others)
            cfg = write_config(d, agent_id=aid, broker=home, detectors=meter_toml(meter), running="power",
                               period=PERIOD, heartbeat=2 * HEARTBEAT, mqtt_extra=f"more_brokers = [{more}]")
            enrol(dsn, d, aid)
            agents.append((aid, cfg, AgentProc(cfg), Schedule(meter, run_s=1.5, idle_s=1.0)))
        for _, _, proc, sched in agents:
            sched.start()
            proc.start()
        for aid, _, _, _ in agents:
            wait_until(lambda a=aid: progress(dsn, a)[0] >= 10, 60, f"{aid} flowing")
        per_fleet_agent = args.fleet_records // 5 * 5
        fleet = Fleet(dsn, cluster, args.fleet, per_fleet_agent)
        fleet.thread.start()

        def resumed_after(fault: str, act: object) -> None:
            before = {aid: spool_meta(cfg)["next_seq"] for aid, cfg, _, _ in agents}
            t0 = time.monotonic()
            act()  # type: ignore[operator]
            wait_until(lambda: all(progress(dsn, a)[0] > before[a] + 3 for a in before), 180,
                       f"every agent stored again after: {fault}")
            print(f"{fault}: every agent's records stored again {time.monotonic() - t0:.1f} s after it")

        faults = args.faults.split(",")
        for k, node in enumerate(nodes if "kill" in faults else []):
            time.sleep(args.settle)
            resumed_after(f"node {k + 1} killed (SIGKILL)", node.kill)
            time.sleep(args.settle)
            t0 = time.monotonic()
            node.start()
            node.wait_started()
            wait_until(lambda k=k: cluster.running_nodes(nodes[(k + 1) % 3]) == {n.node for n in nodes}, 180,
                       "the node back in the cluster")
            print(f"node {k + 1} started again, back in the cluster after {time.monotonic() - t0:.0f} s")
        time.sleep(args.settle)
        if "partition" in faults:
            node = nodes[0]
            took: list[float] = []

            def do_cut() -> None:
                t = time.monotonic()
                cluster.partition(node)
                took.append(time.monotonic() - t)

            resumed_after("node 1 partitioned away (the time includes the Erlang call that cuts)", do_cut)
            print(f"  the cut itself (one Erlang call through erl_call) took {took[0]:.1f} s on this machine")
            cut = time.monotonic()
            served = False
            while time.monotonic() - cut < args.partition_s:  # the partition's length is the scenario
                served = served or _listening(node)
                time.sleep(1.0)
            cluster.heal(node)
            t0 = time.monotonic()
            wait_until(lambda: _listening(node) and cluster.running_nodes(nodes[1]) == {n.node for n in nodes},
                       300, "node 1 back in the cluster", every=1.0)
            print(f"node 1 cut away for {t0 - cut:.0f} s ({'SERVED clients' if served else 'served no client'}"
                  f" while cut: pause_minority), back in the cluster {time.monotonic() - t0:.1f} s after the heal;"
                  f" partitions recorded by node 2: {cluster.partitions(nodes[1])}")
            time.sleep(args.settle)

        def restart_all() -> None:
            cluster.stop()
            cluster.start()

        if "restart" in faults:
            resumed_after("whole cluster restarted (stopped, started)", restart_all)
            time.sleep(args.settle)
        fleet.thread.join(600)
        for _, _, proc, sched in agents:
            sched.stop()
            assert proc.stop() == 0
        last = {aid: spool_meta(cfg)["next_seq"] - 1 for aid, cfg, _, _ in agents}
        for aid in last:
            wait_until(lambda a=aid: progress(dsn, a) == (last[a], last[a]), 120, f"all of {aid} derived")
        ids = [a.agent for a in fleet.agents]
        want = args.fleet * per_fleet_agent
        wait_until(lambda: query(dsn, "SELECT coalesce(sum(derived_seq), 0) FROM agent_progress"
                                 " WHERE agent_id = ANY(%s)", (ids,))[0][0] == want, 120, "the fleet's records")
        n, distinct = query(dsn, "SELECT count(*), count(DISTINCT (r.agent_no, r.seq)) FROM records r"
                            " JOIN agent_progress p USING (agent_no) WHERE p.agent_id = ANY(%s)", (ids,))[0]
        print(f"fleet: {args.fleet} simulated agents, {want} records made, {n} stored, {want - distinct} lost,"
              f" {n - distinct} twice; {fleet.retries} publishes re-sent through another node")
        for aid, _, _, sched in agents:
            got = outcome(dsn, aid)
            t_first, t_last = got["coverage"][0][2], got["coverage"][-1][3]
            truth = sched.running_s(t_first, t_last)
            allowance = EDGE_ALLOWANCE_S * sched.switches(t_first, t_last) + 0.5
            print(f"{aid}: made {last[aid]}, stored {got['records']}, lost {last[aid] - got['distinct']},"
                  f" twice {got['records'] - got['distinct']}, gaps {len(got['gaps'])}, refused"
                  f" {len(got['quarantine'])}; running {got['running_s']:.1f} s vs {truth:.1f} s true"
                  f" ({'within' if abs(got['running_s'] - truth) <= allowance else 'OUTSIDE'} the allowance)")
    finally:
        for _, _, proc, sched in agents:
            sched.stop()
            if proc.alive():
                proc.kill()
        if ing is not None:
            ing.stop()
        for m in meters:
            m.__exit__(None, None, None)
        cluster.close()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
