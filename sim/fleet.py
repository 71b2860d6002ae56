"""Fleet mode: thousands of lightweight simulated agents in one process, for load tests.

Each fleet agent is what the server sees of a real agent: its own MQTT connection (client id =
agent id, persistent session, a signed `death` as Will), a signed `birth` after connecting,
subscriptions to its own `ack` and `cmd`, and chained records (boot, state changes, heartbeats)
each sealed into a signed envelope the moment it is made, as a live agent sends them. It keeps
unacknowledged records and sends them again after a reconnect or a `resend` command. What it does
not have is detectors: its instrument runs now and then at random.

Keys are derived from a seed and the agent id, so a fleet can be registered once and run again;
the chain position of every agent is saved to a state file at a clean stop (`--state`) so the next
run continues each chain instead of starting a conflicting one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import envelope as env
from protocols import topics
from protocols.canonical import dumps_sorted
from protocols.chain import GENESIS
from protocols.signing import key_id, public_to_b64
from sim.mqtt_lite import Client, MqttError, Will

SW = "jishi-sim-fleet/0.1"


def fleet_key(seed: str, agent: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"jishi-fleet:{seed}:{agent}".encode()).digest())


@dataclass(frozen=True)
class Member:
    agent: str
    unit: str
    instrument: str


def members(n: int, units: int = 100, prefix: str = "fleet") -> list[Member]:
    return [Member(f"{prefix}-a{i:05d}", f"{prefix}-u{i % units:03d}", f"{prefix}-i{i:05d}") for i in range(n)]


def register(dsn: str, fleet: Sequence[Member], seed: str) -> int:
    """Organisations, units, instruments, agents and keys for the fleet (existing rows are kept)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT audit_as('sim-fleet', true)")
        conn.execute("INSERT INTO organisations (id, name, kind) VALUES ('fleet-org', '模拟单位', 'institute')"
                     " ON CONFLICT DO NOTHING")
        cur = conn.cursor()
        units = sorted({m.unit for m in fleet})
        cur.executemany("INSERT INTO units (id, org_id, name) VALUES (%s, 'fleet-org', %s) ON CONFLICT DO NOTHING",
                        [(u, f"模拟单位 {u}") for u in units])
        have = {r[0] for r in conn.execute("SELECT id FROM instruments WHERE id = ANY(%s)",
                                           ([m.instrument for m in fleet],))}
        with cur.copy("COPY instruments (id, unit_id, name, original_value) FROM STDIN") as cp:
            for m in fleet:
                if m.instrument not in have:
                    cp.write_row((m.instrument, m.unit, f"模拟仪器 {m.instrument}", 500000))
        have = {r[0] for r in conn.execute("SELECT id FROM agents WHERE id = ANY(%s)", ([m.agent for m in fleet],))}
        new = [m for m in fleet if m.agent not in have]
        with cur.copy("COPY agents (id, instrument_id) FROM STDIN") as cp:
            for m in new:
                cp.write_row((m.agent, m.instrument))
        with cur.copy("COPY agent_keys (key_id, agent_id, public_key) FROM STDIN") as cp:
            for m in new:
                k = fleet_key(seed, m.agent)
                cp.write_row((key_id(k), m.agent, public_to_b64(k)))
        conn.commit()
    return len(new)


@dataclass
class Stats:
    connected: int = 0
    peak_connected: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    records_sent: int = 0
    envelopes_sent: int = 0
    acked_records: int = 0
    resends: int = 0
    ack_latency: list[float] = field(default_factory=list)
    ack_at: list[float] = field(default_factory=list)  # monotonic time of each ack_latency sample

    def latency_between(self, t0: float, t1: float) -> dict[str, float | int | None]:
        """Percentiles of publish -> ack for acks received between monotonic times t0 and t1."""
        lat = sorted(v for v, at in zip(self.ack_latency, self.ack_at, strict=True) if t0 <= at < t1)
        return _percentiles(lat)

    def as_dict(self) -> dict[str, Any]:
        return {"connected": self.connected, "peak_connected": self.peak_connected,
                "connect_failures": self.connect_failures, "disconnects": self.disconnects,
                "records_sent": self.records_sent, "acked_records": self.acked_records, "resends": self.resends,
                "ack_latency_s": _percentiles(sorted(self.ack_latency))}


