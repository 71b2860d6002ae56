"""Fleet mode against the test broker and a real ingest: every simulated agent connects with its
own key and session, its records are verified and stored, and the server's acks reach it; the
minimal MQTT client delivers Wills and QoS 1 messages like any other client."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from server.ingest.service import Ingest
from sim.fleet import members, register, run_fleet
from sim.mqtt_lite import Client, Will
from tests.conftest import clear_retained
from tests.server.helpers import settings_for, wait_for


@pytest.mark.usefixtures("no_retained")
def test_fleet_is_stored_and_acknowledged(fresh_db: str, mqtt_broker: Any) -> None:
    fleet = members(40, units=4, prefix="tf")
    assert register(fresh_db, fleet, "t") == 40
    assert register(fresh_db, fleet, "t") == 0  # idempotent
    ingest = Ingest(settings_for(fresh_db, mqtt_broker, client_id="ingest-fleet-test")).start()
    try:
        assert ingest.wait_connected(10)
        stats, agents = asyncio.run(run_fleet(fleet, mqtt_broker.host, mqtt_broker.port, "t", heartbeat_s=1.0,
                                              duration_s=3.0, ramp_per_s=200))
        sent = sum(a.seq for a in agents)
        assert stats.peak_connected == 40 and stats.connect_failures == 0 and stats.connected == 0

        def stored() -> bool:
            with psycopg.connect(fresh_db) as conn:
                row = conn.execute("SELECT sum(watermark), count(birth_at), count(*) FILTER (WHERE death_clean)"
                                   " FROM agent_progress").fetchone()
            return row == (sent, 40, 40)

        wait_for(stored, 20, what="every record stored, every birth and clean death seen")
        assert stats.acked_records >= sent - 40 * 2  # all but the last records acked before the stop
        with psycopg.connect(fresh_db) as conn:
            assert conn.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    finally:
        ingest.stop()
        clear_retained(mqtt_broker.host, mqtt_broker.port)  # the fleet's births, deaths and acks


def test_mqtt_lite_qos1_and_will(mqtt_broker: Any) -> None:
    async def go() -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        watcher = Client("lite-watcher", clean=True)
        watcher.on_message = lambda t, p: got.append((t, p))
        await watcher.connect(mqtt_broker.host, mqtt_broker.port)
        await watcher.subscribe([("lite/#", 1)])
        dying = Client("lite-dying", keepalive=5, clean=True, will=Will("lite/death", b"gone", retain=False))
        await dying.connect(mqtt_broker.host, mqtt_broker.port)
        await dying.publish("lite/rec", b"hello", qos=1)
        await dying.close()  # no DISCONNECT: the broker publishes the Will
        for _ in range(100):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.05)
        await watcher.disconnect()
        return got

    assert asyncio.run(go()) == [("lite/rec", b"hello"), ("lite/death", b"gone")]
