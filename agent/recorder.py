"""Transitions, sessions, heartbeats and lifecycle events -> records, chained, into the spool.

The server refuses a record that breaks the schema, and a refused record stalls the chain, so
this module guarantees validity before anything is written: evidence is reduced to at most 16
scalar members with valid names, strings are cut to 256 characters, floats become ints, and a
record that would exceed the size limit is shrunk. No pydantic here (memory); the tests check
every record type against the strict models in protocols.records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.clock import Clock
from agent.config import ID_RE
from agent.spool import Row, Spool
from agent.state import Transition
from protocols.canonical import MAX_SAFE_INT, dumps_sorted
from protocols.envelope import MAX_RECORD_BYTES

MAX_TEXT = 256
MAX_MEMBERS = 16
MAX_SAMPLE_VALUES = 600  # keeps a sample record far below MAX_RECORD_BYTES
Scalar = int | bool | str | None


def clean_name(key: Any) -> str:
    """A valid evidence/detector name from anything: lower-case, [a-z0-9_], leading letter."""
    name = re.sub(r"[^a-z0-9_]", "_", str(key).lower())[:32]
    if not name or not name[0].isalpha():
        name = ("k" + name)[:32]
    return name


def clean_scalar(value: Any, text_max: int = MAX_TEXT) -> Scalar:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return max(-MAX_SAFE_INT, min(MAX_SAFE_INT, value))
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return MAX_SAFE_INT if value > 0 else -MAX_SAFE_INT
        return max(-MAX_SAFE_INT, min(MAX_SAFE_INT, round(value)))
    text = value if isinstance(value, str) else str(value)
    return text[:text_max]


def clean_evidence(evidence: Mapping[Any, Any], text_max: int = MAX_TEXT) -> dict[str, Scalar]:
    """At most 16 members, valid names, scalar values (the protocol's `Evidence`)."""
    out: dict[str, Scalar] = {}
    for key, value in evidence.items():
        if len(out) >= MAX_MEMBERS:
            break
        out[clean_name(key)] = clean_scalar(value, text_max)
    return out


def clean_by_detector(evidence: Mapping[Any, Mapping[Any, Any]], text_max: int = MAX_TEXT,
                      limit: int = MAX_MEMBERS) -> dict[str, dict[str, Scalar]]:
    out: dict[str, dict[str, Scalar]] = {}
    for name, ev in evidence.items():
        if len(out) >= limit:
            break
        out[clean_name(name)] = clean_evidence(ev, text_max)
    return out


def state_evidence(tr: Transition) -> dict[str, Scalar]:
    """The state record's `evidence.state` (protocols/SPEC.md §5.2): `since`, where the server starts
    the new state; `edge`, the first poll that showed the change (the true edge); `raw_since`, the
    first poll of the confirmed state; `warmup_ms` and `post_ms`, the declared warm-up and
    post-processing credits. The record's own `t` is when
    the agent decided (after debounce and the post-run hold)."""
    ev: dict[str, Any] = {"since": tr.since, "edge": tr.raw_since if tr.edge is None else tr.edge,
                          "raw_since": tr.raw_since, "warmup_ms": tr.warmup_ms}
    if tr.post_ms:
        ev["post_ms"] = tr.post_ms
    return clean_evidence(ev)


class Recorder:
    """Makes records; `on_append` is called after each durable append (wakes the publisher)."""

    def __init__(self, spool: Spool, agent: str, boot: int, clock: Clock,
                 on_append: Callable[[], None] | None = None) -> None:
        if not ID_RE.match(agent):
            raise ValueError(f"agent id {agent!r} is not a valid id")
        self.spool = spool
        self.agent = agent
        self.boot = boot
        self.clock = clock
        self.on_append = on_append

    def _base(self, typ: str, seq: int, prev: str, t: int | None) -> dict[str, Any]:
        now, mono = self.clock.now()
        return {"type": typ, "agent": self.agent, "boot": self.boot, "seq": seq, "prev": prev,
                "t": now if t is None else t, "mono": mono}

    def emit(self, typ: str, fields: Mapping[str, Any], t: int | None = None) -> Row:
        """Append one record of `typ` with `fields` (already clean) to the spool."""
        def build(seq: int, prev: str) -> dict[str, Any]:
            rec = self._base(typ, seq, prev, t)
            rec.update(fields)
            if len(dumps_sorted(rec)) > MAX_RECORD_BYTES:
                rec = _shrink(rec)
            return rec

        row = self.spool.append(build)
        if self.on_append is not None:
            self.on_append()
        return row

    def overflow_builder(self, seq: int, prev: str, ranges: list[dict[str, Any]]) -> dict[str, Any]:
        rec = self._base("spool_overflow", seq, prev, None)
        rec["dropped"] = ranges
        return rec

    # ---- the record types -----------------------------------------------------------------------

    def state(self, tr: Transition, rule: str, evidence: Mapping[str, Mapping[str, Any]]) -> Row:
        ev = clean_by_detector(evidence, limit=MAX_MEMBERS - 1)
        ev["state"] = state_evidence(tr)
        return self.emit("state", {"state": tr.state, "prev_state": tr.prev_state, "rule": rule[:MAX_TEXT],
                                   "evidence": ev})

    def heartbeat(self, state: str, period_ms: int, evidence: Mapping[str, Mapping[str, Any]]) -> Row:
        return self.emit("heartbeat", {"state": state, "period_ms": max(0, period_ms),
                                       "evidence": clean_by_detector(evidence)})

    def session_start(self, session: str, method: str, user: str) -> Row:
        if not ID_RE.match(session):
            raise ValueError(f"session id {session!r} is not a valid id")
        if method == "card" and not user.startswith("hmac-sha256:"):
            raise ValueError("a card user must be a keyed hash")
        return self.emit("session_start", {"session": session, "method": method, "user": user[:128]})

    def session_end(self, session: str, reason: str) -> Row:
        return self.emit("session_end", {"session": session, "reason": reason})

    def lifecycle(self, event: str, detail: Mapping[str, Any]) -> Row:
        return self.emit("lifecycle", {"event": event, "detail": clean_evidence(detail)})

    def sample(self, signal: str, unit: str, start: int, step_ms: int, values: Sequence[int | None]) -> list[Row]:
        rows = []
        for i in range(0, len(values), MAX_SAMPLE_VALUES):
            chunk = [None if v is None else clean_scalar(int(v)) for v in values[i:i + MAX_SAMPLE_VALUES]]
            rows.append(self.emit("sample", {"signal": clean_name(signal), "unit": unit, "start": start + i * step_ms,
                                             "step_ms": step_ms, "values": chunk}))
        return rows


def _shrink(rec: dict[str, Any]) -> dict[str, Any]:
    """Cut evidence strings harder until the record fits MAX_RECORD_BYTES."""
    for text_max in (64, 16, 0):
        if "evidence" in rec:
            rec["evidence"] = clean_by_detector(rec["evidence"], text_max)
        if "detail" in rec:
            rec["detail"] = clean_evidence(rec["detail"], text_max)
        if len(dumps_sorted(rec)) <= MAX_RECORD_BYTES:
            break
    return rec
