"""Each record of an opened envelope in the forms the database thread uses, made once (issue 17).

Why: the database thread used to turn every record dict into a Python object three times (the
book's NewRecord in `accept`, derive's Rec in `recs_of`, the packed COPY row with its hex hash turned
back into bytes), each time reading dicts that were no longer in the CPU's cache (a batch is ~20 MB
of objects): whichever step touched a record first paid for the miss. `prepare` builds what it
needs in the open thread, right after the records' own checks passed, while the dicts are hot:
- derive's Rec of each record, which the book keeps by seq (its hashes and prevs it finds in the
  opened envelope: no tuple per record for them);
- one COPY row per record, but for the two columns only the database knows (envelope id, agent
  number), which are the row's last two (PREPARED_COLUMNS) and the same for all of an envelope's
  rows: the database thread adds them with one concatenation per row (store.finish_rows);
- the envelope's earliest and latest record time (the book's run of its records; the future-time
  flag reads no record when none is ahead), and whether it holds a spool_overflow record (was
  two searches of the envelope's bytes per envelope: ~0.11 us per record).
The database thread then reads no record dict on the usual path (bench/RESULTS.md, "ingest10").
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from protocols import fastcheck
from protocols.derive import Rec, RecordFields
from server.store.codes import STATE_CODES, TYPE_CODES

PG_EPOCH_MS = 946_684_800_000
"""2000-01-01 UTC, where PostgreSQL's binary timestamps count from"""
PREPARED_COLUMNS = ("t", "seq", "h", "type", "state", "envelope_id", "agent_no")
"""the `records` columns in the order of a prepared COPY row: the database's two last"""
_HEAD = struct.Struct(">hiqiqi8sihih").pack  # 7 fields; t, seq, h, type, state
_HEAD_NO_STATE = struct.Struct(">hiqiqi8sihi").pack  # state NULL (length -1)


@dataclass(frozen=True, slots=True)
class Prepared:
    recs: list[Rec]
    """derive's Rec of each record, with its receive time"""
    rows: list[bytes]
    """each record's COPY row up to its envelope id and agent number (PREPARED_COLUMNS)"""
    t_min: int
    t_max: int
    """the earliest and latest `t` of the records"""
    overflow: bool
    """whether a record is a spool_overflow (the book looks for them only then)"""


def prepare(records: Sequence[RecordFields], hashes: Sequence[str], received: int) -> Prepared:
    """The records of a checked envelope (their own checks passed; `hashes` from them) as the
    database thread uses them; `received`: the message's receive time in ms. The same values as
    `Rec.from_record`, and the rows `store.packed_record_rows` packs (tests/server/test_prepared.py).
    The records are parsed dicts or fastcheck's structs (validate.open_typed); their fields are
    read alike through one getter, chosen once per envelope."""
    make, from_record, fromhex = tuple.__new__, Rec.from_record, bytes.fromhex
    codes, states, epoch, head, head_ns = TYPE_CODES, STATE_CODES, PG_EPOCH_MS, _HEAD, _HEAD_NO_STATE
    hb, st = codes["heartbeat"], codes["state"]
    typed = fastcheck.typed(records)
    common, beat = (_COMMON_ATTRS, _BEAT_ATTRS) if typed else (_COMMON_KEYS, _beat_keys)
    recs: list[Rec] = []
    rows: list[bytes] = []
    add, add_row = recs.append, rows.append
    t_min = t_max = records[0]["t"]
    overflow = False
    for rec, h in zip(records, hashes, strict=True):
        seq, t, typ = common(rec)
        if t > t_max:
            t_max = t
        elif t < t_min:
            t_min = t
        if typ == "heartbeat":  # most records: built without a call
            boot, state, period_ms, mono = beat(rec)
            add(make(Rec, (seq, t, typ, boot, received, state, period_ms, None, None, None, None, None, mono, None)))
            code = hb
        else:
            add(from_record(rec, received))
            code = codes[typ]
            overflow = overflow or typ == "spool_overflow"
            state = rec.get("state") if code == st else None
        if state is None:
            add_row(head_ns(7, 8, (t - epoch) * 1000, 8, seq, 8, fromhex(h[:16]), 2, code, -1))
        else:
            add_row(head(7, 8, (t - epoch) * 1000, 8, seq, 8, fromhex(h[:16]), 2, code, 2, states[state]))
    return Prepared(recs, rows, t_min, t_max, overflow)


_COMMON_KEYS = itemgetter("seq", "t", "type")
_COMMON_ATTRS = attrgetter("seq", "t", "type")
_BEAT_ATTRS = attrgetter("boot", "state", "period_ms", "mono")


def _beat_keys(rec: RecordFields) -> tuple[Any, Any, Any, Any]:
    """a heartbeat dict's (boot, state, period_ms, mono): mono may be absent (Rec.from_record)"""
    return rec["boot"], rec["state"], rec["period_ms"], rec.get("mono")
