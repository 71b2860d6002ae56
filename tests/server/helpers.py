"""Helpers for ingest tests: a registry in the database, a test agent that builds signed chained
records, an MQTT publisher, settings with short timeouts, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as mqtt
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from protocols import envelope as env
from protocols import topics
from protocols.chain import GENESIS, record_hash
from protocols.signing import generate, key_id, public_to_b64
from server.config import Settings
from server.ingest.verify import Incoming
from sim.devstack import role_dsn

T0 = 1_798_732_800_000  # 2027-01-01T00:00:00Z (ms)
T = TypeVar("T")


def register(dsn: str, agent: TestAgent, *, org: str = "org-u", org_name: str = "Unit University") -> None:
    """Enrol the agent: its unit's organisation, the unit, the instrument, the agent and its key."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name, kind) VALUES (%s, %s, 'university')"
                     " ON CONFLICT DO NOTHING", (org, org_name))
        conn.execute("INSERT INTO units (id, org_id, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                     (agent.unit, org, f"unit {agent.unit}"))
        conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                     (agent.instrument, agent.unit, f"instrument {agent.instrument}"))
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (agent.agent, agent.instrument))
        conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)"
                     " ON CONFLICT DO NOTHING", (key_id(agent.key), agent.agent, public_to_b64(agent.key)))


def two_agent_numbers(conn: psycopg.Connection[Any]) -> list[int]:
    """Two agents on two instruments of one unit, with their progress rows: their agent numbers
    (for tests that write `records` rows directly)."""
    conn.execute("INSERT INTO organisations (id, name) VALUES ('o', 'O')")
    conn.execute("INSERT INTO units (id, org_id, name) VALUES ('u', 'o', 'u')")
    nos = []
    for k in (1, 2):
        conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES (%s, 'u', 'i')", (f"i{k}",))
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (f"a{k}", f"i{k}"))
        nos.append(conn.execute("INSERT INTO agent_progress (agent_id) VALUES (%s) RETURNING agent_no",
                                (f"a{k}",)).fetchone()[0])  # type: ignore[index]
    return nos


