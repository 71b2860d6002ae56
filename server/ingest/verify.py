"""Checks that need no stored records: structure, registration, key, signature, topic.

Order (SPEC §6.2): protocols.validate opens the message (size, canonical form, version, schema,
unknown type); then the agent must be enrolled and not revoked, the key must be the agent's and not
revoked, the signature must verify, the topic, the envelope and the agent's registered instrument
and unit must all agree, and only then the records' own agent, sizes and chain are checked, so a
record altered after signing is `bad_signature` wherever it sits in the envelope. Continuity
with stored records and dedupe come later, under the agent's lock (server/ingest/book.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols import topics
from protocols.errors import ProtocolError, Reason
from protocols.records import Birth, Death
from protocols.signing import public_from_b64, verify
from protocols.validate import Opened, check_records, check_signature, open_message, open_typed
from server.db.queries import AgentRow, KeyRow
from server.ingest.prepared import Prepared, prepare
from server.store.times import s_to_dt, s_to_ms


@dataclass(frozen=True, slots=True)
class Incoming:
    """One MQTT message as received. `received` is the server's receive time (epoch seconds)."""

    topic: str
    payload: bytes
    received: float
    mid: int = 0
    qos: int = 1
    generation: int = 0
    dup: bool = False
    """the broker's redelivery flag: a copy of a message it already tried to deliver to us"""

    @property
    def received_at(self) -> datetime:
        return _received_at(self.received)

    @property
    def received_ms(self) -> int:
        return s_to_ms(self.received)


_received_at = functools.lru_cache(maxsize=4096)(s_to_dt)  # a batch's messages share receive times


@dataclass(frozen=True, slots=True)
class EnvelopeIn:
    msg: Incoming
    opened: Opened
    agent: AgentRow
    prepared: Prepared
    """its records as the database thread stores and derives them (server/ingest/prepared.py)"""


@dataclass(frozen=True, slots=True)
class ControlIn:
    msg: Incoming
    model: Birth | Death
    agent: AgentRow


@dataclass(frozen=True, slots=True)
class Refused:
    msg: Incoming
    kind: str
    reason: str
    detail: str
    field: str | None = None
    agent_id: str | None = None


@dataclass
class Opening:
    """A message whose structure is valid, waiting for the registry checks."""

    msg: Incoming
    kind: topics.Kind
    topic: topics.Topic
    body: dict[str, Any]
    opened: Opened | None
    model: Birth | Death | None
    records_error: ProtocolError | None = None
    """the records' own refusal (chain, ...), reported only once the signature verified (§6.2)"""
    prepared: Prepared | None = None
    """an envelope whose records passed their own checks: its records as the database thread
    uses them, made here while they are hot (server/ingest/prepared.py)"""


def open_any(msg: Incoming) -> Opening | Refused:
    """Pure structural checks of one message, by the kind named in its topic."""
    try:
        top = topics.parse(msg.topic)
    except ValueError as exc:
        return Refused(msg, "unknown", str(Reason.WRONG_TOPIC), str(exc), agent_id=_claimed_agent(msg.payload))
    try:
        if top.kind is topics.Kind.REC:
            opened = open_typed(msg.payload)
            try:  # done here, off the database thread; a refusal waits for the signature check
                opened = replace(opened, hashes=check_records(opened.model, opened.body, opened.raw))
            except ProtocolError as exc:
                return Opening(msg, top.kind, top, opened.body, opened, None, exc)
            return Opening(msg, top.kind, top, opened.body, opened, None, None,
                           prepare(opened.body["records"], opened.hashes, msg.received_ms))
        if top.kind is topics.Kind.BIRTH:
            birth = open_message(msg.payload, Birth)
            return Opening(msg, top.kind, top, orjson.loads(msg.payload), None, birth)
        if top.kind is topics.Kind.DEATH:
            death = open_message(msg.payload, Death)
            return Opening(msg, top.kind, top, orjson.loads(msg.payload), None, death)
        return Refused(msg, top.kind.value, str(Reason.WRONG_TOPIC), f"ingest does not take {top.kind.value!r}")
    except ProtocolError as exc:
        return Refused(msg, top.kind.value, str(exc.reason), exc.detail, exc.field, _claimed_agent(msg.payload))


