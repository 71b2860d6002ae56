"""Rebuild an agent's derived rows from its kept envelopes (after a rule or parameter change).

Reads the raw signed envelopes (hot and packed), takes each seq once (the first envelope that
stored it gives its receive time), and runs the same pure derivation in one go with the parameters
given (the caller's settings), which are stored with the rows (migration 025) for evidence bundles.
"""

from __future__ import annotations

import dataclasses

import orjson

from protocols.derive import Gap, Params, Rec, derive
from server.db import queries
from server.derive.incremental import write
from server.store.archive import envelopes_for
from server.store.conn import Conn
from server.store.times import dt_to_ms


def rebuild_agent(conn: Conn, agent_id: str, params: Params) -> int:
    """Replace the agent's usage_segments, coverage and user_sessions; return records derived.
    The rollup of migration 013 follows (the delete subtracts the old rows, the write adds the new).

    Locks the agent's progress row, so it waits for (and blocks) ingest of that agent.
    """
    row = queries.lock_agent_for_rebuild(conn, agent_id)
    if row is None:
        raise LookupError(f"agent {agent_id!r} has no stored records")
    agent_no, watermark, instrument_id = row
    recs: dict[int, Rec] = {}
    for env in envelopes_for(conn, agent_no, 1, watermark):
        received = dt_to_ms(env.received_at)
        for rec in orjson.loads(env.raw)["records"]:
            if rec["seq"] <= watermark and rec["seq"] not in recs:
                recs[rec["seq"]] = Rec.from_record(rec, received)
    gaps = [Gap(g[1], g[2], g[3]) for g in queries.gaps_of(conn, [agent_no])]
    queries.delete_derived(conn, agent_id)
    d = derive((recs[s] for s in sorted(recs)), params, None, gaps)
    write(conn, agent_id, instrument_id, d)
    queries.set_derive_state(conn, agent_no, watermark, None if d.carry is None else d.carry.to_dict(),
                             dataclasses.asdict(params))
    return len(recs)
