"""Publisher against the test Mosquitto: birth, batching of a backlog, acks trimming the spool,
server commands (resend, rebirth), holes left by the spool limit, clean stop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.clock import Clock
from agent.config import Config, load
from agent.publisher import Publisher
from agent.recorder import Recorder
from agent.spool import Spool
from protocols.envelope import MAX_ENVELOPE_BYTES
from protocols.signing import load_private
from tests.agent.helpers import Collector, wait_until, write_config

DUMMY = """
[detectors.power]
kind = "power_meter"
port = "/dev/null"
levels = [{ state = "off", below_w = 5 }, { state = "running" }]
"""


class Harness:
    def __init__(self, tmp: Path, broker: Any, agent_id: str, mqtt_extra: str = "") -> None:
        path = write_config(tmp, agent_id=agent_id, broker=broker, detectors=DUMMY, running="power",
                            mqtt_extra=mqtt_extra)
        self.cfg: Config = load(path, environ={})
        self.key = load_private(self.cfg.agent.key_file)
        self.spool = Spool(self.cfg.spool_path, agent_id)
        self.boot = self.spool.start_boot()
        self.rec = Recorder(self.spool, agent_id, self.boot, Clock(2000))
        self.pub: Publisher | None = None

    def start(self) -> Publisher:
        self.pub = Publisher(self.cfg, self.key, self.boot)
        self.rec.on_append = self.pub.notify
        self.pub.start()
        return self.pub

    def close(self) -> None:
        if self.pub is not None:
            self.pub.stop()
        self.spool.close()


def harnesses(tmp_path: Path, mqtt_broker: Any) -> Iterator[Callable[..., Harness]]:
    """A fixture's body: makes Harnesses on demand and closes them all after the test."""
    made: list[Harness] = []

    def make(agent_id: str, mqtt_extra: str = "") -> Harness:
        h = Harness(tmp_path, mqtt_broker, agent_id, mqtt_extra)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def harness(tmp_path: Path, mqtt_broker: Any) -> Iterator[Callable[..., Harness]]:
    yield from harnesses(tmp_path, mqtt_broker)


def test_backlog_goes_out_in_batches_and_acks_trim(harness: Any, mqtt_broker: Any, tmp_path: Path) -> None:
    h = harness("batch1", 'batch_records = 500')
    for i in range(2100):
        h.rec.heartbeat("idle", 1000, {"power": {"n": i, "mw_avg": 40_000 + i, "err": "x" * 40}})
    collector = Collector(mqtt_broker, tmp_path, "batch1")
    try:
        h.start()
        collector.wait_for(lambda c: len(c.records) == 2100, 30, "the backlog")
        assert collector.envelopes == 5  # 500 x 4 + 100
        wait_until(lambda: h.spool.stats().count == 0, 10, "spool trimmed by the acks")
        assert h.spool.stats().acked == 2100
        b = collector.births[0]
        assert (b.next_seq, b.spool_first, b.acked, b.conn, b.boot) == (2101, 1, 0, 1, 1)
        h.rec.lifecycle("stop", {})
        collector.wait_for(lambda c: 2101 in c.records, 10, "a live record")
        assert collector.envelopes == 6
    finally:
        collector.close()
    collector.check_complete_chain()


def test_envelopes_respect_the_byte_limit(harness: Any, mqtt_broker: Any, tmp_path: Path) -> None:
    h = harness("bytes1", "batch_bytes = 20000")
    big = {f"d{i}": {f"k{j}": "y" * 200 for j in range(15)} for i in range(3)}
    for _ in range(40):
        h.rec.heartbeat("idle", 1000, big)
    collector = Collector(mqtt_broker, tmp_path, "bytes1")
    try:
        h.start()
        collector.wait_for(lambda c: len(c.records) == 40, 20, "all records")
    finally:
        collector.close()
    sizes = [len(p) for p in collector.payloads]
    assert len(sizes) > 1 and max(sizes) < 20000 + 2000 < MAX_ENVELOPE_BYTES


