"""How the `records` table encodes a record's type, state and hash (migration 002)."""

from __future__ import annotations

TYPE_CODES = {"state": 1, "heartbeat": 2, "session_start": 3, "session_end": 4, "sample": 5, "lifecycle": 6,
              "spool_overflow": 7}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items()}
STATE_CODES = {"off": 0, "idle": 1, "running": 2, "fault": 3, "unknown": 4}


def short_hash(hex_hash: str) -> int:
    """The first 8 bytes of a hex SHA-256 as a signed 64-bit integer (the `records.h` column)."""
    v = int(hex_hash[:16], 16)
    return v - (1 << 64) if v >= (1 << 63) else v
