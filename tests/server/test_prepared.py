"""What the open thread prepares per record (server/ingest/prepared.py) is what the database thread
used to build from the record dicts: derive's Rec, the book's fields, and the same `records` rows."""

from __future__ import annotations

import json
import struct
from typing import Any

import orjson
import psycopg

from protocols import fastcheck, vectors
from protocols.canonical import dumps_sorted
from protocols.chain import record_hash
from protocols.derive import Rec
from protocols.errors import Reason
from protocols.validate import open_envelope
from server.ingest.prepared import PREPARED_COLUMNS, prepare
from server.ingest.store import (
    RECORD_COLUMNS,
    copy_prepared_records,
    copy_records,
    finish_rows,
    packed_record_rows,
)
from server.ingest.worker import Pipeline
from server.store.codes import STATE_CODES, TYPE_CODES, short_hash
from server.store.times import ms_to_dt
from tests.protocols.helpers import unescaped
from tests.server.helpers import T0, TestAgent, query, register, settings_for, two_agent_numbers

DOC: dict[str, Any] = json.loads(vectors.VECTOR_FILE.read_text(encoding="utf-8"))


def _records() -> tuple[list[dict[str, Any]], list[str]]:
    """The vector envelope's records (every type; a state with `since`), and variants the Rec
    rules treat apart: a heartbeat without mono, a state whose `since` is no int, the last ms."""
    opened = open_envelope(DOC["envelope"]["wire"].encode("utf-8"))
    recs: list[dict[str, Any]] = list(opened.body["records"])
    hashes = list(opened.hashes)
    hb = next(r for r in recs if r["type"] == "heartbeat")
    st = next(r for r in recs if r["type"] == "state")
    extra = [
        {k: v for k, v in hb.items() if k != "mono"},
        {**st, "evidence": {"state": {"since": True}}},
        {**st, "evidence": {}},
        {**hb, "t": 4_102_444_800_000, "state": "unknown"},
        {**hb, "state": "fault"},
    ]
    for i, r in enumerate(extra):
        recs.append({**r, "seq": 100 + i})
        hashes.append(f"{i:x}" * 64)
    hashes[-1] = "80" + "0" * 62  # a hash whose short form is negative
    return recs, hashes


def _fields(row: bytes, columns: tuple[str, ...]) -> dict[str, bytes | None]:
    """One COPY BINARY row, field by field (None: NULL)."""
    (n,) = struct.unpack_from(">h", row)
    assert n == len(columns)
    out: dict[str, bytes | None] = {}
    at = 2
    for col in columns:
        (size,) = struct.unpack_from(">i", row, at)
        at += 4
        out[col] = None if size < 0 else row[at:at + max(size, 0)]
        at += max(size, 0)
    assert at == len(row)
    return out


def test_prepare_gives_derives_recs_and_the_times() -> None:
    recs, hashes = _records()
    p = prepare(recs, hashes, 1_767_225_700_123)
    assert p.recs == [Rec.from_record(r, 1_767_225_700_123) for r in recs]
    assert p.t_max == max(r["t"] for r in recs) == 4_102_444_800_000
    assert p.t_min == min(r["t"] for r in recs)
    assert not p.overflow
    spool = {**recs[0], "type": "spool_overflow", "dropped": [{"first": 1, "last": 2, "last_hash": "a" * 64}]}
    assert prepare([*recs, spool], [*hashes, "b" * 64], 0).overflow
    assert len(p.rows) == len(recs)


def test_prepared_rows_hold_what_packed_record_rows_packs() -> None:
    """Field by field, for every record type, with and without a state, and rows of several
    envelopes: the prepared row plus its envelope id and agent number is the packed row."""
    recs, hashes = _records()
    p = prepare(recs, hashes, 0)
    for env_id, agent_no in ((1, 1), (2**40 + 3, 2**31 - 1)):
        mine = finish_rows(p.rows, env_id, agent_no)
        theirs = packed_record_rows(agent_no, [env_id], [(r["seq"], r["t"], h, r["prev"], r, 0, 0)
                                                         for r, h in zip(recs, hashes, strict=True)])
        assert [_fields(m, PREPARED_COLUMNS) for m in mine] == [_fields(t, RECORD_COLUMNS) for t in theirs]
        # and they sort in the same (time) order
        order = sorted(range(len(recs)), key=lambda i: mine[i])
        assert [recs[i]["t"] for i in order] == sorted(r["t"] for r in recs)


