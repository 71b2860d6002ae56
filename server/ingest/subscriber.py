"""MQTT side of ingest: a shared, persistent subscription whose messages are acknowledged only
after the records they carry are committed.

- Shared subscription `$share/<group>/jishi/v1/+/+/{rec,birth,death}`: the broker spreads
  messages over every ingest process of the group.
- MQTT v5, clean_start=False and a session expiry: while ingest is down the broker keeps queueing
  for this client id, and hands everything over when it comes back.
- manual_ack=True: paho would otherwise PUBACK a QoS 1 message as soon as the callback returns,
  and a crash before commit would lose it. Here the database worker acks after commit; an
  unacknowledged message is redelivered by the broker (after a reconnect) and deduplicated.
- The network thread only queues messages; all work happens on the database worker thread.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols import topics
from server.config import MqttSettings
from server.ingest.metrics import Metrics
from server.ingest.verify import Incoming

log = logging.getLogger(__name__)

KINDS = (topics.Kind.REC, topics.Kind.BIRTH, topics.Kind.DEATH)


class Subscriber:
    def __init__(self, settings: MqttSettings, out: queue.Queue[Incoming], metrics: Metrics) -> None:
        self.settings = settings
        self.out = out
        self.metrics = metrics
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        """set once the broker has granted this connection's subscriptions: messages now reach us"""
        self.generation = 0
        """connection number: message ids of an earlier connection must not be acked on this one"""
        self._lock = threading.Lock()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5,
            manual_ack=True,
        )  # fmt: skip
        if settings.username:
            c.username_pw_set(settings.username, settings.password)
        if settings.tls_ca:
            c.tls_set(
                ca_certs=str(settings.tls_ca),
                certfile=str(settings.tls_cert) if settings.tls_cert else None,
                keyfile=str(settings.tls_key) if settings.tls_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self.client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s, clean_start=False,
            properties=props,
        )  # fmt: skip
        self.client.loop_start()

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.connected.clear()
            self.subscribed.clear()

    # -- callbacks (network thread) -------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Properties | None) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        with self._lock:
            self.generation += 1
        group = self.settings.share_group
        client.subscribe([(topics.subscription(k, group), SubscribeOptions(qos=1)) for k in KINDS])
        log.info("connected to %s:%d as %s (session present: %s)", self.settings.host, self.settings.port,
                 self.settings.client_id, getattr(flags, "session_present", "?"))
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Properties | None) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if rc.value != 0:
            log.warning("disconnected from broker (%s); reconnecting", rc)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker refused subscriptions: %s", ", ".join(refused))
            return
        log.info("subscribed to %d topic filters", len(reason_codes))
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = time.time()
        kind = message.topic.rsplit("/", 1)[-1]
        self.metrics.messages.labels(kind=kind if kind in ("rec", "birth", "death") else "other").inc()
        self.out.put(Incoming(message.topic, bytes(message.payload), received, message.mid, message.qos,
                              self.generation, bool(message.dup)))

    # -- used by the database worker ----------------------------------------------------------------

    def ack(self, msgs: Iterable[Incoming]) -> None:
        """Acknowledge messages to the broker; those of an earlier connection will come again."""
        gen = self.generation
        for m in msgs:
            if m.qos > 0 and m.generation == gen:
                self.client.ack(m.mid, m.qos)

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)
