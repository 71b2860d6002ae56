"""The envelope files of an evidence bundle: what the server's exporter writes and anyone's verifier reads.

Each file is a run of entries
    envelope id (int64 BE) | received_at (int64 BE, microseconds since 1970 UTC) | length (uint32 BE) | bytes
in ascending id. Standard library only: the offline verifier (server/exports/verify.py) runs on an
evaluator's PC with the core package and imports no server module.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import datetime

ENTRY = struct.Struct(">qqI")


def pack_entry(envelope_id: int, received_us: int, raw: bytes) -> bytes:
    """One entry: header and the envelope's bytes as received."""
    return ENTRY.pack(envelope_id, received_us, len(raw)) + raw


def entries(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(envelope id, received_at µs, bytes) of each entry; ValueError on a truncated file."""
    pos = 0
    while pos < len(data):
        if pos + ENTRY.size > len(data):
            raise ValueError("truncated envelope file")
        eid, us, n = ENTRY.unpack_from(data, pos)
        pos += ENTRY.size
        yield eid, us, data[pos : pos + n]
        pos += n


def iso_to_ms(text: str) -> int:
    """A manifest's ISO 8601 time (with offset) as UTC milliseconds, as records carry time."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)
