"""The strict pydantic models of every message. The JSON Schemas in `schemas/` are generated from these.

Strict: unknown members, wrong types (no coercion: "5" is not 5, true is not 1) and values out of
range are errors that name the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from protocols.canonical import MAX_SAFE_INT
from protocols.envelope import MAX_RECORDS

MIN_T = 1_577_836_800_000  # 2020-01-01T00:00:00Z in ms
MAX_T = 4_102_444_800_000  # 2100-01-01T00:00:00Z in ms

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
KeyId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{86}$")]
Text = Annotated[str, StringConstraints(max_length=256)]
Millis = Annotated[int, Field(ge=MIN_T, le=MAX_T, description="UTC time, milliseconds since 1970-01-01")]
Seq = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Scalar = Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)] | bool | Text | None
Evidence = Annotated[dict[Name, Scalar], Field(max_length=16)]
EvidenceByDetector = Annotated[dict[Name, Evidence], Field(max_length=16)]

State = Literal["off", "idle", "running", "fault", "unknown"]
IdMethod = Literal["os", "checkin", "card", "booking"]
EndReason = Literal["checkout", "idle_timeout", "os_logout", "card", "replaced", "agent_stop"]
LifecycleEvent = Literal["boot", "stop", "config", "clock", "detector_error"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RecordBase(_Strict):
    agent: Id
    boot: Seq = Field(description="boot counter of the agent when the record was made")
    seq: Seq = Field(description="contiguous per agent for its whole life, from 1")
    t: Millis = Field(description="UTC event time by the agent's clock")
    mono: Count = Field(description="agent monotonic clock, ms since this boot started")
    prev: Hash = Field(description="SHA-256 (hex) of the previous record's canonical bytes; 64 zeros for seq 1")


class StateRecord(RecordBase):
    """The instrument changed state; `evidence` holds what each detector saw when it was decided."""

    type: Literal["state"]
    state: State
    prev_state: State
    rule: Text
    evidence: EvidenceByDetector


class HeartbeatRecord(RecordBase):
    """The agent was watching for `period_ms` up to `t`; evidence summarises that period."""

    type: Literal["heartbeat"]
    state: State
    period_ms: Count
    evidence: EvidenceByDetector


class SessionStartRecord(RecordBase):
    type: Literal["session_start"]
    session: Id
    method: IdMethod
    user: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="OS user name, platform account or booking code; card numbers only as 'hmac-sha256:<hex>'"
    )

    @model_validator(mode="after")
    def _card_is_hashed(self) -> SessionStartRecord:
        if self.method == "card" and not self.user.startswith("hmac-sha256:"):
            raise ValueError("a card user must be sent as a keyed hash 'hmac-sha256:<hex>'")
        return self


class SessionEndRecord(RecordBase):
    type: Literal["session_end"]
    session: Id
    reason: EndReason


class SampleRecord(RecordBase):
    """Readings of one signal at a fixed step from `start` (scaled integers, unit named)."""

    type: Literal["sample"]
    signal: Name
    unit: Annotated[str, StringConstraints(pattern=r"^[A-Za-z%/_0-9]{1,16}$")]
    start: Millis
    step_ms: Annotated[int, Field(ge=1, le=86_400_000)]
    values: Annotated[list[Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)] | None], Field(max_length=3600)]


class LifecycleRecord(RecordBase):
    """Agent lifecycle: boot, clean stop, config change, clock adjustment, a detector failing."""

    type: Literal["lifecycle"]
    event: LifecycleEvent
    detail: Evidence


class DroppedRange(_Strict):
    first: Seq
    last: Seq
    last_hash: Hash = Field(description="hash of record `last`, so the chain continues past the hole")

    @model_validator(mode="after")
    def _ordered(self) -> DroppedRange:
        if self.last < self.first:
            raise ValueError("last must be >= first")
        return self


class SpoolOverflowRecord(RecordBase):
    """The spool limit was reached and these sample records were deleted unsent."""

    type: Literal["spool_overflow"]
    dropped: Annotated[list[DroppedRange], Field(min_length=1, max_length=256)]


Record = Annotated[
    StateRecord
    | HeartbeatRecord
    | SessionStartRecord
    | SessionEndRecord
    | SampleRecord
    | LifecycleRecord
    | SpoolOverflowRecord,
    Field(discriminator="type"),
]
RECORD_TYPES = (
    "state",
    "heartbeat",
    "session_start",
    "session_end",
    "sample",
    "lifecycle",
    "spool_overflow",
)


class _Signed(_Strict):
    v: Literal[1]
    agent: Id
    key: KeyId = Field(description="id of the signing key: first 16 hex digits of SHA-256 of the raw public key")
    unit: Id
    instrument: Id
    boot: Seq
    sig: Signature = Field(description="Ed25519 over the canonical bytes of the message without `sig`")


class Envelope(_Signed):
    msg: Literal["rec"]
    sent: Millis
    records: Annotated[list[Record], Field(min_length=1, max_length=MAX_RECORDS)]


class Birth(_Signed):
    msg: Literal["birth"]
    conn: Seq = Field(description="connection counter within this boot (Sparkplug bdSeq)")
    t: Millis
    next_seq: Seq
    spool_first: Seq = Field(description="lowest seq still held by the agent; equals next_seq when empty")
    acked: Count
    sw: Annotated[str, StringConstraints(max_length=32)]


class Death(_Signed):
    msg: Literal["death"]
    conn: Seq
    t: Millis = Field(description="when signed: the connect time for a Will, the stop time for a clean stop")
    clean: bool


class Ack(_Strict):
    v: Literal[1]
    msg: Literal["ack"]
    agent: Id
    acked: Count = Field(description="every seq <= acked is durably stored by the server")
    t: Millis


class Command(_Strict):
    v: Literal[1]
    msg: Literal["cmd"]
    agent: Id
    cmd: Literal["resend", "rebirth", "checkin", "checkout"]
    t: Millis
    first: Seq | None = None
    last: Seq | None = None
    # checkin / checkout (SPEC §9.5): signed by the server's command key
    key: KeyId | None = None
    unit: Id | None = None
    instrument: Id | None = None
    id: str | None = Field(None, pattern=r"^[0-9a-f]{16}$", description="the command's id")
    n: Seq | None = Field(None, description="per-agent command sequence: the agent refuses n <= the last it took")
    exp: Millis | None = Field(None, description="the agent refuses the command after this time")
    method: Literal["checkin", "booking"] | None = None
    user: str | None = Field(None, min_length=1, max_length=128)
    session: Id | None = None
    sig: Signature | None = None

    @model_validator(mode="after")
    def _range(self) -> Command:
        if self.cmd == "resend" and (self.first is None or self.last is None or self.last < self.first):
            raise ValueError("resend needs first <= last")
        if self.cmd in ("checkin", "checkout") and None in (
                self.key, self.unit, self.instrument, self.id, self.n, self.exp, self.method, self.user,
                self.session, self.sig):
            raise ValueError("checkin and checkout need key, unit, instrument, id, n, exp, method, user, "
                             "session and sig")
        return self


MESSAGE_MODELS: dict[str, type[_Strict]] = {
    "rec": Envelope,
    "birth": Birth,
    "death": Death,
    "ack": Ack,
    "cmd": Command,
}