def test_prepared_rows_store_what_write_row_stores(fresh_db: str) -> None:
    recs, hashes = _records()
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        nos = two_agent_numbers(conn)
        with conn.transaction():
            rows = sorted(finish_rows(prepare(recs, hashes, 0).rows, 77, nos[0]))
            assert copy_prepared_records(conn, rows) == len(recs)
            copy_records(conn, [
                (ms_to_dt(r["t"]), r["seq"], 77, short_hash(h), nos[1], TYPE_CODES[r["type"]],
                 STATE_CODES[r["state"]] if r["type"] in ("state", "heartbeat") else None)
                for r, h in zip(recs, hashes, strict=True)
            ])

        def stored(no: int) -> list[tuple[Any, ...]]:
            return conn.execute("SELECT t, seq, envelope_id, h, type, state FROM records WHERE agent_no = %s"
                                " ORDER BY seq", (no,)).fetchall()

        a, b = stored(nos[0]), stored(nos[1])
    assert len(a) == len(recs) and a == b
    assert any(r[3] < 0 for r in a) and any(r[5] is None for r in a)


def test_envelopes_partly_new_keep_their_runs_hashes_and_times(fresh_db: str) -> None:
    """Envelopes whose records are partly stored already (resends overlapping what is stored or
    pending, and within one batch): the book's runs of the new records carry the right edge
    hashes and times, so the next envelopes chain on, and the watermark's hash is the last one's."""
    a = TestAgent("p1")
    register(fresh_db, a)
    # seqs 1..13; 5 and 9 later than the next one (a clock set back): a run's t_max is not its last t
    recs = [a.heartbeat(T0 + k * 60_000 + (90_000 if k in (4, 8) else 0), "running") for k in range(13)]
    hashes = [record_hash(r) for r in recs]

    def env(lo: int, hi: int) -> bytes:
        return a.seal(recs[lo - 1:hi])

    def prog() -> tuple[Any, ...]:
        return query(fresh_db, "SELECT watermark, watermark_hash, watermark_t, pending, derived_seq FROM agent_progress"
                     " WHERE agent_id = 'p1'")[0]

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        pipe = Pipeline(settings_for(fresh_db), "t")
        assert pipe.process(conn, [a.msg(env(1, 3), T0)]).records == 3
        # 4..6 new after 2..3, and 9..10 above a hole
        out = pipe.process(conn, [a.msg(env(2, 6), T0 + 1), a.msg(env(9, 10), T0 + 2)])
        assert out.rejections == [] and out.records == 5 and out.duplicates == 2
        wm, wm_hash, wm_t, pending, derived = prog()
        assert (wm, wm_hash, wm_t, derived) == (6, hashes[5], ms_to_dt(recs[4]["t"]), 6)
        assert pending == [[9, 10, hashes[7], hashes[9], recs[9]["t"], recs[8]["t"]]]
        # 7..8 new below the pending run (9 is stored), then 11..12 new after 10 and 13 in the same batch
        out = pipe.process(conn, [a.msg(env(7, 9), T0 + 3), a.msg(env(10, 12), T0 + 4), a.msg(env(13, 13), T0 + 5)])
        assert out.rejections == [] and out.records == 5 and out.duplicates == 2
        assert prog() == (13, hashes[12], ms_to_dt(recs[12]["t"]), [], 13)
        stored = query(fresh_db, "SELECT seq FROM records r JOIN agent_progress p USING (agent_no)"
                       " WHERE p.agent_id = 'p1' ORDER BY seq")
        assert [s for (s,) in stored] == list(range(1, 14))
        # a link that does not fit the new records' edge hashes is still refused
        b = TestAgent("p2")
        register(fresh_db, b)
        brecs = [b.heartbeat(T0 + k * 60_000, "running") for k in range(6)]
        forged = {**brecs[4], "prev": "0" * 64}
        out = pipe.process(conn, [b.msg(b.seal(brecs[:3]), T0), b.msg(b.seal(brecs[1:4]), T0 + 1),
                                  b.msg(b.seal([forged]), T0 + 2)])
        assert [r.reason for r in out.rejections] == [str(Reason.CHAIN_BROKEN)] and out.records == 4


def test_typed_records_prepare_as_their_parsed_dicts() -> None:
    """What the ingest opens with validate.open_typed (fastcheck's structs, no dict per record)
    prepares to the same Recs, rows, times and overflow flag as the same records parsed."""
    body = unescaped(json.loads(DOC["envelope"]["wire"]))
    last = body["records"][-1]
    body["records"].append({**{k: last[k] for k in ("agent", "boot", "mono", "prev", "t")},
                            "seq": last["seq"] + 1, "type": "spool_overflow",
                            "dropped": [{"first": 1, "last": 2, "last_hash": "c" * 64}]})
    raw = dumps_sorted(body)
    env = fastcheck.decode(raw)
    assert env is not None and fastcheck.typed(env.records)
    parsed = orjson.loads(raw)["records"]
    assert {r["type"] for r in parsed} >= {"heartbeat", "state", "session_start", "session_end", "sample",
                                          "lifecycle", "spool_overflow"}
    hashes = [f"{i % 16:x}" * 64 for i in range(len(parsed))]
    typed, dicts = prepare(env.records, hashes, 123), prepare(parsed, hashes, 123)
    assert typed == dicts and typed.overflow
