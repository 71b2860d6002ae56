"""Issue 13 item 8: a record altered after signing, anywhere in a multi-record envelope, is refused
as `bad_signature` (SPEC §6.2 checks the signature before the records' chain), not `chain_broken`.
The old ingest opened the records' chain first, and the existing test only tampered one-record
envelopes, where both orders give the same answer."""

from __future__ import annotations

import time

import orjson
import psycopg
import pytest

from protocols.canonical import canonical
from protocols.errors import Reason
from server.ingest.worker import Pipeline
from tests.server.helpers import TestAgent, register, settings_for

S = 1000


def _tampered(payload: bytes, index: int) -> bytes:
    body = orjson.loads(payload)
    rec = body["records"][index]
    rec["state"] = "running" if rec["state"] != "running" else "idle"  # the signature stays the old one
    return canonical(body)


@pytest.mark.parametrize("index", [0, 249, 499])
def test_a_record_altered_in_a_500_record_envelope_is_a_bad_signature(fresh_db: str, index: int) -> None:
    a = TestAgent("sig-a", unit="u-sig", instrument="i-sig")
    register(fresh_db, a, org="org-sig")
    now = int(time.time() * 1000)
    records = [a.heartbeat(now - (600 - i) * S, "idle") for i in range(500)]
    payload = a.seal(records, sent=now)
    forged = _tampered(payload, index)
    assert forged != payload
    pipeline = Pipeline(settings_for(fresh_db), "t")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        out = pipeline.process(conn, [a.msg(forged, now)])
        assert [(r.reason, r.field) for r in out.rejections] == [(Reason.BAD_SIGNATURE, "sig")]
        assert out.records == 0
        reason = conn.execute("SELECT reason FROM quarantine").fetchall()
        assert reason == [(str(Reason.BAD_SIGNATURE),)]
        # the untouched envelope is stored whole: the check is not refusing big envelopes
        out = pipeline.process(conn, [a.msg(payload, now)])
        assert out.rejections == [] and out.records == 500


def test_a_signed_but_broken_chain_is_still_chain_broken(fresh_db: str) -> None:
    """The signature first does not hide a chain the agent itself signed broken."""
    a = TestAgent("sig-b", unit="u-sig", instrument="i-sig")
    register(fresh_db, a, org="org-sig")
    now = int(time.time() * 1000)
    records = [a.heartbeat(now - (60 - i) * S, "idle") for i in range(10)]
    records[5]["prev"] = "e" * 64
    payload = a.seal(records, sent=now)  # signed as it is: the agent's own broken chain
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        out = Pipeline(settings_for(fresh_db), "t").process(conn, [a.msg(payload, now)])
    assert [r.reason for r in out.rejections] == [Reason.CHAIN_BROKEN]
