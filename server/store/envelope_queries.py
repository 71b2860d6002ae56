"""Named queries of the kept signed envelopes: hot rows (`envelopes`) and packs (`envelope_packs`).

Used by server/store/archive.py only. Every function runs inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from server.store.conn import Conn


def hot_envelopes(conn: Conn, agent_no: int, lo: int, hi: int) -> list[tuple[int, datetime, bytes]]:
    """(id, received_at, raw) of not yet packed envelopes holding any seq in lo..hi, by id."""
    return conn.execute(
        "SELECT id, received_at, raw FROM envelopes WHERE agent_no = %s AND first_seq <= %s AND last_seq >= %s"
        " ORDER BY id",
        (agent_no, hi, lo),
    ).fetchall()


def hot_envelope(conn: Conn, envelope_id: int) -> bytes | None:
    row = conn.execute("SELECT raw FROM envelopes WHERE id = %s", (envelope_id,)).fetchone()
    return None if row is None else bytes(row[0])


def packs_for(conn: Conn, agent_no: int, lo: int, hi: int) -> list[tuple[int, bytes]]:
    """(codec, blob) of the agent's packs that may hold seqs lo..hi, by first envelope id."""
    return conn.execute(
        "SELECT codec, blob FROM envelope_packs WHERE agent_no = %s AND first_seq <= %s AND last_seq >= %s"
        " ORDER BY first_envelope_id",
        (agent_no, hi, lo),
    ).fetchall()


def packs_holding(conn: Conn, agent_no: int, envelope_id: int) -> list[tuple[int, bytes]]:
    """(codec, blob) of the agent's packs whose id range includes envelope_id (ranges may overlap)."""
    rows = conn.execute(
        "SELECT codec, blob FROM envelope_packs WHERE agent_no = %s AND first_envelope_id <= %s"
        " AND last_envelope_id >= %s",
        (agent_no, envelope_id, envelope_id),
    ).fetchall()
    return [(r[0], bytes(r[1])) for r in rows]


def agents_to_pack(conn: Conn, older_than: datetime, limit: int) -> list[tuple[int, int]]:
    """(agent_no, derived_seq) of agents with hot envelopes old enough and fully derived."""
    return conn.execute(
        "SELECT p.agent_no, p.derived_seq FROM agent_progress p WHERE EXISTS ("
        "  SELECT 1 FROM envelopes e WHERE e.agent_no = p.agent_no AND e.received_at < %s"
        "  AND e.last_seq <= p.derived_seq) ORDER BY p.agent_no LIMIT %s",
        (older_than, limit),
    ).fetchall()


def take_envelopes_to_pack(
    conn: Conn, agent_no: int, older_than: datetime, max_seq: int
) -> list[tuple[int, datetime, int, int, bytes]]:
    """Delete and return (id, received_at, first_seq, last_seq, raw) of envelopes to pack."""
    return conn.execute(
        "DELETE FROM envelopes WHERE agent_no = %s AND received_at < %s AND last_seq <= %s"
        " RETURNING id, received_at, first_seq, last_seq, raw",
        (agent_no, older_than, max_seq),
    ).fetchall()


def insert_pack(conn: Conn, row: tuple[Any, ...]) -> None:
    conn.execute(
        "INSERT INTO envelope_packs (agent_no, first_envelope_id, last_envelope_id, first_seq, last_seq,"
        " received_from, received_to, n, codec, blob) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        row,
    )
