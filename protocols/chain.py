"""The per-agent hash chain: every record names the SHA-256 of its predecessor's canonical bytes.

Deleting, inserting or reordering records anywhere in an agent's history breaks a link, so
whoever holds the records can check them without trusting the database they came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from protocols.canonical import dumps_sorted
from protocols.errors import ProtocolError, Reason

GENESIS = "0" * 64


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(dumps_sorted(dict(record))).hexdigest()


def check_run(
    records: Iterable[Mapping[str, Any]], prev_hash: str | None = None, hashes: Sequence[str] | None = None
) -> str:
    """Check that records are contiguous in seq and linked; return the hash of the last one.

    `prev_hash` is the hash of the record before the first one when it is known (None when it is
    not, e.g. the predecessor has not arrived yet); `hashes` are the records' hashes when the
    caller has them already. Raises ProtocolError naming the broken link.
    """
    records = list(records)
    for i in range(1, len(records)):
        if records[i]["seq"] <= records[i - 1]["seq"]:
            raise ProtocolError(
                Reason.SEQ_OUT_OF_ORDER,
                f"seq {records[i]['seq']} after {records[i - 1]['seq']}",
                f"records[{i}].seq",
            )
    last_seq: int | None = None
    last_hash = prev_hash
    for i, rec in enumerate(records):
        seq = rec["seq"]
        if last_seq is not None and seq != last_seq + 1:
            raise ProtocolError(Reason.SEQ_GAP, f"seq {seq} follows {last_seq}: records missing", f"records[{i}].seq")
        if seq == 1 and rec["prev"] != GENESIS:
            raise ProtocolError(Reason.CHAIN_BROKEN, "the first record must link to GENESIS", f"records[{i}].prev")
        if last_hash is not None and rec["prev"] != last_hash:
            raise ProtocolError(
                Reason.CHAIN_BROKEN,
                f"seq {seq} links to {rec['prev'][:12]}…, predecessor hashes to {last_hash[:12]}…",
                f"records[{i}].prev",
            )
        last_seq = seq
        last_hash = hashes[i] if hashes is not None else record_hash(rec)
    if last_hash is None:
        raise ProtocolError(Reason.SCHEMA, "no records", "records")
    return last_hash
