"""AMQP side of ingest, for a RabbitMQ cluster: a replicated quorum queue in place of MQTT's
shared subscription (RabbitMQ 3.10's MQTT plugin speaks MQTT 3.1.1: no shared subscriptions, no
session expiry).

Agents publish over MQTT as ever; the MQTT plugin routes every publish through the ``amq.topic``
exchange (``jishi/v1/u/i/rec`` becomes routing key ``jishi.v1.u.i.rec``). Ingest declares one
durable quorum queue bound to the rec/birth/death keys: RabbitMQ confirms an agent's QoS 1 publish
(PUBACK) only once a majority of the queue's replicas has it, every ingest process consumes the
same queue (competing consumers), and a message is acked (basic.ack) only after its COMMIT, as with
MQTT. A message unacked when the connection or its node dies is delivered again (``redelivered``),
and deduplicated by the database as any duplicate.

Acks and commands to agents go back through ``amq.topic`` (to their MQTT subscriptions). They are
not retained (RabbitMQ keeps retained messages per node anyway): an agent that reconnects, to any
node, learns its watermark from the ack ingest sends in answer to its birth.

Same interface as subscriber.Subscriber: start, stop, ack, publish, connected, subscribed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pika
import pika.exceptions

from protocols import topics
from server.config import AmqpSettings
from server.ingest.metrics import Metrics
from server.ingest.verify import Incoming

log = logging.getLogger(__name__)

KINDS = (topics.Kind.REC, topics.Kind.BIRTH, topics.Kind.DEATH)
EXCHANGE = "amq.topic"


def routing_key(topic: str) -> str:
    return topic.replace("/", ".")


def topic_of(key: str) -> str:
    return key.replace(".", "/")


class AmqpSubscriber:
    def __init__(self, settings: AmqpSettings, out: queue.Queue[Incoming], metrics: Metrics) -> None:
        self.settings = settings
        self.out = out
        self.metrics = metrics
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.generation = 0
        """connection number: delivery tags of an earlier connection must not be acked on this one"""
        self._stop = threading.Event()
        self._conn: Any = None
        self._channel: Any = None
        self._thread = threading.Thread(target=self._run, name="ingest-amqp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self.connected.clear()
        self.subscribed.clear()

    # -- the connection thread -------------------------------------------------------------------

    def _params(self, address: str) -> pika.ConnectionParameters:
        host, _, port = address.rpartition(":")
        creds = pika.PlainCredentials(self.settings.username, self.settings.password)
        return pika.ConnectionParameters(host=host, port=int(port), credentials=creds, heartbeat=10,
                                         blocked_connection_timeout=30, connection_attempts=1,
                                         socket_timeout=5)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            address = self.settings.addresses[attempt % len(self.settings.addresses)]
            attempt += 1
            try:
                self._session(address)
                attempt = 0
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("AMQP broker %s: %s; trying the next node", address, type(exc).__name__ + (
                    f" ({exc})" if str(exc) else ""))
            finally:
                self.connected.clear()
                self.subscribed.clear()
                conn, self._conn, self._channel = self._conn, None, None
                if conn is not None and conn.is_open:
                    try:
                        conn.close()
                    except Exception:  # pragma: no cover - closing a broken connection
                        pass
            if not self._stop.is_set():
                self._stop.wait(min(5.0, 0.2 * attempt))

    def _session(self, address: str) -> None:
        conn = pika.BlockingConnection(self._params(address))
        self._conn = conn
        ch = conn.channel()
        ch.queue_declare(self.settings.queue, durable=True, arguments={"x-queue-type": "quorum"})
        for kind in KINDS:
            ch.queue_bind(self.settings.queue, EXCHANGE, routing_key=f"jishi.v1.*.*.{kind.value}")
        ch.basic_qos(prefetch_count=self.settings.prefetch)
        self.generation += 1
        gen = self.generation
        self._channel = ch
        ch.basic_consume(self.settings.queue, lambda c, m, p, b: self._on_message(m, b, gen), auto_ack=False)
        log.info("connected to AMQP %s, consuming quorum queue %s", address, self.settings.queue)
        self.connected.set()
        self.subscribed.set()
        log.info("subscribed to %d topic filters", len(KINDS))
        while not self._stop.is_set():
            conn.process_data_events(time_limit=0.2)
        conn.close()

    def _on_message(self, method: Any, body: bytes, gen: int) -> None:
        received = time.time()
        topic = topic_of(method.routing_key)
        kind = topic.rsplit("/", 1)[-1]
        self.metrics.messages.labels(kind=kind if kind in ("rec", "birth", "death") else "other").inc()
        self.out.put(Incoming(topic, bytes(body), received, int(method.delivery_tag), 1, gen,
                              bool(method.redelivered)))

    def _call(self, fn: Callable[[Any], None]) -> None:
        """Run fn(channel) on the connection thread (pika's connection is not thread-safe)."""
        conn, ch = self._conn, self._channel
        if conn is None or ch is None:
            return
        try:
            conn.add_callback_threadsafe(lambda: fn(ch) if ch.is_open else None)
        except Exception as exc:  # the connection is going away: the broker redelivers what we did not ack
            log.debug("AMQP call dropped: %s", exc)

    # -- used by the database worker ----------------------------------------------------------------

    def ack(self, msgs: Iterable[Incoming]) -> None:
        """Acknowledge (after COMMIT); deliveries of an earlier connection come again."""
        gen = self.generation
        tags = [m.mid for m in msgs if m.generation == gen]
        if tags:
            def acks(ch: Any) -> None:
                for tag in tags:
                    ch.basic_ack(tag)

            self._call(acks)

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """To an agent's MQTT subscription, through amq.topic (never retained, see the module doc)."""
        key = routing_key(topic)
        props = pika.BasicProperties(delivery_mode=1)
        self._call(lambda ch: ch.basic_publish(EXCHANGE, key, payload, props))
