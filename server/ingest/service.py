"""One ingest process: subscriber (network thread) -> inbox -> database worker, plus /metrics."""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

from server.config import Settings
from server.ingest import live
from server.ingest.metrics import Metrics
from server.ingest.subscriber import Subscriber
from server.ingest.verify import Incoming
from server.ingest.worker import Packer, Worker

GC_THRESHOLDS = (500_000, 20, 100)
"""The cyclic collector's thresholds for `jishi-server ingest`. Generation 0 counts tracked objects
allocated minus freed, and a batch's parsed records (a few hundred thousand objects, acyclic, freed
by reference counting when the batch is done) never add up to half a million: so no collection
runs while batches come and go, instead of one every 50,000 that rescanned the batch's live
objects (~1 us per record with 50,000; bench/RESULTS.md, "ingest3"). Cyclic garbage, should any be
made, still triggers a collection once half a million objects have piled up."""

if TYPE_CHECKING:
    from server.ingest.amqp import AmqpSubscriber

log = logging.getLogger(__name__)


class Ingest:
    """Start, run and stop one ingest instance; several may share a broker group and a database."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, hub: live.LiveHub | None = None,
                 serve_metrics: bool = False) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.hub = hub or live.LiveHub()
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.subscriber: Subscriber | AmqpSubscriber
        if settings.amqp.addresses:  # a RabbitMQ cluster: a quorum queue over AMQP (docs/scaling.md)
            from server.ingest.amqp import AmqpSubscriber as _Amqp

            self.subscriber = _Amqp(settings.amqp, self.inbox, self.metrics)
        else:
            self.subscriber = Subscriber(settings.mqtt, self.inbox, self.metrics)
        self.worker = Worker(settings, self.inbox, self.metrics, name=settings.mqtt.client_id,
                             ack_messages=self.subscriber.ack, publish=self.subscriber.publish, hub=self.hub)
        self.packer = Packer(settings, self.worker.stop_event)
        self._serve_metrics = serve_metrics

    def start(self) -> Ingest:
        if self._serve_metrics and self.settings.metrics.port:
            self.metrics.serve(self.settings.metrics.host, self.settings.metrics.port)
            log.info("metrics on http://%s:%d/metrics", self.settings.metrics.host, self.settings.metrics.port)
        self.worker.start()
        self.packer.start()
        self.subscriber.start()
        return self

    def wait_connected(self, timeout: float = 10) -> bool:
        """Connected and subscribed: from now on every message published reaches this ingest."""
        return self.subscriber.subscribed.wait(timeout)

    def stop(self) -> None:
        """Disconnect first (no new messages), then let the worker finish its batch."""
        self.subscriber.stop()
        self.worker.stop()

    def run_until(self, stop: threading.Event) -> None:
        self.start()
        try:
            while not stop.wait(1.0):
                if not self.worker.thread.is_alive():
                    raise RuntimeError("the database worker thread died")
        finally:
            self.stop()
