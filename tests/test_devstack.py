"""The private services the other tests rely on: TimescaleDB loads, Mosquitto carries QoS 1."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sim.devstack import MosquittoServer, PostgresServer


def test_timescaledb_is_loaded_and_works(pg_server: PostgresServer) -> None:
    dsn = pg_server.create_database("devstack_scratch")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            assert row is not None and row[0].startswith("2.")
            assert conn.execute("SHOW timescaledb.license").fetchone() == ("apache",)
            conn.execute("CREATE TABLE m (t timestamptz NOT NULL, v int NOT NULL)")
            conn.execute("SELECT create_hypertable('m', by_range('t', INTERVAL '1 day'))")
            conn.execute(
                "INSERT INTO m SELECT t, 1 FROM generate_series("
                "'2026-01-01'::timestamptz, '2026-01-03', INTERVAL '1 hour') AS t"
            )
            chunks = conn.execute("SELECT count(*) FROM show_chunks('m')").fetchone()
            assert chunks is not None and chunks[0] >= 2
            buckets = conn.execute(
                "SELECT time_bucket(INTERVAL '1 day', t) AS b, sum(v) FROM m GROUP BY b ORDER BY b"
            ).fetchall()
            assert [n for _, n in buckets] == [24, 24, 1]
    finally:
        pg_server.drop_database("devstack_scratch")


def test_template_copies_are_independent(pg_server: PostgresServer) -> None:
    """What ``fresh_db`` relies on: a frozen template can be copied although TimescaleDB runs."""
    with psycopg.connect(pg_server.create_database("devstack_tmpl"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
        conn.execute("CREATE TABLE m (t timestamptz NOT NULL)")
        conn.execute("SELECT create_hypertable('m', by_range('t'))")
    pg_server.freeze_template("devstack_tmpl")
    try:
        a = pg_server.create_database("devstack_a", template="devstack_tmpl")
        b = pg_server.create_database("devstack_b", template="devstack_tmpl")
        with psycopg.connect(a, autocommit=True) as conn:
            conn.execute("INSERT INTO m VALUES (now())")
        with psycopg.connect(b) as conn:
            assert conn.execute("SELECT count(*) FROM m").fetchone() == (0,)
    finally:
        for name in ("devstack_a", "devstack_b", "devstack_tmpl"):
            pg_server.drop_database(name)


def test_postgres_reuses_an_existing_datadir(services_dir: Path) -> None:
    """The demo's second run: same data directory, another port, the data is still there."""
    datadir = services_dir / "pg-reuse"
    with PostgresServer(datadir, fast=True) as pg:
        with psycopg.connect(pg.create_database("keep"), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
    with PostgresServer(datadir) as pg:
        with psycopg.connect(pg.dsn("keep")) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]


def test_fresh_db_is_a_migrated_copy(pg_dsn: str, fresh_db: str) -> None:
    """The copy has the schema's tables (chunks that other tests' data created are not schema)."""
    query = "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1, 2"
    with psycopg.connect(pg_dsn) as a, psycopg.connect(fresh_db) as b:
        tables = a.execute(query).fetchall()
        assert tables and tables == b.execute(query).fetchall()
    assert fresh_db != pg_dsn


class _Client:
    """A paho-mqtt 2.x client that turns its callbacks into events and a queue."""

    def __init__(self, broker: MosquittoServer, client_id: str, *, clean: bool = True) -> None:
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, u, flags, rc, props: self.connected.set()
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5), "no SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_qos1_roundtrip(mqtt_broker: MosquittoServer) -> None:
    sub = _Client(mqtt_broker, "devstack-sub")
    pub = _Client(mqtt_broker, "devstack-pub")
    try:
        sub.subscribe("jishi/test/roundtrip")
        info = pub.client.publish("jishi/test/roundtrip", b"\x00hello\xff", qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
        msg = sub.messages.get(timeout=5)
        assert (msg.topic, msg.payload, msg.qos) == ("jishi/test/roundtrip", b"\x00hello\xff", 1)
    finally:
        pub.close()
        sub.close()


@pytest.mark.slow
def test_broker_keeps_queued_messages_across_a_crash(services_dir: Path) -> None:
    """A QoS 1 message queued for an offline persistent session survives SIGKILL once autosaved."""
    with MosquittoServer(services_dir / "mqtt-crash", autosave_interval=1) as broker:
        sub = _Client(broker, "devstack-durable", clean=False)
        sub.subscribe("jishi/test/durable")
        sub.close()

        pub = _Client(broker, "devstack-pub-crash")
        info = pub.client.publish("jishi/test/durable", b"survives", qos=1)
        info.wait_for_publish(5)
        acked_ns = time.time_ns()
        pub.close()

        db = broker.workdir / "mosquitto.db"
        deadline = time.monotonic() + 10
        while not (db.exists() and db.stat().st_mtime_ns > acked_ns):
            assert time.monotonic() < deadline, "broker did not autosave"
            time.sleep(0.1)

        broker.kill()
        broker.restart()
        sub = _Client(broker, "devstack-durable", clean=False)
        try:
            msg = sub.messages.get(timeout=5)
            assert msg.payload == b"survives"
        finally:
            sub.close()
