"""Refused messages: one row each in `quarantine`, one log line, one count by reason.

Payloads are truncated (the original length is kept) so a flood of huge messages cannot fill
the disk; the reason codes are protocols.errors.Reason plus 'store_error'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg

from server.db import queries
from server.ingest.metrics import Metrics

log = logging.getLogger(__name__)

STORE_ERROR = "store_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    received_at: datetime
    topic: str
    kind: str
    agent_id: str | None
    reason: str
    detail: str
    field: str | None
    payload: bytes


def record(conn: psycopg.Connection, rejections: list[Rejection], *, max_bytes: int, worker: str) -> None:
    """Insert the rejections (inside the caller's transaction)."""
    if not rejections:
        return
    queries.insert_quarantine(
        conn,
        [
            (r.received_at, r.topic, r.kind, r.agent_id, r.reason, r.detail[:2000], r.field,
             r.payload[:max_bytes], len(r.payload), worker)
            for r in rejections
        ],
    )


def account(rejections: list[Rejection], metrics: Metrics) -> None:
    """After commit: log each rejection once and count it."""
    for r in rejections:
        metrics.rejects.labels(reason=r.reason).inc()
        log.warning("quarantined %s message on %s (agent %s): %s%s: %s", r.kind, r.topic, r.agent_id or "?",
                    r.reason, f" at {r.field}" if r.field else "", r.detail)
