"""A signature has exactly one spelling on the wire.

86 base64url characters carry 516 bits for a 64-byte signature: the last character has 4 unused
bits, and `protocols.signing.b64d` (base64.urlsafe_b64decode) ignores them. So 16 different
envelopes carry the same valid signature. Nothing new can be forged with this, but the replay check
(docs/ingest.md "Replay": the bytes must be identical to the stored envelope) no longer sees a
replayed old envelope whose last signature character was changed: it is counted as duplicates and
acked instead of being quarantined as `replay`.
"""

from __future__ import annotations

import orjson

from protocols.signing import b64d, b64e, key_id, public_to_b64
from server.db.queries import AgentRow, KeyRow
from server.ingest.verify import EnvelopeIn, Incoming, KeyCache, Opening, authenticate, open_any
from tests.server.helpers import T0, TestAgent

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _respelled(payload: bytes) -> bytes:
    sig: str = orjson.loads(payload)["sig"]
    i = ALPHABET.index(sig[-1])
    other = sig[:-1] + ALPHABET[i ^ 1]  # flips one of the 4 unused low bits
    assert other != sig and b64d(other) == b64d(sig) and b64e(b64d(other)) == sig
    return payload.replace(f'"sig":"{sig}"'.encode(), f'"sig":"{other}"'.encode())


def test_canonical_spelling_is_accepted() -> None:
    a = TestAgent("spell", unit="u")
    payload = a.seal([a.state(T0, "idle")])
    o = open_any(Incoming(a.topic(), payload, 0.0))
    assert isinstance(o, Opening)
    rows = ({a.agent: AgentRow(a.agent, a.instrument, a.unit, False)},
            {key_id(a.key): KeyRow(key_id(a.key), a.agent, public_to_b64(a.key), False)})
    assert isinstance(authenticate(o, *rows, KeyCache()), EnvelopeIn)


def test_other_spelling_of_a_valid_signature_is_refused() -> None:
    a = TestAgent("spell", unit="u")
    payload = _respelled(a.seal([a.state(T0, "idle")]))
    o = open_any(Incoming(a.topic(), payload, 0.0))
    rows = ({a.agent: AgentRow(a.agent, a.instrument, a.unit, False)},
            {key_id(a.key): KeyRow(key_id(a.key), a.agent, public_to_b64(a.key), False)})
    assert not isinstance(o, Opening) or not isinstance(authenticate(o, *rows, KeyCache()), EnvelopeIn)
