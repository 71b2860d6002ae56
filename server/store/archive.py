"""The signed envelopes kept for audit: hot rows, then compressed packs per agent.

A live agent sends one small envelope every few minutes; a row per envelope costs more in
PostgreSQL overhead than the envelope itself. So envelopes stay as rows while recent (dedupe,
hole filling and derivation read them), and once old and fully derived they are moved, byte for
byte, into one compressed pack per agent and run of the packer (codec 2, described in pack() and
docs/ingest.md). Reading an agent's envelopes back gives identical bytes.
"""

from __future__ import annotations

import hashlib
import lzma
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import orjson

from protocols.canonical import dumps_sorted
from server.store import envelope_queries as queries
from server.store.conn import Conn
from server.store.times import dt_to_us, us_to_dt

CODEC_ZLIB = 1
CODEC_LZMA_PREV = 2
_HEAD = struct.Struct(">qqI")
_HEAD2 = struct.Struct(">qqBI")
_RAW, _ELIDED = 0, 1


@dataclass(frozen=True, slots=True)
class RawEnvelope:
    id: int
    received_at: datetime
    raw: bytes


def pack(entries: list[RawEnvelope]) -> bytes:
    """Codec 2: entries in id order, each `id (int64 BE) | received_at µs (int64 BE) | form (uint8) |
    length (uint32 BE) | bytes`, the whole xz-compressed (lzma preset 6).

    form 0: the envelope's bytes as received. form 1: the same bytes except that every record
    whose `prev` equals the hash of the record seq-1 held earlier in this pack has `"prev":""`
    (re-encoded canonically). A `prev` is derivable from its predecessor, and as 64 hex digits
    of pure entropy it is a third of what a compressed heartbeat costs. Form 1 is used only when
    restoring it gives back the original bytes exactly (checked here).
    """
    hashes: dict[int, str] = {}
    parts = []
    for e in sorted(entries, key=lambda e: e.id):
        body = orjson.loads(e.raw)
        records = body.get("records") or []
        own = {r["seq"]: hashlib.sha256(dumps_sorted(r)).hexdigest() for r in records}
        data, form = e.raw, _RAW
        known = dict(hashes)
        elided = False
        for r in records:
            if r.get("prev") and known.get(r["seq"] - 1) == r["prev"]:
                r["prev"] = ""
                elided = True
            known[r["seq"]] = own[r["seq"]]
        if elided:
            candidate = dumps_sorted(body)
            if _restore(candidate, dict(hashes)) == e.raw:
                data, form = candidate, _ELIDED
        hashes.update(own)
        parts.append(_HEAD2.pack(e.id, dt_to_us(e.received_at), form, len(data)))
        parts.append(data)
    return lzma.compress(b"".join(parts), preset=6)


def _restore(data: bytes, hashes: dict[int, str]) -> bytes:
    """Fill elided prevs in record order; `hashes` gains each record's hash."""
    body = orjson.loads(data)
    for r in body["records"]:
        if r.get("prev") == "":
            r["prev"] = hashes[r["seq"] - 1]
        hashes[r["seq"]] = hashlib.sha256(dumps_sorted(r)).hexdigest()
    return dumps_sorted(body)


def unpack(codec: int, blob: bytes) -> list[RawEnvelope]:
    """The envelopes of a pack, byte for byte as received, in id order."""
    out: list[RawEnvelope] = []
    if codec == CODEC_ZLIB:
        data, pos = zlib.decompress(blob), 0
        while pos < len(data):
            eid, us, n = _HEAD.unpack_from(data, pos)
            pos += _HEAD.size
            out.append(RawEnvelope(eid, us_to_dt(us), data[pos:pos + n]))
            pos += n
        return out
    if codec != CODEC_LZMA_PREV:
        raise ValueError(f"unknown pack codec {codec}")
    data, pos = lzma.decompress(blob), 0
    hashes: dict[int, str] = {}
    while pos < len(data):
        eid, us, form, n = _HEAD2.unpack_from(data, pos)
        pos += _HEAD2.size
        raw = data[pos:pos + n]
        pos += n
        if form == _ELIDED:
            raw = _restore(raw, hashes)
        else:
            for r in orjson.loads(raw).get("records") or []:
                hashes[r["seq"]] = hashlib.sha256(dumps_sorted(r)).hexdigest()
        out.append(RawEnvelope(eid, us_to_dt(us), raw))
    return out


def envelope_bytes(conn: Conn, agent_no: int, envelope_id: int) -> bytes | None:
    """The raw bytes of one stored envelope, hot or packed."""
    raw = queries.hot_envelope(conn, envelope_id)
    if raw is not None:
        return raw
    for codec, blob in queries.packs_holding(conn, agent_no, envelope_id):
        for e in unpack(codec, blob):
            if e.id == envelope_id:
                return e.raw
    return None


def envelopes_for(conn: Conn, agent_no: int, lo: int, hi: int) -> Iterator[RawEnvelope]:
    """Every kept envelope of the agent that holds a seq in lo..hi, hot or packed, by id.

    By id is by storing order: the first envelope holding a seq is the one that stored it."""
    found: dict[int, RawEnvelope] = {}
    for codec, blob in queries.packs_for(conn, agent_no, lo, hi):
        for e in unpack(codec, bytes(blob)):
            found[e.id] = e
    for eid, received_at, raw in queries.hot_envelopes(conn, agent_no, lo, hi):
        found.setdefault(eid, RawEnvelope(eid, received_at, bytes(raw)))
    for eid in sorted(found):
        yield found[eid]


def pack_old(conn: Conn, older_than: datetime, max_agents: int = 500) -> tuple[int, int]:
    """Move hot envelopes received before `older_than` (and fully derived) into packs.

    One pack per agent per call; run it daily (the ingest process does, see pack_every_s).
    Returns (agents packed, envelopes moved). Runs in the caller's transaction.
    """
    agents = queries.agents_to_pack(conn, older_than, max_agents)
    moved = 0
    for agent_no, derived_seq in agents:
        rows = queries.take_envelopes_to_pack(conn, agent_no, older_than, derived_seq)
        if not rows:
            continue
        rows.sort(key=lambda r: r[0])
        entries = [RawEnvelope(r[0], r[1], bytes(r[4])) for r in rows]
        queries.insert_pack(conn, (
            agent_no, rows[0][0], rows[-1][0], min(r[2] for r in rows), max(r[3] for r in rows),
            min(r[1] for r in rows), max(r[1] for r in rows), len(rows), CODEC_LZMA_PREV, pack(entries),
        ))
        moved += len(rows)
    return len(agents), moved
