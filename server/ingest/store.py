"""Batch writes of envelopes and records with psycopg 3 binary COPY.

Binary COPY with declared types is the fastest way into PostgreSQL from Python (see
measurements.md). Rows go straight into the target tables: dedupe has already happened under
the agents' progress locks, so nothing can conflict; should a bug ever try to store an identical
(agent, seq, t) twice, the unique index fails the batch instead of storing it twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from server.store.conn import Conn

ENVELOPE_COLUMNS = ("id", "agent_no", "received_at", "first_seq", "last_seq", "raw")
ENVELOPE_TYPES = ("int8", "int4", "timestamptz", "int8", "int8", "bytea")
RECORD_COLUMNS = ("t", "seq", "envelope_id", "h", "agent_no", "type", "state")
RECORD_TYPES = ("timestamptz", "int8", "int8", "int8", "int4", "int2", "int2")

def copy_rows(conn: Conn, table: str, columns: tuple[str, ...], types: tuple[str, ...],
              rows: Iterable[tuple[Any, ...]]) -> int:
    """Binary COPY of rows into table; returns the number of rows written."""
    n = 0
    with conn.cursor() as cur, cur.copy(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"  # names are constants
    ) as cp:
        cp.set_types(list(types))
        for row in rows:
            cp.write_row(row)
            n += 1
    return n


def copy_envelopes(conn: Conn, rows: Iterable[tuple[int, int, datetime, int, int, bytes]]) -> int:
    return copy_rows(conn, "envelopes", ENVELOPE_COLUMNS, ENVELOPE_TYPES, rows)


def copy_records(conn: Conn, rows: Iterable[tuple[datetime, int, int, int, int, int, int | None]]) -> int:
    return copy_rows(conn, "records", RECORD_COLUMNS, RECORD_TYPES, rows)
