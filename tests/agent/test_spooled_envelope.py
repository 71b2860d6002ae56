"""The publisher builds each envelope from the spooled canonical bytes without parsing them
(agent/publisher.py `seal_records`): the bytes must be exactly those of the old way (the parsed bodies
sealed by protocols.envelope.envelope), for every record type and a real backlog; a spool row that
changed on disk is named in the log and handled as before (parse error, or sent and refused)."""

from __future__ import annotations

import json
import logging
import sqlite3
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
from tests.agent.helpers import Collector, wait_until
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


def corrupt(spool_path: Path, seq: int, body: bytes) -> None:
    """Change one record's body in the spool file behind the agent's back (its stored hash stays)."""
    db = sqlite3.connect(spool_path)
    try:
        db.execute("UPDATE records SET body = ? WHERE seq = ?", (body, seq))
        db.commit()
    finally:
        db.close()


def backlog(h: Harness) -> None:
    for i in range(30):
        h.rec.heartbeat("idle", 1000, {"power": {"n": i, "mw_avg": 40_000 + i}})


def test_a_changed_row_that_is_still_json_is_named_then_sent_and_refused_as_before(
        harness: Any, mqtt_broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jishi.publisher")
    h = harness("corrupt1", "batch_records = 10")
    backlog(h)
    row = h.spool.read(15, 1, 10**6)[0]
    changed = row.body.replace(b'"mw_avg":40014', b'"mw_avg":99014')
    assert changed != row.body
    corrupt(h.cfg.spool_path, 15, changed)
    key = h.key
    ids = {"agent": "corrupt1", "unit": "u-corrupt1", "instrument": "i-corrupt1"}
    rows = h.spool.read(11, 10, 10**6)
    assert [r.seq for r in rows if not intact(r)] == [15]
    with pytest.raises(Exception) as before:  # the refusal the old way's envelope gets
        open_envelope(old_way(key, h.boot, 1767225600000, rows, ids))
    collector = Collector(mqtt_broker, tmp_path, "corrupt1")
    try:
        h.start()
        collector.wait_for(lambda c: set(c.records) >= set(range(1, 11)) | set(range(21, 31)), 15,
                           "every envelope without the changed row")
        wait_until(lambda: any("do not match their stored hash" in r.getMessage() for r in caplog.records), 10,
                   "the changed row named in the log")
        collector.wait_for(lambda c: bool(c.errors), 10, "the refusal of the changed row's envelope")
    finally:
        collector.close()
    named = [r for r in caplog.records if "do not match their stored hash" in r.getMessage()]
    assert "[15]" in named[0].getMessage() and named[0].levelno == logging.WARNING
    # the same refusal as before: the next record's prev is not the changed record's hash
    assert collector.errors[0] == f"rec: {before.value!r}"
    assert "chain_broken" in collector.errors[0]
    assert not set(collector.records) & set(range(11, 21))
    # nothing else lost: the spool keeps everything from the changed envelope on (acked up to 10)
    wait_until(lambda: h.spool.stats().acked == 10, 10, "the ack of the first envelope")
    assert [r.seq for r in h.spool.read(11, 100, 10**6)] == list(range(11, 31))


def test_a_changed_row_that_is_not_json_is_named_and_stops_at_the_parse_error_as_before(
        harness: Any, mqtt_broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jishi.publisher")
    h = harness("corrupt2", "batch_records = 10")
    backlog(h)
    row = h.spool.read(15, 1, 10**6)[0]
    corrupt(h.cfg.spool_path, 15, row.body[: len(row.body) // 2])
    with pytest.raises(orjson.JSONDecodeError) as before:  # what the old way raised for this batch
        old_way(h.key, h.boot, 1767225600000, h.spool.read(11, 10, 10**6),
                {"agent": "corrupt2", "unit": "u-corrupt2", "instrument": "i-corrupt2"})
    collector = Collector(mqtt_broker, tmp_path, "corrupt2")
    try:
        pub = h.start()
        collector.wait_for(lambda c: set(c.records) == set(range(1, 11)), 15, "the envelope before the changed row")
        wait_until(lambda: pub.conn >= 2, 15, "a reconnect after the parse error")
    finally:
        collector.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("[15] do not match their stored hash" in m for m in messages)
    # the parse error's path, as before: logged with the broker's address, then a new connection
    assert any(m.startswith("mqtt ") and str(before.value) in m for m in messages), messages
    assert set(collector.records) == set(range(1, 11)) and not collector.errors
    # nothing lost: the spool holds every record from the changed envelope on (1-10 too unless the
    # retained ack was read before a connection ended: as before, the parse error ends each one)
    assert [r.seq for r in h.spool.read(1, 100, 10**6)] in (list(range(1, 31)), list(range(11, 31)))
