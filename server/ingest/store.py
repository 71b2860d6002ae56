"""Batch writes of envelopes and records with psycopg 3 binary COPY.

Binary COPY with declared types is the fastest way into PostgreSQL from Python (see
measurements.md). Rows go straight into the target tables: dedupe has already happened under
the agents' progress locks, so nothing can conflict; should a bug ever try to store an identical
(agent, seq, t) twice, the unique index fails the batch instead of storing it twice.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from server.ingest.prepared import PG_EPOCH_MS, PREPARED_COLUMNS
from server.store.codes import STATE_CODES, TYPE_CODES
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


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_PG_EPOCH_MS = PG_EPOCH_MS
_ROW = struct.Struct(">hiqiqiqi8siiihih").pack
_ROW_NO_STATE = struct.Struct(">hiqiqiqi8siiihi").pack
_STATE_TYPES = frozenset((TYPE_CODES["state"], TYPE_CODES["heartbeat"]))

NewRow = tuple[int, int, int, int, str, str, str | None]
"""t (UTC ms), agent_no, seq, envelope id, hex hash, type, state (for state and heartbeat records)"""


def record_rows_binary(rows: Iterable[NewRow]) -> bytes:
    """The COPY BINARY stream of `records` rows (RECORD_COLUMNS), packed directly.

    Why: psycopg's write_row adapts every value of every row (a datetime per row, an int per
    hash) and was a tenth of ingest's time per record; here a row is one struct.pack. Same bytes
    in the table as write_row with RECORD_TYPES: t as microseconds since 2000 (= ms_to_dt(t),
    exact for whole milliseconds), h as the first 8 bytes of the hash (= short_hash), type and
    state as their codes (tests/server/test_store_binary.py)."""
    parts = [_COPY_HEADER]
    add = parts.append
    codes, states, state_types = TYPE_CODES, STATE_CODES, _STATE_TYPES
    for t, agent_no, seq, env_id, h, typ, state in rows:
        code = codes[typ]
        us = (t - _PG_EPOCH_MS) * 1000
        if code in state_types and state is not None:
            add(_ROW(7, 8, us, 8, seq, 8, env_id, 8, bytes.fromhex(h[:16]), 4, agent_no, 2, code, 2, states[state]))
        else:
            add(_ROW_NO_STATE(7, 8, us, 8, seq, 8, env_id, 8, bytes.fromhex(h[:16]), 4, agent_no, 2, code, -1))
    add(_COPY_TRAILER)
    return b"".join(parts)


NewRecordRow = tuple[int, int, str, str, Mapping[str, Any], int, int]
"""seq, t (UTC ms), hex hash, prev, the record, index of its envelope in the batch, received (ms):
server/ingest/book.py's NewRecord"""


def packed_record_rows(agent_no: int, env_ids: Sequence[int], new: Iterable[NewRecordRow]) -> list[bytes]:
    """Each new record's row of the COPY BINARY stream, packed straight from the book's records
    (the bytes record_rows_binary packs for the same row; tests/server/test_store_binary.py).

    Why: one pass and no intermediate row tuple per record. Sorting the packed rows sorts them by
    time: each starts with the same field count and length, then t as a big-endian signed integer
    of microseconds since 2000, which orders as its bytes for every time after 2000 (the protocol's
    first millisecond is 2020-01-01). Rows in time order append at the right edge of the
    time-led records index instead of splitting its pages."""
    out: list[bytes] = []
    add = out.append
    codes, states, state_types = TYPE_CODES, STATE_CODES, _STATE_TYPES
    row, row_no_state, fromhex, epoch = _ROW, _ROW_NO_STATE, bytes.fromhex, _PG_EPOCH_MS
    for seq, t, h, _prev, rec, envelope, _received in new:
        code = codes[rec["type"]]
        state = rec.get("state")
        if code in state_types and state is not None:
            add(row(7, 8, (t - epoch) * 1000, 8, seq, 8, env_ids[envelope], 8, fromhex(h[:16]), 4, agent_no, 2,
                    code, 2, states[state]))
        else:
            add(row_no_state(7, 8, (t - epoch) * 1000, 8, seq, 8, env_ids[envelope], 8, fromhex(h[:16]), 4,
                             agent_no, 2, code, -1))
    return out


_ENVELOPE_AGENT = struct.Struct(">iqii").pack


def finish_rows(rows: Iterable[bytes], envelope_id: int, agent_no: int) -> list[bytes]:
    """The COPY rows of an envelope's new records from those server/ingest/prepared.py made in the
    open thread (PREPARED_COLUMNS): each gets the envelope id and agent number, one concatenation
    per row. Sorting them sorts by time as packed_record_rows' rows do (the same start)."""
    tail = _ENVELOPE_AGENT(8, envelope_id, 4, agent_no)
    return [r + tail for r in rows]


def _copy_records(conn: Conn, columns: tuple[str, ...], rows: list[bytes]) -> int:
    if not rows:
        return 0
    with conn.cursor() as cur, cur.copy(
        f"COPY records ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"  # names are constants
    ) as cp:
        cp.write(b"".join((_COPY_HEADER, *rows, _COPY_TRAILER)))
    return len(rows)


def copy_prepared_records(conn: Conn, rows: list[bytes]) -> int:
    """Binary COPY of rows made by finish_rows (columns PREPARED_COLUMNS); returns the number written."""
    return _copy_records(conn, PREPARED_COLUMNS, rows)


def copy_packed_records(conn: Conn, rows: list[bytes]) -> int:
    """Binary COPY of rows packed by packed_record_rows; returns the number written."""
    return _copy_records(conn, RECORD_COLUMNS, rows)


def copy_records_binary(conn: Conn, rows: list[NewRow]) -> int:
    """Binary COPY of prebuilt `records` rows (see record_rows_binary); returns the number written."""
    if not rows:
        return 0
    data = record_rows_binary(rows)
    with conn.cursor() as cur, cur.copy(
        f"COPY records ({', '.join(RECORD_COLUMNS)}) FROM STDIN (FORMAT BINARY)"  # names are constants
    ) as cp:
        cp.write(data)
    return len(rows)
