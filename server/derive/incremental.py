"""Run the pure derivation over each agent's newly contiguous records, inside the ingest transaction.

Records become usable for derivation only when the watermark passes them (no holes below), so
state is always rebuilt in seq order. The caller (ingest) passes the agent's new records, gaps and
carry as plain values and saves the returned carry with the agent's progress, so the next batch
continues exactly where this one stopped; rows are upserted by their start, which extends the open
segment instead of adding a row per heartbeat. Nothing here knows ingest's book-keeping types.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import orjson

from protocols.derive import Carry, Derived, Gap, Params, Rec, derive
from server.db import queries
from server.store.archive import envelopes_for
from server.store.conn import Conn
from server.store.times import dt_to_ms, ms_to_dt

log = logging.getLogger(__name__)


def _needed(lo: int, hi: int, have: Iterable[int], gaps: list[Gap]) -> set[int]:
    """Seqs in lo..hi that are neither at hand nor declared lost/dropped."""
    have_set = have if isinstance(have, (set, frozenset, dict)) else set(have)  # distinct already
    if have_set and len(have_set) == hi - lo + 1 and min(have_set) >= lo and max(have_set) <= hi:
        return set()  # every seq at hand (the usual case): no walk over the range
    out: set[int] = set()
    spans = sorted((g.first, g.last) for g in gaps if g.last >= lo and g.first <= hi)
    s = lo
    for first, last in [*spans, (hi + 1, hi + 1)]:
        while s < min(first, hi + 1):
            if s not in have_set:
                out.add(s)
            s += 1
        s = max(s, last + 1)
        if s > hi:
            break
    return out


def advance(conn: Conn, agent_no: int, agent_id: str, lo: int, hi: int, new: Sequence[Rec],
            gaps: Sequence[Gap], carry: Carry | None, params: Params) -> Derived:
    """Derive seqs lo..hi (derived_seq+1 up to the watermark) from the records at hand (`new`:
    distinct seqs within lo..hi, ascending) and, for the rest, the agent's kept envelopes. The
    caller saves the returned carry and writes the rows (several agents' at once with `write_many`)."""
    if len(new) == hi - lo + 1:  # every seq at hand, in order (the usual case): nothing to look up
        return derive(new, params, carry, list(gaps))
    recs = {r.seq: r for r in new}
    missing = _needed(lo, hi, recs, list(gaps))
    for env in envelopes_for(conn, agent_no, min(missing), max(missing)) if missing else ():
        received = dt_to_ms(env.received_at)
        for rec in orjson.loads(env.raw)["records"]:
            if rec["seq"] in missing:
                recs[rec["seq"]] = Rec.from_record(rec, received)
                missing.discard(rec["seq"])
        if not missing:
            break
    if missing:
        log.error("agent %s: %d stored records up to the watermark were not found in their envelopes "
                  "(first %d); deriving as if lost", agent_id, len(missing), min(missing))
    return derive(map(recs.__getitem__, sorted(recs)), params, carry, list(gaps))


def write(conn: Conn, agent_id: str, instrument_id: str, d: Derived) -> None:
    write_many(conn, [(agent_id, instrument_id, d)])


def write_many(conn: Conn, items: Iterable[tuple[str, str, Derived]]) -> None:
    """Upsert the rows of several agents' runs: three statements whatever the number of agents.
    Sessions first: segments copy their session's identity from user_sessions (migration 012).
    The running-time rollup (usage_rollup, migration 013) follows these writes exactly through the
    statement triggers on usage_segments, so every writer (this one, rebuilds, hand-written test
    data, the benchmark) fills it by the same SQL; day pieces of a segment crossing local midnight
    go to both days."""
    items = list(items)
    queries.upsert_sessions(conn, [
        (agent_id, instrument_id, s.session_id, s.method, s.identifier, ms_to_dt(s.start),
         None if s.end is None else ms_to_dt(s.end), s.end_reason, s.start_seq)
        for agent_id, instrument_id, d in items for s in d.sessions
    ])
    queries.upsert_segments(conn, [
        (agent_id, instrument_id, ms_to_dt(s.start), ms_to_dt(s.end), s.state, s.watched, s.arrival, s.session,
         s.start_seq) for agent_id, instrument_id, d in items for s in d.segments
    ])
    queries.upsert_coverage(conn, [
        (agent_id, instrument_id, ms_to_dt(c.start), ms_to_dt(c.end), c.status, c.reason)
        for agent_id, instrument_id, d in items for c in d.coverage
    ])
