"""Shared parts of the ingest benchmarks: private services, a fleet of simulated agents whose
records are chained and signed exactly as the agent does, and ingest processes."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from protocols import topics
from protocols.canonical import dumps_sorted
from protocols.chain import GENESIS
from protocols.signing import generate, key_id, public_to_b64, sign
from server.db.migrate import apply
from sim.devstack import MosquittoServer, PostgresServer

ROOT = Path(__file__).resolve().parents[1]
DAY_MS = 86_400_000


@contextmanager
def services(fast: bool = False) -> Iterator[tuple[PostgresServer, MosquittoServer]]:
    """A private PostgreSQL (durable unless fast) and Mosquitto, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="jishi-bench-"))
    d.chmod(0o755)
    pg = PostgresServer(d / "pg", fast=fast)
    broker = MosquittoServer(d / "mqtt", autosave_interval=300)
    try:
        pg.start()
        broker.start()
        yield pg, broker
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(d, ignore_errors=True)


def fresh_db(pg: PostgresServer, name: str, root: Path | None = None) -> str:
    """A new database with the migrations of this tree, or of the tree at `root` (an older
    checkout, so its code runs against the schema it was written for)."""
    pg.drop_database(name)
    dsn = pg.create_database(name)
    if root is None or root == ROOT:
        apply(dsn)
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JISHI_")} | {"PYTHONPATH": str(root)}
        subprocess.run([sys.executable, "-c", "import sys; from server.db.migrate import apply; apply(sys.argv[1])",
                        dsn], check=True, cwd=root, env=env, stdout=subprocess.DEVNULL)
    return dsn


def checkout(ref: str) -> Path:
    """The tree at git `ref` in a temporary directory (git archive: the repository is not touched).
    From this checkout's repository, or the current directory's when this tree is a copy."""
    d = Path(tempfile.mkdtemp(prefix=f"jishi-{ref[:12]}-"))
    repo = ROOT if (ROOT / ".git").exists() else Path.cwd()
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
    return d


@dataclass
class SimAgent:
    """Records and envelopes byte-identical to protocols.envelope.envelope(), built without the
    per-value checks of canonical() (all values here are known-safe ints and ASCII strings)."""

    agent: str
    unit: str
    instrument: str
    key: Ed25519PrivateKey = field(default_factory=generate)
    boot: int = 1
    seq: int = 0
    prev: str = GENESIS
    kid: str = ""
    boot_t: int | None = None  # wall time when mono read 0: mono follows t, as a real agent's clocks agree

    def __post_init__(self) -> None:
        self.kid = key_id(self.key)

    def record(self, t: int, type_: str, **body: Any) -> dict[str, Any]:
        self.seq += 1
        if self.boot_t is None:
            self.boot_t = t - 1000
        rec = {"agent": self.agent, "boot": self.boot, "seq": self.seq, "t": t, "mono": max(0, t - self.boot_t),
               "prev": self.prev, "type": type_, **body}
        self.prev = hashlib.sha256(dumps_sorted(rec)).hexdigest()
        return rec

    def envelope(self, records: list[dict[str, Any]], sent: int) -> bytes:
        body = {"v": 1, "msg": "rec", "agent": self.agent, "key": self.kid, "unit": self.unit,
                "instrument": self.instrument, "boot": self.boot, "sent": sent, "records": records}
        body["sig"] = sign(self.key, dumps_sorted(body))
        return dumps_sorted(body)

    def register(self, conn: psycopg.Connection[Any], org: str = "bench-org") -> None:
        conn.execute("INSERT INTO organisations (id, name) VALUES (%s, 'Bench') ON CONFLICT DO NOTHING", (org,))
        conn.execute("INSERT INTO units (id, org_id, name) VALUES (%s, %s, 'u') ON CONFLICT DO NOTHING",
                     (self.unit, org))
        conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i')", (self.instrument, self.unit))
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (self.agent, self.instrument))
        conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                     (self.kid, self.agent, public_to_b64(self.key)))


