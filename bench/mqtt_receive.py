"""MQTT receive alone: the CPU ingest's network thread spends per record taking a backlog of big
envelopes from Mosquitto (paho's packet reading, the Incoming hand-off), and the acks after.

    .venv/bin/python bench/mqtt_receive.py [--envelopes 400] [--rounds 3]

The real `Subscriber` (server/ingest/subscriber.py) on a private Mosquitto; a publisher queues
the envelopes (500 records each, as bench/ingest_drain.py) for its persistent session while it is
away, then it connects and takes them all. Printed: the network thread's CPU per record (its
time.thread_time() read in the message callback) and the acking thread's.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import paho.mqtt.client as mqtt
from ingest_common import SimAgent, backlog_envelopes, machine
from paho.mqtt.enums import CallbackAPIVersion

from server.config import Settings
from server.ingest.metrics import Metrics
from server.ingest.subscriber import Subscriber
from server.ingest.verify import Incoming
from sim.devstack import MosquittoServer


def one_round(broker: MosquittoServer, envs: list[tuple[str, bytes]], records: int, k: int) -> tuple[float, float]:
    mq = Settings().mqtt.model_copy(update={"host": broker.host, "port": broker.port,
                                            "client_id": f"recv-{k}", "share_group": f"recv{k}"})
    inbox: queue.Queue[Incoming] = queue.Queue()
    sub = Subscriber(mq, inbox, Metrics())
    sub.start()  # create the session, then go away: the backlog queues for it
    assert sub.subscribed.wait(30)
    sub.stop()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"recv-pub-{k}", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(200)
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for i in [pub.publish(t, p, qos=1) for t, p in envs]:
        i.wait_for_publish(300)
    pub.loop_stop()
    pub.disconnect()
    net_cpu: list[float] = []
    orig = sub._on_message

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        orig(client, userdata, message)
        net_cpu.append(time.thread_time())

    sub.client.on_message = on_message
    sub.start()
    got: list[Incoming] = []
    ack_cpu = 0.0
    while len(got) < len(envs):
        m = inbox.get(timeout=60)
        got.append(m)
        c = time.thread_time()
        sub.ack([m])
        ack_cpu += time.thread_time() - c
    sub.stop()
    # from the first message's callback to the last: the network thread's CPU for n-1 messages
    per_msg = (net_cpu[-1] - net_cpu[0]) / (len(net_cpu) - 1)
    return per_msg * len(envs) / records * 1e6, ack_cpu / records * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envelopes", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    fleet = [SimAgent(f"bench-{i}", "bench-unit", f"bench-i{i}") for i in range(20)]
    envs = backlog_envelopes(fleet, 100)[:args.envelopes]
    records = sum(len(orjson.loads(p)["records"]) for _, p in envs)
    print(f"{len(envs)} envelopes, {records:,} records, {sum(len(p) for _, p in envs) / 2**20:.0f} MiB")
    with tempfile.TemporaryDirectory(prefix="jishi-recv-") as d:
        os.chmod(d, 0o755)
        broker = MosquittoServer(Path(d) / "mqtt", autosave_interval=300)
        broker.start()
        try:
            for k in range(args.rounds):
                net, ack = one_round(broker, envs, records, k)
                print(f"round {k}: network thread {net:.2f} us/record, acks {ack:.2f} us/record; "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
