"""The prebuilt binary COPY of `records` rows stores exactly what psycopg's write_row stores."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from server.ingest.store import (
    _COPY_HEADER,
    _COPY_TRAILER,
    NewRow,
    copy_packed_records,
    copy_records,
    copy_records_binary,
    packed_record_rows,
    record_rows_binary,
)
from server.store.codes import STATE_CODES, TYPE_CODES, short_hash
from server.store.times import ms_to_dt
from tests.server.helpers import two_agent_numbers

TYPES = ["state", "heartbeat", "session_start", "session_end", "sample", "lifecycle", "spool_overflow"]
STATES = list(STATE_CODES)


def _rows(agent_no: int) -> list[NewRow]:
    rows: list[NewRow] = []
    t = 1_577_836_800_000  # 2020-01-01, the protocol's first millisecond
    for seq in range(1, 400):
        t += seq * 7919 + (seq % 3) * 3_600_001  # whole ms across many days, odd values
        typ = TYPES[seq % len(TYPES)]
        h = hashlib.sha256(seq.to_bytes(4, "big")).hexdigest()  # half the hashes start >= 0x80: negative h
        rows.append((t, agent_no, seq, 1000 + seq // 50, h, typ, STATES[seq % 5] if typ in ("state", "heartbeat")
                     else None))
    rows.append((4_102_444_800_000, agent_no, 400, 1, "f" * 64, "heartbeat", "unknown"))  # the protocol's last ms
    return rows


def test_binary_rows_equal_write_row(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        nos = two_agent_numbers(conn)
        fast, slow = _rows(nos[0]), _rows(nos[1])
        with conn.transaction():
            assert copy_records_binary(conn, fast) == len(fast)
            copy_records(conn, [
                (ms_to_dt(t), seq, env, short_hash(h), no, TYPE_CODES[typ], None if st is None else STATE_CODES[st])
                for t, no, seq, env, h, typ, st in slow
            ])

        def stored(no: int) -> list[tuple[Any, ...]]:
            return conn.execute("SELECT t, seq, envelope_id, h, type, state FROM records WHERE agent_no = %s"
                                " ORDER BY seq", (no,)).fetchall()

        a, b = stored(nos[0]), stored(nos[1])
        assert len(a) == len(fast) and a == b
        assert a[0][0] == ms_to_dt(fast[0][0]) and a[0][3] == short_hash(fast[0][4])
        assert any(r[3] < 0 for r in a) and any(r[5] is None for r in a)


def test_packed_rows_are_the_rows_record_rows_binary_packs(fresh_db: str) -> None:
    """Rows packed straight from the book's records (ingest's path) are write_row's bytes, sort in
    time order, and store the same rows as copy_records."""
    no = 7
    env_ids = [2 * k for k in range(1100)]  # the batch's envelope k has id 2k
    rows = [(t, n, seq, 2 * env, h, typ, st) for t, n, seq, env, h, typ, st in _rows(no)]
    rows.append((1_600_000_000_000, no, 401, 6, "a" * 64, "sample", "running"))  # a state on a sample: not stored
    new = [(seq, t, h, "0" * 64, {"type": typ, **({} if st is None else {"state": st})}, env // 2, 0)
           for t, _, seq, env, h, typ, st in rows]
    packed = packed_record_rows(no, env_ids, reversed(new))
    assert len(packed) == len(rows) == 401
    assert sorted(packed) == [record_rows_binary([r])[len(_COPY_HEADER):-len(_COPY_TRAILER)] for r in sorted(rows)]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES ('o', 'O')")
        conn.execute("INSERT INTO units (id, org_id, name) VALUES ('u', 'o', 'u')")
        conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES ('i', 'u', 'i')")
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES ('a', 'i')")
        no = conn.execute("INSERT INTO agent_progress (agent_id) VALUES ('a') RETURNING agent_no").fetchone()[0]  # type: ignore[index]
        with conn.transaction():
            assert copy_packed_records(conn, sorted(packed_record_rows(no, env_ids, new))) == len(new)
        got = conn.execute("SELECT t, seq, envelope_id, h, type, state FROM records WHERE agent_no = %s ORDER BY seq",
                           (no,)).fetchall()
    assert got == [(ms_to_dt(t), seq, env, short_hash(h), TYPE_CODES[typ],
                    STATE_CODES[st] if st is not None and typ in ("state", "heartbeat") else None)
                   for t, _, seq, env, h, typ, st in sorted(rows, key=lambda r: r[2])]
