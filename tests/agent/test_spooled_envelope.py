"""The publisher builds each envelope from the spooled canonical bytes without parsing them
(agent/publisher.py `seal_records`): the bytes must be exactly those of the old way (the parsed bodies
sealed by protocols.envelope.envelope), for every record type and a real backlog; a spool row that
changed on disk is named in the log and never sent (SPEC.md §9.2)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.publisher import seal_records, unchanged
from agent.signer import AgentKey
from agent.spool import Row
from agent.state import Transition
from protocols import envelope as env
from protocols import vectors
from protocols.signing import b64d, private_from_b64
from protocols.validate import open_envelope
from tests.agent.helpers import Collector, corrupt_spool_row, wait_until
from tests.agent.test_publisher import Harness, harnesses


@pytest.fixture
def harness(tmp_path: Path, mqtt_broker: Any) -> Iterator[Callable[..., Harness]]:
    yield from harnesses(tmp_path, mqtt_broker)


DOC: dict[str, Any] = json.loads(vectors.VECTOR_FILE.read_text(encoding="utf-8"))
IDS = {"agent": "agent-0001", "unit": "IMU", "instrument": "ms-01"}


def old_way(key: Any, boot: int, sent: int, rows: list[Row], ids: dict[str, str]) -> bytes:
    """What `Publisher._send` built before: every body parsed, then sealed (and checked) again."""
    return env.envelope(key=key, boot=boot, sent=sent, records=[orjson.loads(r.body) for r in rows], **ids)


def intact(row: Row) -> bool:
    return unchanged(row.body, row.hash)


def seal_rows(*, rows: list[Row], **header: Any) -> bytes:
    """What the publisher sends for these rows: their bodies as one JSON array, sealed unparsed."""
    return seal_records(records=b"[" + b",".join(r.body for r in rows) + b"]", **header)


def vector_rows() -> list[Row]:
    return [Row(e["record"]["seq"], e["record"]["type"], e["canonical"].encode("utf-8"), e["sha256"])
            for e in DOC["records"]]


@pytest.mark.parametrize("key_kind", ["cryptography", "libsodium"])
def test_the_vector_envelope_is_rebuilt_byte_for_byte(key_kind: str) -> None:
    private = DOC["keys"]["agent"]["private"]
    key = private_from_b64(private) if key_kind == "cryptography" else AgentKey(b64d(private))
    wire = DOC["envelope"]["wire"].encode("utf-8")
    head = orjson.loads(wire)
    rows = vector_rows()
    assert all(intact(r) for r in rows)
    new = seal_rows(key=key, boot=head["boot"], sent=head["sent"], rows=rows, **IDS)
    assert new == wire == old_way(key, head["boot"], head["sent"], rows, IDS)


@pytest.mark.parametrize("entry", DOC["records"], ids=lambda e: e["record"]["type"])
def test_each_record_type_alone_gives_the_old_bytes(entry: dict[str, Any]) -> None:
    key = private_from_b64(DOC["keys"]["agent"]["private"])
    row = Row(entry["record"]["seq"], entry["record"]["type"], entry["canonical"].encode("utf-8"), entry["sha256"])
    new = seal_rows(key=key, boot=1, sent=1767225700000, rows=[row], **IDS)
    assert new == old_way(key, 1, 1767225700000, [row], IDS)
    assert open_envelope(new).hashes == [entry["sha256"]]


def test_a_real_spool_backlog_goes_out_as_the_old_bytes(harness: Any, mqtt_broker: Any, tmp_path: Path) -> None:
    h = harness("backlog1", "batch_records = 50")
    rec = h.rec
    t = rec.clock.now()[0]
    rec.lifecycle("boot", {"reason": "start", "version": "0.1.0", "note": "ünïcode \u2028 \"q\" \\ \x01"})
    for i in range(120):
        rec.heartbeat("idle", 1000, {"power": {"n": i, "mw_avg": -40_000 - i, "ok": i % 2 == 0, "err": None}})
        if i % 10 == 0:
            rec.state(Transition("running", "idle", t - 500, t - 400, 100, edge=t - 450, post_ms=i),
                      "power or software", {"power": {"w": 2**53 - 1}})
            rec.session_start(f"s{i}", "checkin", "用户-" + "x" * 200)
            rec.sample("power_mw", "mW", t, 1000, [None if j % 7 == 0 else j * 1000 for j in range(700)])
            rec.session_end(f"s{i}", "checkout")
    # a hole and its spool_overflow record, as the spool limit leaves them
    h.spool.enforce_limits(h.spool.stats(exact=True).bytes // 2, 10**12, t, rec.overflow_builder)
    rec.lifecycle("stop", {})
    held = h.spool.stats(exact=True).count
    collector = Collector(mqtt_broker, tmp_path, "backlog1", ack=False)  # the spool keeps every row
    try:
        h.start()
        collector.wait_for(lambda c: len(c.records) == held, 15, "the backlog")
    finally:
        collector.close()
    assert not collector.errors
    payloads = collector.payloads
    ids = {"agent": "backlog1", "unit": "u-backlog1", "instrument": "i-backlog1"}
    types = set()
    for payload in payloads:
        head = orjson.loads(payload)
        seqs = [r["seq"] for r in head["records"]]
        rows = h.spool.read(seqs[0], len(seqs), 10**9)
        assert [r.seq for r in rows] == seqs
        assert payload == old_way(h.key, head["boot"], head["sent"], rows, ids)
        types |= {r.type for r in rows}
    assert types == {"lifecycle", "heartbeat", "state", "session_start", "sample", "session_end", "spool_overflow"}
    assert len(payloads) > 3


def backlog(h: Harness) -> None:
    for i in range(30):
        h.rec.heartbeat("idle", 1000, {"power": {"n": i, "mw_avg": 40_000 + i}})


def _changed_json(body: bytes) -> bytes:
    changed = body.replace(b'"mw_avg":400', b'"mw_avg":990')
    assert changed != body
    return changed


CHANGES: dict[str, Callable[[bytes], bytes]] = {
    "still JSON": _changed_json,  # a figure raised: the bytes parse, the hash no longer fits
    "not JSON": lambda body: body[: len(body) // 2],  # a torn write: stopped all publishing before
}


@pytest.mark.parametrize(("change", "seqs"), [
    ("still JSON", [15]),
    ("not JSON", [15]),
    ("not JSON", list(range(12, 26))),  # more changed rows in a row than an envelope holds
    ("still JSON", [1, 30]),  # the first and the last row
], ids=["json", "torn", "run-of-14", "first-and-last"])
def test_a_changed_row_is_never_sent_and_the_rows_around_it_are(
        harness: Any, mqtt_broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        change: str, seqs: list[int]) -> None:
    """SPEC.md §9.2: a spooled record whose bytes no longer hash to its stored hash is not sent,
    neither as it is nor re-encoded; the records around it are, and a resend of it gets nothing.
    The server then records it as a gap (the hole a record the agent cannot give leaves)."""
    caplog.set_level(logging.INFO, logger="jishi.publisher")
    name = f"changed-{len(seqs)}-{seqs[0]}-{change[:3]}"
    h = harness(name, "batch_records = 10")
    backlog(h)
    for seq in seqs:
        corrupt_spool_row(h.cfg.spool_path, seq, CHANGES[change](h.spool.read(seq, 1, 10**6)[0].body))
    assert [r.seq for r in h.spool.read(1, 100, 10**6) if not intact(r)] == seqs
    good = set(range(1, 31)) - set(seqs)
    collector = Collector(mqtt_broker, tmp_path, name)
    try:
        pub = h.start()
        collector.wait_for(lambda c: set(c.records) == good, 15, "every row but the changed ones")
        # a resend of the changed rows alone gets nothing; of a range with more, the rows kept
        # (those below the first changed row are acknowledged and gone from the spool)
        envelopes = collector.envelopes
        collector.command(cmd="resend", first=seqs[0], last=seqs[0])
        collector.command(cmd="resend", first=seqs[0], last=min(seqs[-1] + 1, 30))
        collector.wait_for(lambda c: c.envelopes > envelopes, 10, "the resent rows after")
        h.rec.heartbeat("idle", 1000, {"power": {"n": 99, "mw_avg": 1}})
        collector.wait_for(lambda c: 31 in c.records, 10, "still publishing after the resends")
    finally:
        collector.close()
    assert set(collector.records) == good | {31} and not collector.errors
    assert not any({r["seq"] for r in orjson.loads(p)["records"]} & set(seqs) for p in collector.payloads)
    assert pub.conn == 1  # no reconnect: nothing raised
    named = [r for r in caplog.records if "does not match its stored hash" in r.getMessage()]
    assert [r.levelno for r in named] == [logging.ERROR] * len(seqs)  # each once, though met again
    assert [int(r.getMessage().split()[2]) for r in named] == seqs
    assert pub.changed_rows == len(seqs)
    # the spool keeps everything from the first changed row on (acked up to the row before it)
    wait_until(lambda: h.spool.stats().acked == seqs[0] - 1, 10, "the ack below the first changed row")
    assert [r.seq for r in h.spool.read(1, 100, 10**6)] == list(range(seqs[0], 32))
