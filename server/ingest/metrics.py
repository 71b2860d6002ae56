"""Prometheus metrics of one ingest process, served on /metrics.

Each Metrics object has its own registry so several ingest instances can live in one process
(tests, benchmarks) without clashing; the CLI serves the registry of the one it runs.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from protocols.errors import Reason

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("jishi_ingest_messages", "MQTT messages received, by topic kind", ["kind"], registry=r)
        self.records_stored = Counter("jishi_ingest_records_stored", "records stored (new seqs)", registry=r)
        self.envelopes_stored = Counter("jishi_ingest_envelopes_stored", "envelopes kept (brought new records)",
                                        registry=r)
        self.duplicates = Counter("jishi_ingest_duplicate_records", "records already stored with the same hash",
                                  registry=r)
        self.late_records = Counter("jishi_ingest_late_records", "records arriving after their range was "
                                    "declared lost", registry=r)
        self.future_records = Counter("jishi_ingest_future_records", "records stored whose time was more than "
                                      "derive.future_s ahead of their receive time (flagged)", registry=r)
        self.rejects = Counter("jishi_ingest_rejects", "messages refused and quarantined, by reason", ["reason"],
                               registry=r)
        for reason in [*Reason, "store_error"]:
            self.rejects.labels(reason=str(reason))
        self.lag = Histogram("jishi_ingest_lag_seconds", "event time of an envelope's last record to commit",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.ack_latency = Histogram("jishi_ingest_ack_latency_seconds", "message received to ack published",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_messages = Histogram("jishi_ingest_batch_messages", "messages per batch",
                                        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000), registry=r)
        self.batch_records = Histogram("jishi_ingest_batch_records", "records per batch",
                                       buckets=(1, 10, 100, 1000, 5000, 10000, 20000, 50000, 100000), registry=r)
        self.batch_seconds = Histogram("jishi_ingest_batch_seconds", "time to verify and commit a batch",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.workers = Gauge("jishi_ingest_workers", "database workers running in this process", registry=r)
        self.busy = Gauge("jishi_ingest_workers_busy", "database workers inside a batch", registry=r)
        self.queue_depth = Gauge("jishi_ingest_queue_depth", "messages received and not yet processed",
                                 registry=r)
        self.db_errors = Counter("jishi_ingest_db_errors", "batches that failed on the database and were retried",
                                 registry=r)
        self.resends = Counter("jishi_ingest_resend_requests", "resend commands published", registry=r)
        self.gaps = Counter("jishi_ingest_gaps_declared", "ranges declared lost for good, by kind", ["kind"],
                            registry=r)
        self.acks = Counter("jishi_ingest_acks_published", "acks published", registry=r)

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
