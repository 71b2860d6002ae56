"""A fast acceptance check of `rec` envelopes: msgspec structs that mirror protocols/records.py.

Why: building a pydantic object per record was the largest single cost of opening an envelope
(bench/RESULTS.md, "Ingest throughput, second round"). These structs decode and check the whole
envelope in one pass without building the reference models.

It only ever *accepts*: `accepts(body)` is True when a parsed envelope is certainly valid by the
strict models in records.py, and `decode(raw)` returns the envelope as these structs when its
bytes are certainly canonical and valid; for anything else (False, None) the caller takes the
reference path (parse_canonical, then the models), which gives the refusal and its reason exactly
as before. So a difference between the two can make a valid envelope slower, never a refusal
different - provided this check accepts nothing the reference refuses, which
tests/protocols/test_fastcheck.py checks differentially (vectors, hand-made edge cases and
generated mutations, as parsed bodies and as bytes).

`decode` is the ingest's way in (issue 17, bench/RESULTS.md "typed"): the records stay these
structs from the wire to the database thread, never a dict each. They read like the parsed
dicts they replace (`rec["seq"]`, `rec.get("mono")`, `rec["type"]`) for the code that is not
per record; the per-record loops read attributes.

Patterns end in `\\Z`, not `$`: Python's `$` also matches before a final newline, the reference
(Rust regex) does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from protocols.canonical import MAX_SAFE_INT
from protocols.envelope import MAX_RECORDS
from protocols.records import MAX_T, MIN_T

# string patterns are checked in accepts(), once per distinct value (a per-record regex in the
# decoder costs more than the reference models)
Id = str
Name = str
Hash = str
KeyId = str
Signature = str
Text = Annotated[str, Meta(max_length=256)]
Millis = Annotated[int, Meta(ge=MIN_T, le=MAX_T)]
Seq = Annotated[int, Meta(ge=1, le=MAX_SAFE_INT)]
Count = Annotated[int, Meta(ge=0, le=MAX_SAFE_INT)]
SafeInt = Annotated[int, Meta(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
Scalar = SafeInt | bool | Text | None
Evidence = Annotated[dict[Name, Scalar], Meta(max_length=16)]
EvidenceByDetector = Annotated[dict[Name, Evidence], Meta(max_length=16)]
State = Literal["off", "idle", "running", "fault", "unknown"]


class _Readable(msgspec.Struct, gc=False):
    """Read by key like the parsed dict it stands for; a missing field is a KeyError.

    Untracked by the garbage collector (a batch holds ~100,000 records: -0.15 us per record):
    what a struct holds (strings, ints, evidence dicts of scalars, dropped ranges) never refers
    back to it, and nothing writes to a decoded record."""

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


class _Rec(_Readable, forbid_unknown_fields=True, tag_field="type"):
    type: ClassVar[str]
    """the tag, readable as `rec["type"]` (msgspec keeps it out of the fields)"""
    agent: Id
    boot: Seq
    seq: Seq
    t: Millis
    mono: Count
    prev: Hash


class _State(_Rec, tag="state"):
    type = "state"
    state: State
    prev_state: State
    rule: Text
    evidence: EvidenceByDetector


class _Heartbeat(_Rec, tag="heartbeat"):
    type = "heartbeat"
    state: State
    period_ms: Count
    evidence: EvidenceByDetector


class _SessionStart(_Rec, tag="session_start"):
    type = "session_start"
    session: Id
    method: Literal["os", "checkin", "card", "booking"]
    user: Annotated[str, Meta(min_length=1, max_length=128)]


class _SessionEnd(_Rec, tag="session_end"):
    type = "session_end"
    session: Id
    reason: Literal["checkout", "idle_timeout", "os_logout", "card", "replaced", "agent_stop"]


class _Sample(_Rec, tag="sample"):
    type = "sample"
    signal: Name
    unit: str
    start: Millis
    step_ms: Annotated[int, Meta(ge=1, le=86_400_000)]
    values: Annotated[list[SafeInt | None], Meta(max_length=3600)]


class _Lifecycle(_Rec, tag="lifecycle"):
    type = "lifecycle"
    event: Literal["boot", "stop", "config", "clock", "detector_error"]
    detail: Evidence


class _Dropped(_Readable, forbid_unknown_fields=True):
    first: Seq
    last: Seq
    last_hash: Hash


class _SpoolOverflow(_Rec, tag="spool_overflow"):
    type = "spool_overflow"
    dropped: Annotated[list[_Dropped], Meta(min_length=1, max_length=256)]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    v: Literal[1]
    msg: Literal["rec"]
    agent: Id
    key: KeyId
    unit: Id
    instrument: Id
    boot: Seq
    sig: Signature
    sent: Millis
    records: Annotated[
        list[_State | _Heartbeat | _SessionStart | _SessionEnd | _Sample | _Lifecycle | _SpoolOverflow],
        Meta(min_length=1, max_length=MAX_RECORDS),
    ]


_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIG = re.compile(r"[A-Za-z0-9_-]{86}")
_UNIT = re.compile(r"[A-Za-z%/_0-9]{1,16}")
_known: dict[re.Pattern[str], set[str]] = {p: set() for p in (_ID, _NAME, _UNIT)}
"""values seen to match, per pattern: ids, detector and evidence names repeat in every record"""


def _all_match(pattern: re.Pattern[str], values: set[str]) -> bool:
    """fullmatch: the whole string, no newline let through as `$` would"""
    known = _known[pattern]
    new = values - known
    if not new:
        return True
    if not all(pattern.fullmatch(v) for v in new):
        return False
    if len(known) > 10_000:
        known.clear()
    known |= new
    return True


_HEX_DIGITS = b"0123456789abcdef"


def _hashes_ok(values: list[str]) -> bool:
    """Every value 64 lowercase hex digits (what a fullmatch of [0-9a-f]{64} on each says). Deleting the
    digits from the joined ASCII bytes and finding nothing left is ~8x faster than the regex
    over 32 kB of an envelope's hashes (0.28 us per record; bench/RESULTS.md, "ingest6")."""
    if not set(map(len, values)) <= {64}:
        return False
    joined = "".join(values)
    return joined.isascii() and not joined.encode("ascii").translate(None, _HEX_DIGITS)