def _percentiles(lat: list[float]) -> dict[str, float | int | None]:
    def q(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

    return {"n": len(lat), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(lat[-1], 3) if lat else None}


class FleetAgent:
    def __init__(self, m: Member, seed: str, stats: Stats, heartbeat_s: float, run_share: float,
                 chain: tuple[int, str, int] | None = None) -> None:
        self.m = m
        self.key = fleet_key(seed, m.agent)
        self.stats = stats
        self.heartbeat_s = heartbeat_s
        self.run_share = run_share
        self.seq, self.prev, last_boot = chain or (0, GENESIS, 0)
        self.boot = last_boot + 1
        self.conn = 0
        self.t_boot = time.monotonic()
        self.unacked: dict[int, tuple[dict[str, Any], float]] = {}  # seq -> (record, first sent)
        self.acked = 0
        self.state = "idle"
        self.rng = random.Random(m.agent)
        self.client: Client | None = None
        self.base = f"{topics.PREFIX}/{topics.VERSION}/{m.unit}/{m.instrument}"

    def _now(self) -> int:
        return time.time_ns() // 1_000_000

    def _record(self, typ: str, **body: Any) -> dict[str, Any]:
        self.seq += 1
        rec = {"agent": self.m.agent, "boot": self.boot, "seq": self.seq, "t": self._now(),
               "mono": int((time.monotonic() - self.t_boot) * 1000), "prev": self.prev, "type": typ, **body}
        self.prev = hashlib.sha256(dumps_sorted(rec)).hexdigest()
        self.unacked[self.seq] = (rec, time.monotonic())
        return rec

    async def _send(self, recs: list[dict[str, Any]]) -> None:
        if self.client is None or not recs:
            return
        payload = env.envelope(key=self.key, agent=self.m.agent, unit=self.m.unit, instrument=self.m.instrument,
                               boot=self.boot, sent=self._now(), records=recs)
        await self.client.publish(f"{self.base}/rec", payload, qos=1)
        self.stats.records_sent += len(recs)
        self.stats.envelopes_sent += 1

    def _on_message(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        try:
            msg = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            return
        if kind == "ack" and isinstance(msg.get("acked"), int):
            acked = msg["acked"]
            if acked > self.acked:
                now = time.monotonic()
                for s in [s for s in self.unacked if s <= acked]:
                    _, sent = self.unacked.pop(s)
                    self.stats.ack_latency.append(now - sent)
                    self.stats.ack_at.append(now)
                    self.stats.acked_records += 1
                self.acked = acked
        elif kind == "cmd" and msg.get("cmd") == "resend":
            first, last = int(msg.get("first", 1)), int(msg.get("last", self.seq))
            recs = [self.unacked[s][0] for s in sorted(self.unacked) if first <= s <= last]
            self.stats.resends += 1
            asyncio.get_running_loop().create_task(self._safe_send(recs))
        elif kind == "cmd" and msg.get("cmd") == "rebirth":
            asyncio.get_running_loop().create_task(self._birth())

    async def _safe_send(self, recs: list[dict[str, Any]]) -> None:
        try:
            for i in range(0, len(recs), 500):
                await self._send(recs[i:i + 500])
        except MqttError:
            pass

    async def _birth(self) -> None:
        if self.client is None:
            return
        m = self.m
        first = min(self.unacked) if self.unacked else self.seq + 1
        b = env.birth(key=self.key, agent=m.agent, unit=m.unit, instrument=m.instrument, boot=self.boot,
                      conn=self.conn, t=self._now(), next_seq=self.seq + 1, spool_first=first, acked=self.acked, sw=SW)
        await self.client.publish(f"{self.base}/birth", b, qos=1, retain=True)

    async def connect(self, host: str, port: int) -> None:
        m = self.m
        self.conn += 1
        will = env.death(key=self.key, agent=m.agent, unit=m.unit, instrument=m.instrument, boot=self.boot,
                         conn=self.conn, t=self._now(), clean=False)
        c = Client(m.agent, keepalive=60, clean=False, will=Will(f"{self.base}/death", will))
        c.on_message = self._on_message
        await c.connect(host, port)
        self.client = c
        self.stats.connected += 1
        self.stats.peak_connected = max(self.stats.peak_connected, self.stats.connected)
        await c.subscribe([(f"{self.base}/ack", 1), (f"{self.base}/cmd", 1)])
        await self._birth()
        await self._safe_send([r for _, (r, _) in sorted(self.unacked.items())])

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                await self.connect(host, port)
                break
            except (TimeoutError, OSError, MqttError):
                self.stats.connect_failures += 1
                await asyncio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, 30)
        if stop.is_set():
            return
        await self._safe_send([self._record("lifecycle", event="boot", detail={"sw": SW}),
                               self._record("state", state="idle", prev_state="unknown", rule="fleet", evidence={})])
        last_hb = time.monotonic()
        wait = self.heartbeat_s * self.rng.random()  # spread the fleet's heartbeats over the period
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), wait)
                break
            except TimeoutError:
                pass
            assert self.client is not None
            if self.client.closed.is_set():
                self.stats.connected -= 1
                self.stats.disconnects += 1
                try:
                    await self.connect(host, port)
                except (TimeoutError, OSError, MqttError):
                    self.stats.connect_failures += 1
                    continue
            recs: list[dict[str, Any]] = []
            if self.rng.random() < self.run_share * 0.5:
                new = "running" if self.state != "running" else "idle"
                recs.append(self._record("state", state=new, prev_state=self.state, rule="fleet", evidence={}))
                self.state = new
            now = time.monotonic()
            recs.append(self._record("heartbeat", state=self.state, period_ms=int((now - last_hb) * 1000),
                                     evidence={}))
            last_hb = now
            wait = self.heartbeat_s * (0.9 + 0.2 * self.rng.random())
            await self._safe_send(recs)
        await self.stop()

    async def stop(self) -> None:
        if self.client is None or self.client.closed.is_set():
            return
        m = self.m
        await self._safe_send([self._record("lifecycle", event="stop", detail={})])
        death = env.death(key=self.key, agent=m.agent, unit=m.unit, instrument=m.instrument, boot=self.boot,
                          conn=self.conn, t=self._now(), clean=True)
        try:
            await asyncio.wait_for(self.client.publish(f"{self.base}/death", death, qos=1, retain=True), 10)
        except (TimeoutError, MqttError):
            pass
        await self.client.disconnect()
        self.stats.connected -= 1


