"""Why a message was refused: one reason code per failure, shared by ingest, quarantine and metrics."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    NOT_CANONICAL = "not_canonical"
    UNSUPPORTED_VERSION = "unsupported_version"
    SCHEMA = "schema"
    UNKNOWN_TYPE = "unknown_type"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_AGENT = "unknown_agent"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_AGENT = "revoked_agent"
    WRONG_TOPIC = "wrong_topic"
    WRONG_AGENT = "wrong_agent"
    SEQ_OUT_OF_ORDER = "seq_out_of_order"
    SEQ_GAP = "seq_gap"
    CHAIN_BROKEN = "chain_broken"
    SEQ_CONFLICT = "seq_conflict"
    REPLAY = "replay"


class ProtocolError(ValueError):
    """A message that must be refused, with the reason code and, where it applies, the field."""

    def __init__(self, reason: Reason, detail: str, field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        where = f" at {field}" if field else ""
        super().__init__(f"{reason.value}{where}: {detail}")
