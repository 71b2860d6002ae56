"""Test helpers for the agent: configs, the agent as a real process, and an MQTT collector that
plays the server's part (verifies every envelope and acknowledges what arrived contiguously)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols import envelope as env
from protocols.chain import GENESIS, check_run
from protocols.records import Birth, Death
from protocols.signing import generate, load_private, save_private
from protocols.validate import check_signature, open_envelope, open_message
from sim.modbus_meter import ModbusMeter

ROOT = Path(__file__).resolve().parents[2]


def meter_toml(meter: ModbusMeter) -> str:
    """A power-meter detector on `meter`: off below 5 W, idle below 200 W, else running."""
    return f"""
[detectors.power]
kind = "power_meter"
port = "{meter.port}"
timeout_s = 0.2
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""


def write_config(tmp: Path, *, agent_id: str, broker: Any, detectors: str, running: str,
                 period: float = 0.1, heartbeat: float = 1.0, state_extra: str = "", extra: str = "",
                 checkin_port: int | None = None, mqtt_extra: str = "") -> Path:
    """A complete agent config in `tmp` (key created), talking to `broker`."""
    key = tmp / "agent.key"
    if not key.exists():
        save_private(generate(), key)
    identity = (f"[identity]\nos_session = false\ncheckin = {'true' if checkin_port else 'false'}\n"
                + (f"checkin_port = {checkin_port}\n" if checkin_port else ""))
    text = f"""
[agent]
id = "{agent_id}"
unit = "u-{agent_id}"
instrument = "i-{agent_id}"
key_file = "agent.key"
data_dir = "data"
sample_period_s = {period}
heartbeat_s = {heartbeat}
log_level = "INFO"

[mqtt]
host = "{broker.host}"
port = {broker.port}
backoff_min_s = 0.2
backoff_max_s = 1.0
connect_timeout_s = 3
{mqtt_extra}

[state]
running = "{running}"
confirm_s = 0
post_run_s = 0
{state_extra}

{identity}
{detectors}
{extra}
"""
    path = tmp / "agent.toml"
    path.write_text(text)
    return path


class AgentProc:
    """`jishi-agent run` as a child process, output in a log file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        env_ = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
                                         stdout=out, stderr=out, env=env_, cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Collector:
    """Subscribes to one agent's topics, opens and verifies everything, optionally acks."""

    def __init__(self, broker: Any, config_dir: Path, agent_id: str, ack: bool = True,
                 persistent: bool = False) -> None:
        self.agent_id = agent_id
        self.unit, self.instrument = f"u-{agent_id}", f"i-{agent_id}"
        self.pub = load_private(config_dir / "agent.key").public_key()
        self.ack = ack
        self.lock = threading.Lock()
        self.records: dict[int, dict[str, Any]] = {}
        self.raw: dict[int, bytes] = {}
        self.arrival: list[int] = []  # seqs in order of first arrival
        self.envelopes = 0
        self.payloads: list[bytes] = []  # every `rec` message as it arrived, refused ones too
        self.births: list[Birth] = []
        self.deaths: list[Death] = []
        self.errors: list[str] = []
        self.acked = 0
        base = f"jishi/v1/{self.unit}/{self.instrument}"
        self.base = base
        # persistent: the broker queues QoS 1 messages for us while we reconnect (a server does the same)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{agent_id}",
                                  clean_session=not persistent)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"{base}/rec", 1), (f"{base}/birth", 1), (f"{base}/death", 1)])
        subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        # the broker keeps nothing for a subscription that does not exist yet: an agent started right
        # after this would lose its first envelopes (CI, 2026-12-03)
        if not subscribed.wait(15):
            raise AssertionError(f"collector for {agent_id}: no SUBACK from the broker within 15 s")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[1]
        try:
            if kind == "rec":
                with self.lock:
                    self.payloads.append(bytes(msg.payload))
                opened = open_envelope(bytes(msg.payload))
                check_signature(opened.body, self.pub)
                with self.lock:
                    self.envelopes += 1
                    for rec, digest in zip(opened.body["records"], opened.hashes, strict=True):
                        seq = rec["seq"]
                        if seq in self.records:
                            if self.records[seq] != rec:
                                self.errors.append(f"seq {seq} arrived twice with different content")
                            continue
                        self.records[seq] = rec
                        self.raw[seq] = digest.encode()
                        self.arrival.append(seq)
                    acked = self.acked
                    while acked + 1 in self.records:
                        acked += 1
                    new_ack = acked if acked > self.acked else None
                    self.acked = acked
                if self.ack and new_ack is not None:
                    client.publish(f"{self.base}/ack", env.ack(agent=self.agent_id, acked=new_ack,
                                                               t=time.time_ns() // 1_000_000), qos=1, retain=True)
            elif kind == "birth":
                b = open_message(bytes(msg.payload), Birth)
                check_signature(orjson.loads(msg.payload), self.pub)
                with self.lock:
                    self.births.append(b)
            elif kind == "death":
                d = open_message(bytes(msg.payload), Death)
                check_signature(orjson.loads(msg.payload), self.pub)
                with self.lock:
                    self.deaths.append(d)
        except Exception as exc:
            self.errors.append(f"{kind}: {exc!r}")

    def command(self, **body: Any) -> None:
        self.client.publish(f"{self.base}/cmd", env.command(agent=self.agent_id, t=time.time_ns() // 1_000_000,
                                                            **body), qos=1)

    def wait_for(self, pred: Callable[[Collector], bool], timeout: float = 15, what: str = "") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred(self):
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or pred}; have seqs up to {max(self.records or [0])}, "
                             f"errors {self.errors[:3]}")

    def by_type(self, typ: str) -> list[dict[str, Any]]:
        with self.lock:
            return [self.records[s] for s in sorted(self.records) if self.records[s]["type"] == typ]

    def check_complete_chain(self) -> list[dict[str, Any]]:
        """Every seq from 1 to the highest arrived, linked from GENESIS: nothing lost, nothing reused."""
        with self.lock:
            seqs = sorted(self.records)
            assert seqs, "no records"
            assert seqs == list(range(1, seqs[-1] + 1)), f"missing seqs: {set(range(1, seqs[-1] + 1)) - set(seqs)}"
            recs = [self.records[s] for s in seqs]
        assert recs[0]["prev"] == GENESIS
        check_run(recs)
        return recs

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`jishi-agent ARGS` as a child process."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)


def wait_until(pred: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def spool_meta(cfg: Path) -> dict[str, int]:
    """next_seq, acked and boot from the spool of the agent configured by `cfg` (read-only, while
    it runs); empty while the agent has made the file but not yet its tables."""
    db = sqlite3.connect(f"file:{cfg.parent / 'data' / 'spool.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT key, value FROM meta WHERE key IN ('next_seq', 'acked', 'boot')").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return {}
    finally:
        db.close()
    return {k: int(v) for k, v in rows}


def corrupt_spool_row(spool_path: Path, seq: int, body: bytes) -> None:
    """Change one record's body in the spool file behind the agent's back (its stored hash stays)."""
    db = sqlite3.connect(spool_path)
    try:
        db.execute("UPDATE records SET body = ? WHERE seq = ?", (body, seq))
        db.commit()
    finally:
        db.close()