async def run_fleet(fleet: Sequence[Member], host: str, port: int, seed: str, heartbeat_s: float = 60.0,
                    duration_s: float = 60.0, ramp_per_s: float = 500.0, run_share: float = 0.3,
                    state_file: Path | None = None, report_every_s: float = 10.0,
                    report: Any = None, stop: asyncio.Event | None = None) -> tuple[Stats, list[FleetAgent]]:
    """Connect the fleet at `ramp_per_s`, run `duration_s` after the last connection, stop cleanly."""
    stats = Stats()
    chains: dict[str, list[Any]] = {}
    if state_file is not None and state_file.exists():
        chains = json.loads(state_file.read_text())
    agents = [FleetAgent(m, seed, stats, heartbeat_s, run_share,
                         tuple(chains[m.agent]) if m.agent in chains else None)
              for m in fleet]
    stop = stop or asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    t0 = time.monotonic()

    async def reporter() -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), report_every_s)
            except TimeoutError:
                if report is not None:
                    report(time.monotonic() - t0, stats)

    rep = asyncio.create_task(reporter())
    for i, a in enumerate(agents):
        if stop.is_set():
            break
        tasks.append(asyncio.create_task(a.run(host, port, stop)))
        delay = t0 + (i + 1) / ramp_per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    ramp_done = time.monotonic()
    try:
        await asyncio.wait_for(stop.wait(), max(0.0, duration_s - (time.monotonic() - ramp_done)))
    except TimeoutError:
        pass
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    rep.cancel()
    if state_file is not None:
        state_file.write_text(json.dumps({a.m.agent: [a.seq, a.prev, a.boot] for a in agents}))
    return stats, agents
