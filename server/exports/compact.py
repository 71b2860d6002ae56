"""One agent's part of a compact evidence bundle (version 2, SPEC.md §14): its record stream and the
signed heads that close it, from the agent's kept envelopes in storing order.

Why only some signatures: a record stream is a hash chain, so one valid signature over an
envelope authenticates every record linked before it. The bundle keeps the envelope that stored
the last record of each local day (a day can be checked, and disputed, on its own) and the one
that stored the last record before each hole (nothing after a hole links back across it).
Every other envelope's header and signature are left out; its records are in the stream.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from protocols.bundle import encode_stream, head_of

DAY_MS = 86_400_000
LOCAL_OFFSET_MS = 8 * 3_600_000  # Asia/Shanghai: UTC+8, no daylight saving since 1991


def local_day(t_ms: int) -> int:
    """Days since 1970-01-01 in Asia/Shanghai of a record's `t` (the evaluation's calendar)."""
    return (t_ms + LOCAL_OFFSET_MS) // DAY_MS


@dataclass
class AgentPart:
    records: bytes = b""
    heads: list[dict[str, Any]] = field(default_factory=list)
    n_records: int = 0
    n_envelopes: int = 0


def compact_agent(envelopes: Iterable[tuple[int, int, bytes]], watermark: int) -> AgentPart:
    """The stream and heads of an agent from its kept envelopes (id, received µs, bytes) in id order.

    The envelopes were verified by ingest when stored, so they are parsed, not checked again. Each
    seq ≤ `watermark` is taken from the first envelope holding it (the one that stored it, whose
    receive time the derivation used)."""
    enabled = gc.isenabled()
    gc.disable()  # ~100,000 acyclic dicts a year: the cycle collector would re-scan them all, often
    try:
        return _compact(envelopes, watermark)
    finally:
        if enabled:
            gc.enable()


def _compact(envelopes: Iterable[tuple[int, int, bytes]], watermark: int) -> AgentPart:
    recs: dict[int, tuple[dict[str, Any], int]] = {}
    stored_by: dict[int, int] = {}  # seq -> index in `heads_all`
    heads_all: list[dict[str, Any]] = []
    n = 0
    for _eid, us, raw in envelopes:
        n += 1
        body = orjson.loads(raw)
        k = -1
        for rec in body["records"]:
            seq = rec["seq"]
            if seq > watermark or seq in recs:
                continue
            if k < 0:
                heads_all.append(head_of(body))
                k = len(heads_all) - 1
            recs[seq] = (rec, us)
            stored_by[seq] = k
    seqs = sorted(recs)
    closing: set[int] = set()
    for i, seq in enumerate(seqs):
        nxt = seqs[i + 1] if i + 1 < len(seqs) else None
        if nxt is None or nxt != seq + 1 or local_day(recs[nxt][0]["t"]) != local_day(recs[seq][0]["t"]):
            closing.add(stored_by[seq])
    heads = [heads_all[k] for k in sorted(closing)]
    heads.sort(key=lambda h: (h["last"], h["first"]))
    return AgentPart(encode_stream(recs[s] for s in seqs), heads, len(seqs), n)