def signed_slice(raw: bytes, sig: Any) -> bytes | None:
    """The signed bytes of an opened message, cut out of its canonical wire bytes.

    The same bytes as protocols.envelope.signed_bytes(body) - the canonical encoding without the
    `sig` member - without encoding the whole body again (which costs more than verifying for
    an envelope of many records). The wire bytes are canonical (checked when opened), so `sig` is
    the top-level member `,"sig":"<86 chars>"` after `sent`; only `unit` and `v` follow it, whose
    values cannot contain that text. None when the shape is not found: use the slow path.
    """
    if not isinstance(sig, str):
        return None
    needle = b',"sig":"' + sig.encode("ascii", "replace") + b'"'
    i = raw.rfind(needle)
    if i < 0:
        return None
    return raw[:i] + raw[i + len(needle):]


def _claimed_agent(payload: bytes) -> str | None:
    """The agent id a message claims, for the operator's eyes only (nothing is trusted from it)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    agent = body.get("agent") if isinstance(body, dict) else None
    return agent if isinstance(agent, str) and topics.valid_id(agent) else None


class KeyCache:
    """Public key objects by key id (a key's bytes never change; revocation is re-read per batch)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], Ed25519PublicKey] = {}

    def get(self, row: KeyRow) -> Ed25519PublicKey:
        k = (row.key_id, row.public_key)
        key = self._keys.get(k)
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[k] = public_from_b64(row.public_key)
        return key


def authenticate(
    o: Opening, agents: dict[str, AgentRow], keys: dict[str, KeyRow], cache: KeyCache
) -> EnvelopeIn | ControlIn | Refused:
    """Registry, key, signature and topic checks of an opened message."""
    kind = o.kind.value
    agent_id: str = o.body["agent"]
    agent = agents.get(agent_id)

    def refuse(reason: Reason, detail: str, field: str | None = None) -> Refused:
        return Refused(o.msg, kind, str(reason), detail, field, agent_id)

    if agent is None:
        return refuse(Reason.UNKNOWN_AGENT, f"agent {agent_id!r} is not enrolled", "agent")
    if agent.revoked:
        return refuse(Reason.REVOKED_AGENT, f"agent {agent_id!r} is revoked", "agent")
    key_row = keys.get(o.body["key"])
    if key_row is None or key_row.agent_id != agent_id:
        return refuse(Reason.UNKNOWN_KEY, f"key {o.body['key']!r} is not a key of agent {agent_id!r}", "key")
    if key_row.revoked:
        return refuse(Reason.UNKNOWN_KEY, f"key {o.body['key']!r} is revoked", "key")
    try:
        pub = cache.get(key_row)
    except ValueError as exc:
        return refuse(Reason.UNKNOWN_KEY, f"registered key {key_row.key_id!r} is unusable: {exc}", "key")
    signed = signed_slice(o.msg.payload, o.body.get("sig"))
    if signed is None:
        try:  # of the wire bytes parsed again: the body's records may be structs (open_typed)
            check_signature(orjson.loads(o.msg.payload), pub)
        except ProtocolError as exc:
            return refuse(exc.reason, exc.detail, exc.field)
    elif not verify(pub, signed, o.body["sig"]):
        return refuse(Reason.BAD_SIGNATURE, "signature does not verify with the registered key", "sig")
    if (o.topic.unit, o.topic.instrument) != (o.body["unit"], o.body["instrument"]):
        return refuse(Reason.WRONG_TOPIC, f"topic names {o.topic.unit}/{o.topic.instrument}, the message "
                      f"{o.body['unit']}/{o.body['instrument']}", "instrument")
    if (agent.unit_id, agent.instrument_id) != (o.body["unit"], o.body["instrument"]):
        return refuse(Reason.WRONG_TOPIC, f"agent {agent_id!r} is registered for {agent.unit_id}/"
                      f"{agent.instrument_id}, not {o.body['unit']}/{o.body['instrument']}", "instrument")
    if o.records_error is not None:
        # SPEC §6.2: the records' own checks (agent, sizes, seq, chain) count only after the
        # signature, so a record altered after signing anywhere in the envelope is `bad_signature`
        return refuse(o.records_error.reason, o.records_error.detail, o.records_error.field)
    if o.opened is not None:
        assert o.prepared is not None  # an opened envelope without records_error is prepared
        return EnvelopeIn(o.msg, o.opened, agent, o.prepared)
    assert o.model is not None
    return ControlIn(o.msg, o.model, agent)