def register_fleet(conn: psycopg.Connection[Any], fleet: list[SimAgent]) -> None:
    """A fleet's organisation, units, instruments, agents and keys in bulk (`SimAgent.register` is one
    agent at a time), inside the caller's transaction."""
    conn.execute("INSERT INTO organisations (id, name) VALUES ('o', 'Bench')")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO units (id, org_id, name) VALUES (%s, 'o', 'u')",
                        [(u,) for u in sorted({a.unit for a in fleet})])
        cur.executemany("INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i')",
                        [(a.instrument, a.unit) for a in fleet])
        cur.executemany("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)",
                        [(a.agent, a.instrument) for a in fleet])
        cur.executemany("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                        [(a.kid, a.agent, public_to_b64(a.key)) for a in fleet])


def backlog_envelopes(fleet: list[SimAgent], days: int, per_envelope: int = 500) -> list[tuple[str, bytes]]:
    """(topic, envelope) of `days` typical days of each agent, ending yesterday, agents interleaved
    envelope by envelope as a broker delivers a reconnected fleet's spools."""
    day0 = (int(time.time() * 1000) // DAY_MS - days - 1) * DAY_MS
    now = int(time.time() * 1000)
    per_agent = []
    for a in fleet:
        recs = [r for d in range(days) for r in typical_day(a, day0 + d * DAY_MS)]
        top = topics.topic(a.unit, a.instrument, topics.Kind.REC)
        per_agent.append([(top, a.envelope(recs[i:i + per_envelope], now)) for i in range(0, len(recs), per_envelope)])
    return [lst[k] for k in range(max(map(len, per_agent))) for lst in per_agent if k < len(lst)]


def typical_day(a: SimAgent, day0: int, heartbeat_ms: int = 300_000, runs: int = 3) -> list[dict[str, Any]]:
    """One day of an instrument at the agent's defaults: the agent up all day, heartbeats every
    5 min, `runs` sessions each with a ~1.4 h run (1,500 h a year over 365 days ~ 4.1 h/day)."""
    out: list[dict[str, Any]] = []
    events: list[tuple[int, int, str, dict[str, Any]]] = []
    for k in range(runs):
        start = day0 + (9 + 3 * k) * 3_600_000
        sid = f"s{day0 // DAY_MS}-{k}"
        events += [(start - 600_000, 0, "session_start", {"session": sid, "method": "os", "user": f"user{k}"}),
                   (start, 1, "state", {"state": "running", "prev_state": "idle", "rule": "power>=run",
                                        "evidence": {"power": {"mw": 850_000}}}),
                   (start + 4_932_000, 1, "state", {"state": "idle", "prev_state": "running", "rule": "power<run",
                                                    "evidence": {"power": {"mw": 120_000}}}),
                   (start + 5_400_000, 0, "session_end", {"session": sid, "reason": "checkout"})]
    state = "idle"
    hb: dict[int, tuple[int, int, str, dict[str, Any]]] = {
        t: (t, 2, "heartbeat", {}) for t in range(day0 + heartbeat_ms, day0 + DAY_MS + 1, heartbeat_ms)}
    for t, _, kind, kw in sorted([*events, *hb.values()], key=lambda e: (e[0], e[1])):
        if kind == "heartbeat":
            out.append(a.record(t, "heartbeat", state=state, period_ms=heartbeat_ms,
                                evidence={"power": {"mw": 850_000 if state == "running" else 120_000}}))
        else:
            if kind == "state":
                state = kw["state"]
            out.append(a.record(t, kind, **kw))
    return out


def write_ingest_config(path: Path, dsn: str, broker: MosquittoServer, client_id: str, group: str,
                        **ingest: Any) -> Path:
    ing = {"batch_max_wait_ms": 20, **ingest}
    path.write_text(
        f'log_level = "WARNING"\n[database]\ndsn = "{dsn}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "{client_id}"\n'
        f'share_group = "{group}"\n'
        "[ingest]\n" + "".join(f"{k} = {v!r}\n" for k, v in ing.items()) + "[metrics]\nport = 0\n"
    )
    return path


def start_ingest(config: Path, log: Path, code: Path = ROOT) -> subprocess.Popen[bytes]:
    """`jishi-server ingest` from the tree `code` (another revision's checkout for a baseline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JISHI_")}
    env["PYTHONPATH"] = str(code)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "server.cli", "--config", str(config), "ingest"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=code)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait(cond: Any, timeout: float, every: float = 0.1) -> float:
    """Poll cond() until true; return the time it became true (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(every)


def sched_s(pid: int) -> float:
    """CPU seconds a process (e.g. a PostgreSQL backend) has run, from the scheduler's own count."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def machine() -> str:
    import platform

    cpu = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.node()}: {cpu} cores, {mem:.0f} GiB, Python {platform.python_version()}; load average {load}"


def compiled_modules(root: Path) -> list[str]:
    """The modules of the tree at `root` that are extension modules beside their source (compiled by
    mypyc, bench/mypyc_tree.sh): Python imports those instead of the .py. Empty for a plain tree."""
    out = []
    for so in sorted((*root.glob("protocols/**/*.so"), *root.glob("server/**/*.so"))):
        mod = so.relative_to(root).with_suffix("").with_suffix("")  # name.cpython-311-x86_64-linux-gnu.so
        if (root / mod).with_suffix(".py").exists():
            out.append(".".join(mod.parts))
    return out


def fleet_publisher(broker: MosquittoServer, client_id: str) -> mqtt.Client:
    """A connected, running MQTT client for `publish_fleet` (the caller stops it once delivered)."""
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    return pub


def publish_fleet(pub: mqtt.Client, fleet: list[SimAgent], period: float, seconds: float) -> int:
    """Every agent of `fleet` publishes a heartbeat once per `period` (at a fixed random offset), a
    tenth of them a state change too, for `seconds`; returns the envelopes sent. The live benches'
    steady load."""
    rng = random.Random(1)
    offsets = sorted((rng.random() * period, i) for i in range(len(fleet)))
    states = ["idle"] * len(fleet)
    sent = 0
    t_start = time.time()
    end = t_start + seconds
    rnd = 0
    while time.time() < end:
        base = t_start + rnd * period
        for off, i in offsets:
            delay = base + off - time.time()
            if delay > 0:
                time.sleep(delay)
            if time.time() >= end:
                break
            a = fleet[i]
            t_ms = int(time.time() * 1000)
            recs = []
            if rnd % 10 == i % 10:
                new = "running" if states[i] == "idle" else "idle"
                recs.append(a.record(t_ms, "state", state=new, prev_state=states[i], rule="bench", evidence={}))
                states[i] = new
            recs.append(a.record(t_ms, "heartbeat", state=states[i], period_ms=int(period * 1000), evidence={}))
            pub.publish(topics.topic(a.unit, a.instrument, topics.Kind.REC), a.envelope(recs, t_ms), qos=1)
            sent += 1
        rnd += 1
    return sent


def live_schedule(n: int, period: float, seconds: float, burst_fraction: float, burst_every: float,
                  seed: int = 1, steady_changes: float = 0.0) -> list[tuple[float, int, bool]]:
    """(offset s, agent index, is a state change) of a real fleet's live traffic: each agent's heartbeat
    every `period` s (the agent's default is 300 s) at its own phase (`steady_changes` of them state
    changes instead), and every `burst_every` s a burst
    in which `burst_fraction` of the instruments change state within one second (a power cut, the
    morning's start); sorted by time."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        off = rng.random() * period
        while off < seconds:
            events.append((off, i, rng.random() < steady_changes))
            off += period
    if burst_fraction > 0 and burst_every > 0:
        b = burst_every / 2
        while b < seconds:
            for i in rng.sample(range(n), int(n * burst_fraction)):
                events.append((b + rng.random(), i, True))
            b += burst_every
    return sorted(events)


class LiveFleet:
    """Publishes `live_schedule` events as the agent does live: each record in its own signed
    envelope, sent when it is made. Keeps each instrument's state across calls."""

    def __init__(self, pub: mqtt.Client, fleet: list[SimAgent], period: float) -> None:
        self.pub, self.fleet, self.period_ms = pub, fleet, int(period * 1000)
        self.states = ["idle"] * len(fleet)

    def send(self, i: int, change: bool) -> None:
        a = self.fleet[i]
        t_ms = int(time.time() * 1000)
        if change:
            new = "running" if self.states[i] == "idle" else "idle"
            rec = a.record(t_ms, "state", state=new, prev_state=self.states[i], rule="bench", evidence={})
            self.states[i] = new
        else:
            rec = a.record(t_ms, "heartbeat", state=self.states[i], period_ms=self.period_ms, evidence={})
        self.pub.publish(topics.topic(a.unit, a.instrument, topics.Kind.REC), a.envelope([rec], t_ms), qos=1)

    def play(self, events: list[tuple[float, int, bool]], start: float | None = None) -> int:
        """Send each event at `start` + its offset; returns the envelopes sent."""
        start = time.time() if start is None else start
        for off, i, change in events:
            delay = start + off - time.time()
            if delay > 0:
                time.sleep(delay)
            self.send(i, change)
        return len(events)
