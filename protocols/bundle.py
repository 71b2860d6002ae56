"""The files of an evidence bundle: what the server's exporter writes and anyone's verifier reads.

Version 2 (compact, SPEC.md §14): per agent a record stream and its signed heads.

- records/<agent>.xz: xz (stdlib lzma) of one line per stored record in ascending seq,
  `<lag> <record>\\n`: lag = receive time in µs minus 1000 × the record's `t` (decimal, may be
  negative); record = the record's canonical bytes, except that `prev` is `""` when it is the hash
  of the record on the line before and that line's seq is seq - 1 (a `prev` is derivable from its
  predecessor, and 64 hex digits of pure entropy would be most of the stream).
- heads/<agent>.json: the envelopes whose signatures close the stream (each day, each run before
  a hole), each without its records: `{first, last, key, unit, instrument, boot, sent, sig}`.
  The envelope is rebuilt from those members and the stream's records first..last.

Version 1 (still read): envelopes/<agent>.bin, a run of entries
    envelope id (int64 BE) | received_at (int64 BE, microseconds since 1970 UTC) | length (uint32 BE) | bytes
in ascending id. The same entries carry full envelopes on request (disputes).

Standard library and `protocols` only: the offline verifier (server/exports/verify.py) runs on an
evaluator's PC with the core package and imports no server module.
"""

from __future__ import annotations

import gc
import hashlib
import lzma
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from protocols.canonical import dumps_sorted

ENTRY = struct.Struct(">qqI")
HEAD_MEMBERS = ("first", "last", "key", "unit", "instrument", "boot", "sent", "sig")


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
        if pos + n > len(data):
            raise ValueError("truncated envelope file")
        yield eid, us, data[pos : pos + n]
        pos += n


def iso_to_ms(text: str) -> int:
    """A manifest's ISO 8601 time (with offset) as UTC milliseconds, as records carry time."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# -- version 2: record stream and heads ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One line of a record stream, restored: the record as signed, its hash and receive time (µs)."""

    record: dict[str, Any]
    hash: str
    received_us: int
    elided: bool  # its `prev` was elided (so it links to the line before by construction)


def encode_stream(records: Iterable[tuple[Mapping[str, Any], int]]) -> bytes:
    """The records file of one agent from (record, received µs) in ascending seq."""
    lines: list[bytes] = []
    prev_seq, prev_hash = 0, ""
    for rec, received_us in records:
        raw = dumps_sorted(rec)
        h = hashlib.sha256(raw).hexdigest()
        if rec["seq"] == prev_seq + 1 and rec.get("prev") == prev_hash:
            raw = dumps_sorted({**rec, "prev": ""})
        lines.append(b"%d %s\n" % (received_us - 1000 * int(rec["t"]), raw))
        prev_seq, prev_hash = int(rec["seq"]), h
    return lzma.compress(b"".join(lines), format=lzma.FORMAT_XZ, preset=0)


class StreamError(ValueError):
    """A records file that cannot be read back (its line number, 1-based, when known)."""

    def __init__(self, detail: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {detail}" if line else detail)


def decode_stream(blob: bytes) -> list[StreamRecord]:
    """Restore a records file: decompress, parse each line, fill elided `prev`s, hash each record.

    Raises StreamError for a truncated or corrupt file, a malformed line, or an elided `prev` whose
    line before is not seq - 1 (a record dropped or moved)."""
    try:
        text = lzma.decompress(blob, format=lzma.FORMAT_XZ)
    except lzma.LZMAError as exc:
        raise StreamError(f"truncated or corrupt xz stream ({exc})") from None
    if text and not text.endswith(b"\n"):
        raise StreamError("the last line is cut off (truncated file)")
    # a year is ~100,000 records of nested dicts and none of them cyclic: without the cycle
    # collector re-scanning them all at every threshold, restoring is several times faster
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _decode_lines(text)
    finally:
        if enabled:
            gc.enable()


def _decode_lines(text: bytes) -> list[StreamRecord]:
    out: list[StreamRecord] = []
    prev_seq, prev_hash = 0, ""
    for n, line in enumerate(text.splitlines(), 1):
        lag, sep, raw = line.partition(b" ")
        try:
            rec = orjson.loads(raw)
            received_us = int(lag)
        except (orjson.JSONDecodeError, ValueError):
            raise StreamError("not `<lag> <record>`", n) from None
        if not sep or not isinstance(rec, dict) or not isinstance(rec.get("seq"), int) or not isinstance(
                rec.get("t"), int):
            raise StreamError("not a record with an integer seq and t", n)
        if dumps_sorted(rec) != raw:
            raise StreamError("the record is not in canonical form", n)
        elided = rec.get("prev") == ""
        if elided:
            if rec["seq"] != prev_seq + 1 or not out:
                raise StreamError(f"seq {rec['seq']} links to the line before, which is seq {prev_seq}, "
                                  f"not {rec['seq'] - 1} (a record was dropped or moved)", n)
            rec["prev"] = prev_hash
        h = hashlib.sha256(dumps_sorted(rec)).hexdigest()
        out.append(StreamRecord(rec, h, received_us + 1000 * rec["t"], elided))
        prev_seq, prev_hash = rec["seq"], h
    return out


def head_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The head of a stored envelope (parsed): everything but its records, plus their seq range."""
    recs = body["records"]
    return {"first": recs[0]["seq"], "last": recs[-1]["seq"], "key": body["key"], "unit": body["unit"],
            "instrument": body["instrument"], "boot": body["boot"], "sent": body["sent"], "sig": body["sig"]}


def head_body(agent: str, head: Mapping[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The envelope's members but `sig`, from its head and its records: its signed bytes are
    the canonical bytes of this."""
    return {"v": 1, "msg": "rec", "agent": agent, "key": head["key"], "unit": head["unit"],
            "instrument": head["instrument"], "boot": head["boot"], "sent": head["sent"], "records": records}


def rebuild_envelope(agent: str, head: Mapping[str, Any], records: list[dict[str, Any]]) -> bytes:
    """The envelope's wire bytes from its head and its records (as the agent sealed them)."""
    return dumps_sorted({**head_body(agent, head, records), "sig": head["sig"]})