def map_identity(dsn: str, unit: str, method: str, identifier: str, user: str, org: str, org_name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (org, org_name))
        conn.execute("INSERT INTO platform_users (id, name, org_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                     (user, user, org))
        conn.execute("INSERT INTO identity_map (unit_id, method, identifier, user_id) VALUES (%s, %s, %s, %s)",
                     (unit, method, identifier, user))


@dataclass
class TestAgent:
    """Makes records exactly as an agent would: contiguous seqs, chained, sealed into envelopes."""

    __test__ = False
    agent: str
    unit: str = "u1"
    instrument: str = ""
    key: Ed25519PrivateKey = field(default_factory=generate)
    boot: int = 1
    conn: int = 1
    seq: int = 0
    prev: str = GENESIS
    mono: int = 0
    made: list[dict[str, Any]] = field(default_factory=list)
    boot_t: int | None = None
    """wall time at which this boot's monotonic clock read 0: mono follows t from there (never
    decreasing), as a real agent's clocks agree; record(..., mono=...) overrides it (clock jumps)"""

    def __post_init__(self) -> None:
        if not self.instrument:
            self.instrument = f"i-{self.agent}"

    def record(self, t: int, type_: str, **body: Any) -> dict[str, Any]:
        """body: the type's fields; `mono=` (not a field) sets the monotonic clock explicitly."""
        self.seq += 1
        if self.boot_t is None:
            self.boot_t = t - 1000
        mono = body.pop("mono", None)
        self.mono = int(mono) if mono is not None else max(self.mono, t - self.boot_t)
        rec = {"agent": self.agent, "boot": self.boot, "seq": self.seq, "t": t, "mono": self.mono,
               "prev": self.prev, "type": type_, **body}
        self.prev = record_hash(rec)
        self.made.append(rec)
        return rec

    def state(self, t: int, state: str, prev_state: str = "unknown") -> dict[str, Any]:
        return self.record(t, "state", state=state, prev_state=prev_state, rule="test", evidence={})

    def heartbeat(self, t: int, state: str, period_ms: int = 300_000) -> dict[str, Any]:
        return self.record(t, "heartbeat", state=state, period_ms=period_ms, evidence={})

    def session_start(self, t: int, session: str, user: str, method: str = "os") -> dict[str, Any]:
        return self.record(t, "session_start", session=session, method=method, user=user)

    def session_end(self, t: int, session: str, reason: str = "checkout") -> dict[str, Any]:
        return self.record(t, "session_end", session=session, reason=reason)

    def lifecycle(self, t: int, event: str) -> dict[str, Any]:
        return self.record(t, "lifecycle", event=event, detail={})

    def reboot(self) -> None:
        self.boot += 1
        self.conn = 1
        self.mono = 0
        self.boot_t = None

    def seal(self, records: list[dict[str, Any]], sent: int | None = None) -> bytes:
        """An envelope sealed now (as the agent does when it sends), unless `sent` is given."""
        return env.envelope(key=self.key, agent=self.agent, unit=self.unit, instrument=self.instrument,
                            boot=max(r["boot"] for r in records), sent=sent or int(time.time() * 1000),
                            records=records)

    def birth(self, t: int, next_seq: int | None = None, spool_first: int | None = None, acked: int = 0) -> bytes:
        n = self.seq + 1 if next_seq is None else next_seq
        return env.birth(key=self.key, agent=self.agent, unit=self.unit, instrument=self.instrument, boot=self.boot,
                         conn=self.conn, t=t, next_seq=n, spool_first=n if spool_first is None else spool_first,
                         acked=acked, sw="test")

    def death(self, t: int, clean: bool = False) -> bytes:
        return env.death(key=self.key, agent=self.agent, unit=self.unit, instrument=self.instrument,
                         boot=self.boot, conn=self.conn, t=t, clean=clean)

    def topic(self, kind: topics.Kind = topics.Kind.REC) -> str:
        return topics.topic(self.unit, self.instrument, kind)

    def msg(self, payload: bytes, received_ms: int | None = None, kind: topics.Kind = topics.Kind.REC,
            topic: str | None = None) -> Incoming:
        """An Incoming as the subscriber would make it (received: now, or the given ms)."""
        rec = time.time() if received_ms is None else received_ms / 1000
        return Incoming(topic or self.topic(kind), payload, rec)


def settings_for(dsn: str, broker: Any | None = None, client_id: str = "ingest-test", **ingest: Any) -> Settings:
    """Settings with short timeouts for tests."""
    ing = {"resend_after_s": 1.0, "gap_give_up_after_s": 4.0, "gap_check_every_s": 0.2, "resend_max_attempts": 2,
           "batch_max_wait_ms": 20, "batch_gap_ms": 20, "retry_initial_s": 0.1, "retry_max_s": 1.0,
           "pack_every_s": 3600.0, **ingest}
    mq: dict[str, Any] = {"client_id": client_id}
    if broker is not None:
        mq |= {"host": broker.host, "port": broker.port}
    # ingest connects as its own role (server/db/grants.sql), as deployed
    return Settings(database={"dsn": role_dsn(dsn, "jishi_ingest"), "owner_dsn": dsn}, mqtt=mq, ingest=ing,
                    metrics={"port": 0})


class Publisher:
    """A plain MQTT client publishing QoS 1 and collecting what the server sends back."""

    def __init__(self, broker: Any, client_id: str = "test-publisher") -> None:
        self.received: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([("jishi/v1/+/+/ack", 1), ("jishi/v1/+/+/cmd", 1)])

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(t, p, qos=1) for t, p in items]
        for i in infos:
            i.wait_for_publish(60)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(cond: Callable[[], T], timeout: float = 15.0, every: float = 0.05, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {v!r})")
        time.sleep(every)


def query(dsn: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def clear_retained(broker: Any, topics_: list[str]) -> None:
    """Remove retained messages (acks of earlier tests) so a test sees only its own."""
    p = Publisher(broker, client_id="retained-cleaner")
    for t in topics_:
        p.publish(t, b"", retain=True)
    p.close()


def spool_backlog(dsn: str, prefix: str, tag: str, agents: int, records: int,
                  per_envelope: int) -> tuple[list[TestAgent], list[tuple[str, bytes]]]:
    """Registered agents, each with `records` minutes of history sealed `per_envelope` records a
    message, interleaved by seq as a fleet flushing its spools after an outage would send them."""
    fleet = [TestAgent(f"{prefix}{i}-{tag}", unit=f"u-{tag}") for i in range(agents)]
    for ag in fleet:
        register(dsn, ag, org=f"org-{tag}")
    t0 = int(time.time() * 1000) - records * 60_000
    items: list[tuple[str, bytes]] = []
    for ag in fleet:
        ag.state(t0, "running")
        for k in range(1, records):
            ag.heartbeat(t0 + k * 60_000, "running" if k < records // 2 else "idle", period_ms=60_000)
        for i in range(0, records, per_envelope):
            items.append((ag.topic(), ag.seal(ag.made[i:i + per_envelope])))
    items.sort(key=lambda it: int(orjson.loads(it[1])["records"][0]["seq"]))
    return fleet, items
