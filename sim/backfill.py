"""Deliver history to the server: through the broker into the running ingest (what an agent with a
backlog does), or straight into the ingest's batch pipeline (`server.ingest.worker.Pipeline`), the
same verification, storage and derivation without the network.

Both are the real server path from verification on; the broker path is the one the demo uses
when it is fast enough (see bench/RESULTS.md, "Demo backfill").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion


def publish(host: str, port: int, items: Iterable[tuple[str, bytes]], client_id: str = "jishi-sim-backfill",
            inflight: int = 200, username: str | None = None, password: str | None = None) -> int:
    """Publish (topic, payload) at QoS 1 with at most `inflight` unacknowledged; returns the count."""
    done = threading.Semaphore(inflight)
    connected = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True)
    if username:
        c.username_pw_set(username, password)
    c.max_inflight_messages_set(inflight)
    c.on_connect = lambda cl, u, f, rc, p: connected.set()
    c.on_publish = lambda cl, u, mid, rc, p: done.release()
    c.connect(host, port, keepalive=60)
    c.loop_start()
    try:
        if not connected.wait(15):
            raise RuntimeError(f"broker {host}:{port} did not accept the backfill connection")
        n = 0
        for topic, payload in items:
            done.acquire()
            c.publish(topic, payload, qos=1)
            n += 1
        for _ in range(inflight):  # every publish acknowledged by the broker
            if not done.acquire(timeout=120):
                raise TimeoutError("the broker did not acknowledge the backfill")
        return n
    finally:
        c.disconnect()
        c.loop_stop()


def watermarks(dsn: str, agents: Iterable[str]) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT agent_id, watermark FROM agent_progress WHERE agent_id = ANY(%s)",
                            (list(agents),)).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def wait_stored(dsn: str, expected: Mapping[str, int], timeout: float, progress: Any = None) -> float:
    """Wait until every agent's watermark reaches its expected last seq; returns seconds waited."""
    t0 = time.monotonic()
    total = sum(expected.values())
    while True:
        have = watermarks(dsn, expected)
        done = sum(min(have.get(a, 0), n) for a, n in expected.items())
        if progress is not None:
            progress(done, total)
        if all(have.get(a, 0) >= n for a, n in expected.items()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"ingest stored {done} of {total} records in {timeout:.0f} s")
        time.sleep(0.5)


def direct(dsn: str, items: Iterable[tuple[str, bytes, float]], batch: int = 50) -> int:
    """Feed (topic, payload, received time) through the ingest pipeline in batches, no broker."""
    from server.config import Settings
    from server.ingest.verify import Incoming
    from server.ingest.worker import Pipeline

    settings = Settings(database={"dsn": dsn}, metrics={"port": 0})
    pipe = Pipeline(settings, "sim-backfill")
    n = 0
    buf: list[Incoming] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for topic, payload, received in items:
            buf.append(Incoming(topic, payload, received))
            if len(buf) >= batch:
                n += pipe.process(conn, buf).records
                buf = []
        if buf:
            n += pipe.process(conn, buf).records
    return n
