"""Opening incoming messages: size, canonical form, version, schema, records' own chain.

Signature checks need the registered key, so they are a separate step (`check_signature`); the
server's ingest calls both, the offline verifier too.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

import msgspec
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from protocols import PROTOCOL_VERSION, fastcheck
from protocols.canonical import parse_canonical
from protocols.chain import GENESIS, check_run
from protocols.envelope import MAX_CONTROL_BYTES, MAX_ENVELOPE_BYTES, MAX_RECORD_BYTES, signed_bytes
from protocols.errors import ProtocolError, Reason
from protocols.records import MESSAGE_MODELS, RECORD_TYPES, Envelope
from protocols.signing import verify

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Opened:
    """A structurally valid envelope: the parsed body, each record's hash and, on demand, the model.

    `model` is the strict model when it was built while opening; None when the fast check
    (protocols/fastcheck.py) accepted the bytes, and `envelope` builds it when first asked for
    (the ingest hot path never asks: it reads the checked body). Opened by `open_typed`, the
    body's records may be fastcheck's structs, which read by key like the dicts."""

    model: Envelope | None
    raw: bytes
    body: dict[str, Any]
    hashes: list[str]

    @functools.cached_property
    def envelope(self) -> Envelope:
        return self.model if self.model is not None else Envelope.model_validate(orjson.loads(self.raw))

    @property
    def first_seq(self) -> int:
        return int(self.body["records"][0]["seq"])

    @property
    def last_seq(self) -> int:
        return int(self.body["records"][-1]["seq"])


KeyLookup = Callable[[str, str], Ed25519PublicKey]


def open_envelope(data: bytes, max_bytes: int = MAX_ENVELOPE_BYTES, key_for: KeyLookup | None = None,
                  *, defer_records: bool = False) -> Opened:
    """Check a `rec` message in the order that gives the truest reason for a refusal.

    Size, canonical form, version, schema; then, when `key_for(agent, key_id)` is given, the
    signature (it raises ProtocolError for an unknown or revoked agent or key); then the records'
    own agent, sizes and chain. A record altered after signing is thus a bad signature, not a
    broken link. A receiver that checks the signature later (the server's ingest looks keys up per
    batch) passes `defer_records=True` and calls `check_records` after the signature (§6.2);
    the Opened it gets until then has no hashes.
    """
    body = _parse(data, max_bytes, "rec")
    # the fast check only accepts; anything it does not accept gets the reference models, which
    # refuse with the reason as always (or accept: then only the fast check was too cautious).
    # What it accepts has only records of known types, so the unknown-type check (which comes
    # before the schema's) can refuse nothing then and is skipped (~0.06 us per record).
    model = None
    if not fastcheck.accepts(body):
        records = body.get("records")
        # anything but a list is the schema's refusal (an int here once stopped ingest's open thread)
        for i, rec in enumerate(records if isinstance(records, list) else ()):
            if isinstance(rec, dict) and rec.get("type") not in RECORD_TYPES:
                raise ProtocolError(
                    Reason.UNKNOWN_TYPE, f"record type {rec.get('type')!r} is not defined in v1",
                    f"records[{i}].type",
                )
        model = _model(Envelope, body)
    if key_for is not None:
        check_signature(body, key_for(body["agent"], body["key"]))
    if defer_records:
        return Opened(model=model, raw=data, body=body, hashes=[])
    return Opened(model=model, raw=data, body=body, hashes=check_records(model, body, data))


def open_typed(data: bytes, max_bytes: int = MAX_ENVELOPE_BYTES) -> Opened:
    """`open_envelope(data, max_bytes, defer_records=True)` as the ingest calls it: the same
    checks and refusals, but an envelope that fastcheck.decode takes in one pass (the usual
    case) keeps its records as fastcheck's structs: no dict per record, no second decode
    (bench/RESULTS.md, "typed"). Anything it does not take goes the reference way."""
    env = fastcheck.decode(data) if len(data) <= max_bytes else None
    if env is None:
        return open_envelope(data, max_bytes, defer_records=True)
    return Opened(model=None, raw=data, body={f: getattr(env, f) for f in env.__struct_fields__}, hashes=[])


def check_records(env: Envelope | None, body: dict[str, Any], raw: bytes | None = None) -> list[str]:
    """The records' own checks (§6.2, after the signature): agent, boot, size, seq and chain.
    Returns each record's hash. Reads the body, which the schema check has passed (so its values
    are those of the model; `env` is not needed and may be None). `raw`: the bytes `body` was
    parsed from by parse_canonical (so they are its canonical encoding), when at hand: each
    record is then hashed as its slice of them instead of being encoded again."""
    hashes = _records_if_sound(body, raw)
    if hashes is not None:
        return hashes
    if fastcheck.typed(body["records"]):  # the same values as dicts (raw: canonical, checked when opened)
        body = orjson.loads(raw) if raw is not None else msgspec.to_builtins(body)
    # something is wrong: the checks one after the other, for the first refusal in their order
    hashes = []
    append = hashes.append
    sha256, dumps, sort_keys = hashlib.sha256, orjson.dumps, orjson.OPT_SORT_KEYS
    agent, boot = body["agent"], body["boot"]
    for i, rec in enumerate(body["records"]):
        if rec["agent"] != agent:
            raise ProtocolError(
                Reason.WRONG_AGENT,
                f"record of agent {rec['agent']!r} in an envelope of {agent!r}",
                f"records[{i}].agent",
            )
        if rec["boot"] > boot:
            raise ProtocolError(Reason.SCHEMA, "record from a later boot than the envelope", f"records[{i}].boot")
        encoded = dumps(rec, option=sort_keys)  # = dumps_sorted(rec), without a call per record
        if len(encoded) > MAX_RECORD_BYTES:
            raise ProtocolError(
                Reason.OVERSIZED, f"record is {len(encoded)} bytes, limit {MAX_RECORD_BYTES}", f"records[{i}]"
            )
        append(sha256(encoded).hexdigest())
    check_run(body["records"], hashes=hashes)
    return hashes


_RECORDS_OPEN = b'"records":[{'
_RECORDS_CLOSE = b'}],"sent":'
_RECORD_SEP = b'},{"agent":"'
_RECORD_HEAD = b'{"agent":"'


def record_slices(raw: bytes, n: int) -> list[bytes] | None:
    """The canonical bytes of each of the `n` records of a schema-valid `rec` envelope, cut out of
    the envelope's canonical bytes `raw` (= dumps_sorted of each record: sorting keys is
    recursive and adds no white space, so a record's encoding is its slice of the envelope's).

    Why the cuts are exact: inside a JSON string every `"` is escaped as `\\"`, so a `"` after
    `{` or `[` delimits a string and the bytes around it are structure. `"records":[{` is then the
    top-level key (no other object of the schema has an array of objects under that name),
    `}],"sent":` the end of its array (the last one: `sent` follows `records` at the top level),
    and `},{"agent":"` a boundary between two objects of an array whose objects start with the key
    `agent`: only records do (`dropped` holds first/last/last_hash, evidence is objects of
    scalars). None when the shape is not that (then encode each record: the caller's slow path)."""
    start = raw.find(_RECORDS_OPEN)
    end = raw.rfind(_RECORDS_CLOSE)
    if start < 0 or end < start:
        return None
    parts = raw[start + len(_RECORDS_OPEN) - 1:end + 1].split(_RECORD_SEP)
    if len(parts) != n:
        return None
    if n == 1:
        return parts
    head = _RECORD_HEAD
    out = [parts[0] + b"}"]
    out += [head + p + b"}" for p in parts[1:-1]]
    out.append(head + parts[-1])
    return out


def _records_if_sound(body: dict[str, Any], raw: bytes | None = None) -> list[str] | None:
    """The records' hashes when every check of check_records passes, in one loop over the
    records (the usual case); None at the first doubt, and check_records names the refusal."""
    records = body["records"]
    if not records:
        return None
    hashes: list[str] = []
    append = hashes.append
    sha256, dumps, sort_keys = hashlib.sha256, orjson.dumps, orjson.OPT_SORT_KEYS
    agent, boot = body["agent"], body["boot"]
    last_seq = records[0]["seq"] - 1
    last_hash = GENESIS if last_seq == 0 else records[0]["prev"]
    typed = fastcheck.typed(records)
    slices = record_slices(raw, len(records)) if raw is not None else None
    if slices is None and typed:
        return None  # the slow path encodes each record, of the dicts
    encodings = slices if slices is not None else (dumps(rec, option=sort_keys) for rec in records)
    for (rec_agent, rec_boot, seq, prev), encoded in zip(map(_LINK_ATTRS if typed else _LINK_KEYS, records),
                                                         encodings, strict=True):
        if (rec_agent != agent or rec_boot > boot or len(encoded) > MAX_RECORD_BYTES
                or seq != last_seq + 1 or prev != last_hash):
            return None
        last_seq = seq
        last_hash = sha256(encoded).hexdigest()
        append(last_hash)
    return hashes


_LINK_KEYS = itemgetter("agent", "boot", "seq", "prev")
_LINK_ATTRS = attrgetter("agent", "boot", "seq", "prev")
"""what the records' own checks read of each record: of a parsed dict, of a fastcheck struct"""


def open_message(data: bytes, model: type[M]) -> M:
    """Open a birth, death, ack or command message (no signature check)."""
    kind = next(k for k, m in MESSAGE_MODELS.items() if m is model)
    return _model(model, _parse(data, MAX_CONTROL_BYTES, kind))


def check_signature(body: dict[str, Any], key: Ed25519PublicKey) -> None:
    if not verify(key, signed_bytes(body), body.get("sig", "")):
        raise ProtocolError(Reason.BAD_SIGNATURE, "signature does not verify with the registered key", "sig")


def _parse(data: bytes, max_bytes: int, kind: str) -> dict[str, Any]:
    body = parse_canonical(data, max_bytes)
    version = body.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(Reason.UNSUPPORTED_VERSION, f"v={version!r}, this server speaks v{PROTOCOL_VERSION}", "v")
    if body.get("msg") != kind:
        raise ProtocolError(Reason.SCHEMA, f"msg={body.get('msg')!r} on a {kind!r} topic", "msg")
    return body


def _model(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"] if not _is_tag(p))
        raise ProtocolError(Reason.SCHEMA, f"{err['msg']} ({exc.error_count()} error(s))", field or None) from None


def _is_tag(part: object) -> bool:
    return isinstance(part, str) and part in RECORD_TYPES