def accepts(body: Any) -> bool:
    """True when a parsed `rec` message (canonical, so parsed from exactly these bytes) certainly
    passes the strict model records.Envelope. False means "ask the reference", not "invalid"."""
    try:
        env = msgspec.convert(body, _Envelope, strict=True)
    except msgspec.ValidationError:
        return False
    return _sound(env)


_decode = msgspec.json.Decoder(_Envelope).decode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def decode(raw: bytes) -> _Envelope | None:
    """The envelope of the wire bytes `raw` as these structs, when the bytes are certainly
    canonical (protocols/canonical.py) and the envelope certainly valid by the strict models;
    None means "take the reference path", not "invalid". The caller checks the size first.

    Canonical: the bytes are the structs encoded again with keys sorted. That equals what
    parse_canonical compares with (orjson) for bytes without a backslash: no string then holds
    an escape, which is where the two encoders could write a string apart (a lone surrogate, for
    one); both write every other character as its UTF-8 (a Chinese user name too), the encoder
    writes only valid UTF-8 (so equal bytes are valid UTF-8, which orjson reads), and sorting
    keys (ASCII: the schema's names and patterns) is the same in both. Bytes with a backslash
    (an escaped quote or control character) take the reference path."""
    if b"\\" in raw:
        return None
    try:
        env = _decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if _encode_sorted(env) != raw or not _sound(env):
        return None
    return env


def typed(records: Sequence[Any]) -> bool:
    """Whether an opened envelope's records are these structs (from `decode`), not parsed dicts."""
    return bool(records) and isinstance(records[0], _Rec)


def _sound(env: _Envelope) -> bool:
    """The checks the struct types do not make: patterns of strings (once per distinct value),
    the reference's model validators, one agent throughout."""
    agent = env.agent
    ids = {agent, env.unit, env.instrument}
    names: set[str] = set()
    units: set[str] = set()
    hashes: list[str] = []
    for r in env.records:
        if r.agent != agent:
            return False  # let the reference decide which refusal comes first
        hashes.append(r.prev)
        t = type(r)
        if t is _Heartbeat or t is _State:
            ev = r.evidence  # type: ignore[union-attr]
            names.update(ev)
            for inner in ev.values():
                names.update(inner)
        elif t is _SessionStart:
            ids.add(r.session)  # type: ignore[union-attr]
            # the reference's model validator
            if r.method == "card" and not r.user.startswith("hmac-sha256:"):  # type: ignore[union-attr]
                return False
        elif t is _SessionEnd:
            ids.add(r.session)  # type: ignore[union-attr]
        elif t is _Sample:
            names.add(r.signal)  # type: ignore[union-attr]
            units.add(r.unit)  # type: ignore[union-attr]
        elif t is _Lifecycle:
            names.update(r.detail)  # type: ignore[union-attr]
        elif t is _SpoolOverflow:
            for d in r.dropped:  # type: ignore[union-attr]
                if d.last < d.first:  # the reference's model validator
                    return False
                hashes.append(d.last_hash)
    return (
        _KEY_ID.fullmatch(env.key) is not None
        and _SIG.fullmatch(env.sig) is not None
        and _hashes_ok(hashes)
        and _all_match(_ID, ids)
        and _all_match(_NAME, names)
        and _all_match(_UNIT, units)
    )
