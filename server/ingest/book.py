"""One agent's book-keeping inside an ingest transaction: dedupe, chain continuity, watermark.

Held under the agent's locked `agent_progress` row, so whatever several workers receive, each
seq is judged against everything committed before: a seq <= watermark or inside a stored run
above it (`pending`) is already stored, anything else is new. Pure Python over the loaded row;
the worker loads, calls, and saves.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocols.chain import GENESIS
from protocols.derive import Rec
from protocols.errors import Reason
from server.ingest.verify import EnvelopeIn
from server.store.codes import short_hash


@dataclass
class Run:
    """Stored seqs lo..hi above the watermark, with what the chain needs at both edges."""

    lo: int
    hi: int
    prev_lo: str | None
    hash_hi: str
    t_min: int
    t_max: int

    def to_json(self) -> list[Any]:
        return [self.lo, self.hi, self.prev_lo, self.hash_hi, self.t_min, self.t_max]

    @classmethod
    def from_json(cls, v: list[Any]) -> Run:
        return cls(int(v[0]), int(v[1]), v[2], v[3], int(v[4]), int(v[5]))


@dataclass
class GapRow:
    first: int
    last: int
    kind: str
    last_hash: str | None
    reason: str = ""


@dataclass
class Progress:
    agent_no: int
    agent_id: str
    watermark: int
    watermark_hash: str | None
    watermark_t: int | None
    pending: list[Run]
    max_seq: int
    hole_since: datetime | None
    resend_attempts: int
    last_resend_at: datetime | None
    derived_seq: int
    derive_carry: dict[str, Any] | None
    boot: int | None
    conn: int | None
    spool_first: int | None
    next_seq: int | None
    birth_at: datetime | None
    death_at: datetime | None
    death_clean: bool | None
    last_received_at: datetime | None

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> Progress:
        return cls(
            agent_no=r[0], agent_id=r[1], watermark=r[2], watermark_hash=r[3], watermark_t=r[4],
            pending=[Run.from_json(v) for v in r[5]], max_seq=r[6], hole_since=r[7], resend_attempts=r[8],
            last_resend_at=r[9], derived_seq=r[10], derive_carry=r[11], boot=r[12], conn=r[13],
            spool_first=r[14], next_seq=r[15], birth_at=r[16], death_at=r[17], death_clean=r[18],
            last_received_at=r[19],
        )  # fmt: skip

    def to_params(self) -> dict[str, Any]:
        return {
            "agent_no": self.agent_no, "watermark": self.watermark, "watermark_hash": self.watermark_hash,
            "watermark_t": self.watermark_t, "pending": [r.to_json() for r in self.pending],
            "max_seq": self.max_seq, "hole_since": self.hole_since, "resend_attempts": self.resend_attempts,
            "last_resend_at": self.last_resend_at, "derived_seq": self.derived_seq,
            "derive_carry": self.derive_carry, "boot": self.boot, "conn": self.conn,
            "spool_first": self.spool_first, "next_seq": self.next_seq, "birth_at": self.birth_at,
            "death_at": self.death_at, "death_clean": self.death_clean, "last_received_at": self.last_received_at,
        }  # fmt: skip

    def first_hole(self) -> tuple[int, int] | None:
        """The missing seqs right above the watermark, when records beyond them are stored."""
        if not self.pending:
            return None
        return self.watermark + 1, self.pending[0].lo - 1


@dataclass
class Verdict:
    """What to do with one envelope: store its new records, count it as duplicate, or refuse it."""

    new: list[int] = field(default_factory=list)
    """indices of the envelope's records that are new"""
    duplicates: int = 0
    late: int = 0
    reason: str | None = None
    detail: str = ""
    field: str | None = None
    replay_candidate: int | None = None
    """envelope id that stored the first record, when every record is an old duplicate"""


StoredHashes = dict[tuple[int, int], tuple[int, int]]
_LO = operator.attrgetter("lo")
_FIRST = operator.itemgetter(0)


