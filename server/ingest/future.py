"""Records from a wall clock ahead of the server: stored like any other, flagged for operators.

A record's `t` more than `derive.future_s` ahead of the server's receive time cannot be right (an
event does not happen after the server received it): the agent's clock is wrong, or set on purpose.
Nothing is refused or lost for it. Each envelope that brings such new records gets one
`future_records` row (migration 016), one WARNING log line and a count in
`jishi_ingest_future_records_total`; protocols/derive.py places the records at their receive
time at the latest, so they never add hours. Evaluators see the flag through
server/evaluation/plausibility.py (`future_clock`).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

log = logging.getLogger(__name__)
_T = operator.itemgetter("t")

INSERT_SQL = (
    "INSERT INTO future_records (agent_id, first_seq, last_seq, records, max_ahead_ms, received_at)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::int[], %s::bigint[], %s::timestamptz[])"
    " ON CONFLICT (agent_id, first_seq) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class FutureRow:
    agent_id: str
    first_seq: int
    last_seq: int
    records: int
    max_ahead_ms: int
    received_at: datetime


def flag(agent_id: str, records: Iterable[dict[str, Any]], received_ms: int, received_at: datetime,
         future_ms: int) -> FutureRow | None:
    """The row for one envelope's new records, when any is more than future_ms ahead."""
    recs = records if isinstance(records, list) else list(records)
    if not recs or max(map(_T, recs)) - received_ms <= future_ms:
        return None  # the usual case, judged in C: no record ahead
    seqs: list[int] = []
    ahead = 0
    for rec in recs:
        d = rec["t"] - received_ms
        if d > future_ms:
            seqs.append(rec["seq"])
            ahead = max(ahead, d)
    if not seqs:
        return None
    return FutureRow(agent_id, min(seqs), max(seqs), len(seqs), ahead, received_at)


def record(conn: psycopg.Connection[Any], rows: Sequence[FutureRow]) -> None:
    """Insert the rows (inside the caller's transaction)."""
    if rows:
        conn.execute(INSERT_SQL, [[getattr(r, f) for r in rows] for f in FutureRow.__slots__])


def account(rows: Sequence[FutureRow]) -> int:
    """After commit: one log line per envelope; the number of flagged records."""
    for r in rows:
        log.warning("agent %s: %d record(s) (seq %d..%d) up to %.1f h ahead of the server clock; stored and "
                    "flagged, placed at their receive time for hours", r.agent_id, r.records, r.first_seq,
                    r.last_seq, r.max_ahead_ms / 3_600_000)
    return sum(r.records for r in rows)