def test_resend_and_rebirth_commands(harness: Any, mqtt_broker: Any, tmp_path: Path) -> None:
    h = harness("cmd1")
    for _ in range(20):
        h.rec.lifecycle("clock", {"jump_ms": 1})
    collector = Collector(mqtt_broker, tmp_path, "cmd1", ack=False)
    try:
        h.start()
        collector.wait_for(lambda c: len(c.records) == 20 and len(c.births) == 1, 15, "records and birth")
        envelopes = collector.envelopes
        collector.command(cmd="resend", first=5, last=9)
        collector.wait_for(lambda c: c.envelopes == envelopes + 1, 10, "the re-sent range")
        collector.command(cmd="rebirth")
        collector.wait_for(lambda c: len(c.births) == 2, 10, "rebirth")
        assert collector.births[1].conn == 1 and collector.births[1].next_seq == 21
        collector.command(cmd="bogus")  # ignored with a log line, nothing breaks
        h.rec.lifecycle("stop", {})
        collector.wait_for(lambda c: 21 in c.records, 10, "still publishing")
    finally:
        collector.close()
    assert not collector.errors


def test_holes_from_the_spool_limit_are_skipped_and_named(harness: Any, mqtt_broker: Any, tmp_path: Path) -> None:
    h = harness("hole1")
    t = h.rec.clock.now()[0]
    for i in range(30):
        if i % 3 == 0:
            h.rec.lifecycle("clock", {"jump_ms": i})
        else:
            h.rec.sample("power_mw", "mW", t, 1000, list(range(200)))
    h.spool.enforce_limits(h.spool.stats(exact=True).bytes // 3, 10**12, t, h.rec.overflow_builder)
    held = h.spool.stats(exact=True).count
    collector = Collector(mqtt_broker, tmp_path, "hole1", ack=False)
    try:
        h.start()
        collector.wait_for(lambda c: len(c.records) == held, 15, "every held record")
    finally:
        collector.close()
    recs = [collector.records[s] for s in sorted(collector.records)]
    overflow = [r for r in recs if r["type"] == "spool_overflow"]
    assert len(overflow) == 1
    dropped = {s for d in overflow[0]["dropped"] for s in range(d["first"], d["last"] + 1)}
    assert set(range(1, recs[-1]["seq"] + 1)) == dropped | set(collector.records)
    # the chain continues across each hole through last_hash
    last_hash = {d["last"]: d["last_hash"] for d in overflow[0]["dropped"]}
    for r in recs:
        if r["seq"] - 1 in last_hash:
            assert r["prev"] == last_hash[r["seq"] - 1]


def test_clean_stop_sends_a_clean_death(harness: Any, mqtt_broker: Any, tmp_path: Path) -> None:
    h = harness("stop1")
    collector = Collector(mqtt_broker, tmp_path, "stop1")
    try:
        pub = h.start()
        collector.wait_for(lambda c: len(c.births) == 1, 10, "birth")
        h.rec.lifecycle("stop", {})
        pub.stop()
        assert pub.finished.is_set()
        collector.wait_for(lambda c: any(d.clean for d in c.deaths), 10, "clean death")
        assert 1 in collector.records  # flushed before the death
    finally:
        collector.close()


def test_unreachable_broker_backs_off_and_keeps_spooling(tmp_path: Path) -> None:
    class Nowhere:
        host, port = "127.0.0.1", 9  # discard port: connection refused

    h = Harness(tmp_path, Nowhere(), "nowhere")
    try:
        pub = h.start()
        wait_until(lambda: bool(pub.last_error), 5, "a connection error")
        assert not pub.connected
        h.rec.lifecycle("boot", {})
        assert h.spool.stats().count == 1
    finally:
        h.close()


def test_unacknowledged_records_are_sent_again_after_silence(harness: Any, mqtt_broker: Any, tmp_path: Path) -> None:
    h = harness("silent1", "resend_after_s = 0.5")
    for _ in range(3):
        h.rec.lifecycle("clock", {"jump_ms": 1})
    collector = Collector(mqtt_broker, tmp_path, "silent1", ack=False)  # a server that never acks
    try:
        h.start()
        collector.wait_for(lambda c: len(c.records) == 3, 10, "records")
        first = collector.envelopes
        collector.wait_for(lambda c: c.envelopes > first, 10, "the same records again")
    finally:
        collector.close()
    assert not collector.errors