class Book:
    def __init__(self, prog: Progress, gaps: list[GapRow]) -> None:
        self.prog = prog
        self.gaps = gaps
        self.new_runs: list[Run] = []
        """the new records as runs of consecutive seqs, kept by `accept` for `settle`"""
        self._held: list[tuple[int, int, int, list[str], list[dict[str, Any]], list[Rec]]] = []
        """the new records, as `accept` found them: (lo, hi) of a run of them, its envelope's first
        seq, hashes, records and derive's Recs (nothing per record: a few runs per agent and batch)"""
        self.new_gaps: list[GapRow] = []
        self.start_watermark = prog.watermark
        self.touched = False
        """duplicates or new records: the agent should hear the watermark again"""

    # -- where is a seq --------------------------------------------------------------------------

    def _gap_of(self, seq: int) -> GapRow | None:
        for g in self.gaps:
            if g.first <= seq <= g.last:
                return g
        return None

    def _pending_of(self, seq: int) -> Run | None:
        for r in self.prog.pending:
            if r.lo <= seq <= r.hi:
                return r
        return None

    def needs_lookup(self, seq: int) -> bool:
        """A seq whose stored hash must be fetched to tell a duplicate from a conflict."""
        if self.is_new(seq):
            return False
        if seq <= self.prog.watermark:
            g = self._gap_of(seq)
            return g is None
        return self._pending_of(seq) is not None

    def may_hold(self, first_seq: int) -> bool:
        """False when no seq from first_seq on can be stored already (none needs a lookup)."""
        return first_seq <= self.prog.watermark or bool(self.prog.pending)

    def hash_before(self, seq: int) -> str | None:
        """Full hash of the stored record seq-1 (or the declared hash at a dropped range's end)."""
        p = seq - 1
        if p == 0:
            return GENESIS
        h = self._new_hash(p)
        if h is not None:
            return h
        if p == self.prog.watermark and self.prog.watermark_hash is not None:
            return self.prog.watermark_hash
        for r in self.prog.pending:
            if r.hi == p:
                return r.hash_hi
        for g in self.gaps:
            if g.last == p and g.kind == "overflow" and g.last_hash:
                return g.last_hash
        return None

    def prev_after(self, seq: int) -> str | None:
        """The `prev` of the stored record seq+1, when it is stored and its link is still unchecked."""
        n = seq + 1
        prev = self._new_prev(n)
        if prev is not None:
            return prev
        for r in self.prog.pending:
            if r.lo == n:
                return r.prev_lo
        return None

    def is_new(self, seq: int) -> bool:
        """Whether this batch stores seq (accepted it)."""
        return any(lo <= seq <= hi for lo, hi, *_ in self._held)

    def _new_hash(self, seq: int) -> str | None:
        """The hash of the record this batch stores as seq; None when it stores none."""
        for lo, hi, first, hashes, _, _ in self._held:
            if lo <= seq <= hi:
                return hashes[seq - first]
        return None

    def _new_prev(self, seq: int) -> str | None:
        """The `prev` of the record this batch stores as seq; None when it stores none."""
        for lo, hi, first, _, records, _ in self._held:
            if lo <= seq <= hi:
                prev: str = records[seq - first]["prev"]
                return prev
        return None

    def new_recs(self, lo: int, hi: int) -> list[Rec]:
        """derive's Recs of the records this batch stores with seqs in lo..hi, in seq order."""
        out: list[Rec] = []
        for a, b, first, _, _, recs in sorted(self._held, key=_FIRST):
            a, b = max(a, lo), min(b, hi)
            if a <= b:
                out += recs[a - first:b - first + 1]
        return out

    @property
    def stores(self) -> bool:
        """Whether this batch stores records of the agent."""
        return bool(self._held)

    # -- judging ---------------------------------------------------------------------------------

    def judge(self, env: EnvelopeIn, stored: StoredHashes, now_ms: int, replay_grace_ms: int) -> Verdict:
        v = Verdict()
        opened = env.opened
        records = opened.body["records"]
        agent_no = self.prog.agent_no
        first = records[0]["seq"]
        last = first + len(records) - 1
        if first > self.prog.watermark and not self.prog.pending and not any(
                lo <= last and hi >= first for lo, hi, *_ in self._held):
            # nothing of it can be stored yet (records are contiguous, checked when opened): all new
            v.new = list(range(len(records)))
        for i, rec in enumerate(records if not v.new else ()):
            seq = rec["seq"]
            h = opened.hashes[i]
            new_h = self._new_hash(seq)
            if new_h is not None:
                if new_h != h:
                    return _conflict(v, seq, i)
                v.duplicates += 1
            elif seq <= self.prog.watermark or self._pending_of(seq) is not None:
                if seq <= self.prog.watermark and self._gap_of(seq) is not None:
                    v.late += 1
                    continue
                found = stored.get((agent_no, seq))
                if found is None or found[0] != short_hash(h):
                    return _conflict(v, seq, i)
                v.duplicates += 1
            else:
                v.new.append(i)
        if not v.new:
            if v.late and not v.duplicates:
                v.reason, v.field = str(Reason.SEQ_GAP), "records[0].seq"
                v.detail = "records arrived after their range was declared lost; kept here for operators"
                return v
            last = records[-1]["seq"]
            sent = opened.body["sent"]
            first = stored.get((agent_no, records[0]["seq"]))
            if (last < self.prog.watermark and now_ms - sent > replay_grace_ms and first is not None
                    and not env.msg.dup):
                v.replay_candidate = first[1]
            return v
        # chain continuity at the edges of each run of new records: only the envelope's first and
        # last record can be such an edge (v.new ascends)
        for i in dict.fromkeys((v.new[0], v.new[-1])):
            seq = records[i]["seq"]
            if i == 0:
                before = self.hash_before(seq)
                if before is not None and records[0]["prev"] != before:
                    v.reason, v.field = str(Reason.CHAIN_BROKEN), "records[0].prev"
                    v.detail = (f"seq {seq} links to {records[0]['prev'][:12]}…, the stored seq {seq - 1} "
                                f"hashes to {before[:12]}…")
                    return v
            if i == len(records) - 1:
                after = self.prev_after(seq)
                if after is not None and after != opened.hashes[i]:
                    v.reason, v.field = str(Reason.CHAIN_BROKEN), f"records[{i}]"
                    v.detail = (f"the stored seq {seq + 1} links to {after[:12]}…, but seq {seq} here hashes "
                                f"to {opened.hashes[i][:12]}…")
                    return v
        for i in v.new if env.prepared.overflow else ():
            rec = records[i]
            if rec["type"] == "spool_overflow":
                for d in rec["dropped"]:
                    after = self.prev_after(d["last"])
                    if after is not None and after != d["last_hash"]:
                        v.reason, v.field = str(Reason.CHAIN_BROKEN), f"records[{i}].dropped"
                        v.detail = f"the stored seq {d['last'] + 1} does not link to the declared last_hash"
                        return v
        return v

    def accept(self, env: EnvelopeIn, v: Verdict) -> None:
        """Keep the verdict's new records: derive's Recs the open thread made, and where their
        hashes and prevs are (in the opened envelope)."""
        records, hashes = env.opened.body["records"], env.opened.hashes
        prepared = env.prepared
        recs = prepared.recs
        first = recs[0].seq  # contiguous seqs (checked when opened)
        if len(v.new) == len(records):  # all new (the usual case): nothing per record but the dict
            last = recs[-1].seq
            self.new_runs.append(Run(first, last, records[0]["prev"], hashes[-1], prepared.t_min, prepared.t_max))
            self._held.append((first, last, first, hashes, records, recs))
        else:
            runs: list[Run] = []
            cur: Run | None = None
            for i in v.new:  # ascending
                r = recs[i]
                if cur is not None and cur.hi + 1 == r.seq:
                    cur.hi, cur.hash_hi = r.seq, hashes[i]
                    cur.t_min, cur.t_max = min(cur.t_min, r.t), max(cur.t_max, r.t)
                else:
                    cur = Run(r.seq, r.seq, records[i]["prev"], hashes[i], r.t, r.t)
                    runs.append(cur)
            self.new_runs += runs
            self._held += [(run.lo, run.hi, first, hashes, records, recs) for run in runs]
        self.touched = True
        if not env.prepared.overflow:  # no spool_overflow record in the envelope
            return
        for i in v.new:
            rec = records[i]
            if rec["type"] == "spool_overflow":
                for d in rec["dropped"]:
                    g = GapRow(d["first"], d["last"], "overflow", d["last_hash"], f"spool_overflow seq {rec['seq']}")
                    if not any(x.first == g.first for x in self.gaps):
                        self.gaps.append(g)
                        self.new_gaps.append(g)

    # -- after the batch -------------------------------------------------------------------------

    def declare_lost(self, first: int, last: int, reason: str) -> GapRow | None:
        """Declare first..last lost for good (minus what is stored); the watermark may pass it."""
        first = max(first, self.prog.watermark + 1)
        if last < first:
            return None
        for r in self.prog.pending:
            if r.lo <= first <= r.hi:
                first = r.hi + 1
        ends = [r.lo - 1 for r in self.prog.pending if r.lo > first]
        last = min([last, *ends])
        if last < first:
            return None
        g = GapRow(first, last, "lost", None, reason)
        self.gaps.append(g)
        self.new_gaps.append(g)
        return g

    def settle(self, now: datetime) -> None:
        """Merge new records into the stored runs and advance the watermark over everything
        contiguous (stored records and declared gaps)."""
        p = self.prog
        runs = list(p.pending)
        cur: Run | None = None
        for c in sorted(self.new_runs, key=_LO):  # the new records' runs: no walk over each record
            if cur is not None and cur.hi + 1 == c.lo:
                cur.hi, cur.hash_hi = c.hi, c.hash_hi
                cur.t_min, cur.t_max = min(cur.t_min, c.t_min), max(cur.t_max, c.t_max)
            else:
                cur = Run(c.lo, c.hi, c.prev_lo, c.hash_hi, c.t_min, c.t_max)
                runs.append(cur)
        runs.sort(key=lambda r: r.lo)
        merged: list[Run] = []
        for r in runs:
            if merged and merged[-1].hi + 1 >= r.lo:
                m = merged[-1]
                if r.hi > m.hi:
                    merged[-1] = Run(m.lo, r.hi, m.prev_lo, r.hash_hi, min(m.t_min, r.t_min), max(m.t_max, r.t_max))
            else:
                merged.append(r)
        if self.new_runs:
            p.max_seq = max(p.max_seq, max(c.hi for c in self.new_runs))
        old_wm = p.watermark
        while True:
            nxt = p.watermark + 1
            if merged and merged[0].lo <= nxt:
                r = merged.pop(0)
                if r.hi >= nxt:
                    p.watermark, p.watermark_hash = r.hi, r.hash_hi
                    p.watermark_t = r.t_max if p.watermark_t is None else max(p.watermark_t, r.t_max)
                continue
            g = self._gap_of(nxt)
            if g is not None:
                p.watermark = g.last
                p.watermark_hash = g.last_hash if g.kind == "overflow" else None
                continue
            break
        # runs that a gap swallowed, or that start inside the watermark, lose their checked left edge
        p.pending = [r if r.lo > p.watermark else Run(p.watermark + 1, r.hi, None, r.hash_hi, r.t_min, r.t_max)
                     for r in merged if r.hi > p.watermark]
        p.max_seq = max(p.max_seq, p.watermark)
        if not p.pending:
            p.hole_since, p.resend_attempts, p.last_resend_at = None, 0, None
        elif p.hole_since is None or p.watermark != old_wm:
            p.hole_since, p.resend_attempts, p.last_resend_at = now, 0, None

    @property
    def watermark_moved(self) -> bool:
        return self.prog.watermark != self.start_watermark


def _conflict(v: Verdict, seq: int, i: int) -> Verdict:
    v.new.clear()
    v.reason, v.field = str(Reason.SEQ_CONFLICT), f"records[{i}]"
    v.detail = f"seq {seq} is already stored with another content"
    return v
