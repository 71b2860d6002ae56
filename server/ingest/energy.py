"""Power meters whose energy counter does not follow their power: stored, flagged for evaluators.

The power-meter detector reads the meter's energy counter beside its power and integrates the
power itself; a counter that stands still while the integral grows past three counter steps sets
`e_stuck` in the detector's evidence (agent/detectors/power_meter). A real meter's counter moves
with its power, so a stuck one points at a replaced or tampered meter, a wrong register map, or
fabricated readings. Nothing is refused for it: each envelope that brings such records gets one
`energy_flags` row (migration 028), and server/evaluation/plausibility.py (`energy_stuck`) shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from server.store.times import ms_to_dt

MARK = b'"e_stuck":true'
"""In the canonical bytes of every envelope with a record that `flag` finds (keys and values are
encoded one way only), so an envelope without it needs no look at its records."""

INSERT_SQL = (
    "INSERT INTO energy_flags (agent_id, first_seq, last_seq, records, detector, max_pwh, first_t, last_t)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::int[], %s::text[], %s::bigint[],"
    " %s::timestamptz[], %s::timestamptz[]) ON CONFLICT (agent_id, first_seq) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class EnergyRow:
    agent_id: str
    first_seq: int
    last_seq: int
    records: int
    detector: str
    max_pwh: int
    first_t: datetime
    last_t: datetime


def flag(agent_id: str, records: Iterable[dict[str, Any]]) -> EnergyRow | None:
    """The row for one envelope's new records, when any reports a stuck energy counter."""
    hits: list[tuple[int, int, str, int]] = []
    for rec in records:
        evidence = rec.get("evidence")
        if not isinstance(evidence, dict):
            continue
        for det, ev in evidence.items():
            if isinstance(ev, dict) and ev.get("e_stuck") is True:
                pwh = ev.get("pwh")
                hits.append((rec["seq"], rec["t"], det, pwh if isinstance(pwh, int) else 0))
                break
    if not hits:
        return None
    return EnergyRow(agent_id, min(h[0] for h in hits), max(h[0] for h in hits), len(hits), hits[0][2],
                     max(h[3] for h in hits), ms_to_dt(min(h[1] for h in hits)), ms_to_dt(max(h[1] for h in hits)))


def record(conn: psycopg.Connection[Any], rows: Sequence[EnergyRow]) -> None:
    """Insert the rows (inside the caller's transaction)."""
    if rows:
        conn.execute(INSERT_SQL, [[getattr(r, f) for r in rows] for f in EnergyRow.__slots__])
