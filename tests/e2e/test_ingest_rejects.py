"""Every rejection reason through the broker into a running `jishi-server ingest` process: each
bad message is quarantined and counted, and the process keeps running and storing good ones."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import Reason
from sim.devstack import free_port
from tests.server.helpers import Publisher, TestAgent, query, register, wait_for
from tests.server.procs import IngestProc, write_config

S = 1000


@pytest.mark.usefixtures("no_retained")
def test_every_reason_is_quarantined_and_ingest_keeps_running(pg_dsn: str, mqtt_broker: Any,
                                                               tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    dsn = pg_dsn
    a = TestAgent(f"a-{tag}", unit=f"u-{tag}")
    other = TestAgent(f"o-{tag}", unit=f"u-{tag}")
    revoked = TestAgent(f"r-{tag}", unit=f"u-{tag}")
    for ag in (a, other, revoked):
        register(dsn, ag, org=f"org-{tag}")
    query(dsn, "UPDATE agents SET revoked_at = now() WHERE id = %s RETURNING 1", (revoked.agent,))
    stranger = TestAgent(f"x-{tag}", unit=f"u-{tag}")
    port = free_port()
    proc = IngestProc(write_config(tmp_path / "ingest.toml", dsn, mqtt_broker, f"ing-{tag}", f"g-{tag}",
                                   metrics_port=port)).start()
    pub = Publisher(mqtt_broker, client_id=f"pub-{tag}")
    now = int(time.time() * 1000)
    try:
        first = a.seal([a.state(now - 3600 * S, "idle")], sent=now - 3600 * S)

        def stored() -> int:
            return int(query(dsn, "SELECT coalesce(max(watermark), 0) FROM agent_progress WHERE agent_id = %s",
                             (a.agent,))[0][0])

        def publish_until_stored(payload: bytes, seq: int) -> None:
            """The subscription may not be in place yet: publish again until stored (dupes are harmless)."""
            deadline = time.monotonic() + 20
            while stored() < seq:
                assert time.monotonic() < deadline, proc.output()
                pub.publish(a.topic(), payload)
                time.sleep(0.3)

        publish_until_stored(first, 1)
        publish_until_stored(a.seal([a.heartbeat(now - 10 * S, "idle")]), 2)
        good = a.seal([a.heartbeat(now - 5 * S, "idle")])
        conflict = TestAgent(a.agent, unit=a.unit, key=a.key)
        broken = TestAgent(a.agent, unit=a.unit, key=a.key, seq=a.seq, prev="e" * 64)
        bad: dict[str, tuple[str, bytes]] = {
            Reason.BAD_SIGNATURE: (a.topic(), good.replace(b'"state":"idle"', b'"state":"off"')),
            Reason.UNKNOWN_AGENT: (stranger.topic(), stranger.seal([stranger.state(now, "idle")])),
            Reason.REVOKED_AGENT: (revoked.topic(), revoked.seal([revoked.state(now, "idle")])),
            Reason.WRONG_TOPIC: (other.topic(), good),
            Reason.CHAIN_BROKEN: (a.topic(), broken.seal([broken.heartbeat(now - 4 * S, "idle")])),
            Reason.REPLAY: (a.topic(), first),
            Reason.MALFORMED: (a.topic(), b"\x00\x01 definitely not JSON"),
            Reason.OVERSIZED: (a.topic(), b'{"v":1,' + b'"x":"' + b"y" * (400 * 1024) + b'"}'),
            Reason.UNKNOWN_TYPE: (a.topic(), conflict.seal([conflict.record(now, "mystery")])),
            Reason.SEQ_CONFLICT: (a.topic(), conflict.seal([conflict.state(now, "running")])),
        }
        for reason, (topic, payload) in bad.items():
            if reason != Reason.CHAIN_BROKEN:
                pub.publish(topic, payload)
        pub.publish(a.topic(), good)
        # after the good one, whose hash it fails to link to: sent before it, the forged seq 4 would be
        # ahead of a hole and stored unless both happened to land in one batch (batches are timing)
        pub.publish(*bad[Reason.CHAIN_BROKEN])
        wait_for(lambda: stored() == 3, 20, what="the good envelope after the bad ones")
        want = sorted(str(r) for r in bad)

        def got() -> list[str]:
            return sorted(r[0] for r in query(dsn, "SELECT reason FROM quarantine WHERE topic LIKE %s",
                                              (f"%/u-{tag}/%",)))

        wait_for(lambda: got() == want, 10, what=f"quarantine rows {want}")
        assert proc.alive, proc.output()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for reason in want:
            assert f'jishi_ingest_rejects_total{{reason="{reason}"}} 1.0' in metrics, reason
        assert "jishi_ingest_records_stored_total 3.0" in metrics
        # logged once each, with the reason
        out = proc.output()
        for reason in want:
            assert out.count(f": {reason}") >= 1, reason
    finally:
        pub.close()
        assert proc.stop() == 0, proc.output()
