"""Shared by the fault tests (and bench/fault_outages.py): a real agent process reading a simulated
Modbus power meter that follows a known schedule (the ground truth), enrolled for the real ingest,
and what the server made of it.

The schedule switches the meter between idle and running draw every few seconds and remembers
the wall-clock time of every switch, so the truth is the running seconds between those times.
The agent polls every `PERIOD` s with no debounce, so each edge is seen at most one poll (plus
scheduling delay on a busy machine) late: measured and true running time agree within a small
allowance per edge, whatever the fault in between.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from protocols.signing import key_id, load_private, public_to_b64
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import meter_toml as meter_toml  # the fault tests take it from here
from tests.agent.helpers import spool_meta as spool_meta

PERIOD = 0.05
HEARTBEAT = 0.5
EDGE_ALLOWANCE_S = 0.5
"""running time measured vs. true, per switch of the meter: detection is one poll late at most,
plus the scheduling delay of a loaded machine (generous: no test is about speed)"""

IDLE_W, RUNNING_W = 40.0, 900.0


class Schedule:
    """Switches the meter: `run_s` running, `idle_s` idle, over and over, from start() to stop().
    `changes` holds (wall time s, state) of every switch: the ground truth."""

    def __init__(self, meter: ModbusMeter, run_s: float = 2.0, idle_s: float = 1.5) -> None:
        self.meter, self.run_s, self.idle_s = meter, run_s, idle_s
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedule", daemon=True)

    def start(self) -> Schedule:
        self._set("idle")
        self._thread.start()
        return self

    def _set(self, state: str) -> None:
        self.meter.watts = RUNNING_W if state == "running" else IDLE_W
        self.changes.append((time.time(), state))

    def _run(self) -> None:
        while not self._stop.wait(self.idle_s if self.changes[-1][1] == "idle" else self.run_s):
            self._set("running" if self.changes[-1][1] == "idle" else "idle")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def running_s(self, lo: float, hi: float) -> float:
        """True running seconds within [lo, hi] (wall-clock seconds)."""
        total = 0.0
        for (a, state), nxt in zip(self.changes, [*self.changes[1:], (float("inf"), "")], strict=True):
            if state == "running":
                total += max(0.0, min(nxt[0], hi) - max(a, lo))
        return total

    def switches(self, lo: float, hi: float) -> int:
        return sum(1 for t, _ in self.changes if lo <= t <= hi)


def enrol(dsn: str, cfg_dir: Path, agent_id: str, org: str | None = None) -> None:
    """Register the agent written by tests.agent.helpers.write_config (unit u-<id>, instrument i-<id>)."""
    key = load_private(cfg_dir / "agent.key")
    unit, instrument, org = f"u-{agent_id}", f"i-{agent_id}", org or f"o-{agent_id}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES (%s, 'Fault Test Univ') ON CONFLICT DO NOTHING",
                     (org,))
        conn.execute("INSERT INTO units (id, org_id, name) VALUES (%s, %s, 'u')", (unit, org))
        conn.execute("INSERT INTO instruments (id, unit_id, name) VALUES (%s, %s, 'i')", (instrument, unit))
        conn.execute("INSERT INTO agents (id, instrument_id) VALUES (%s, %s)", (agent_id, instrument))
        conn.execute("INSERT INTO agent_keys (key_id, agent_id, public_key) VALUES (%s, %s, %s)",
                     (key_id(key), agent_id, public_to_b64(key)))


def progress(dsn: str, agent_id: str) -> tuple[int, int]:
    """(watermark, derived_seq) of the agent on the server; (0, 0) before its first record."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT watermark, derived_seq FROM agent_progress WHERE agent_id = %s",
                           (agent_id,)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def outcome(dsn: str, agent_id: str) -> dict[str, Any]:
    """What the server holds for the agent: record counts, gaps, refusals, running and watched time."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT r.seq) FROM records r JOIN agent_progress p USING (agent_no)"
            " WHERE p.agent_id = %s", (agent_id,)).fetchone() or (0, 0)
        gaps = conn.execute(
            "SELECT g.kind, g.first_seq, g.last_seq FROM gaps g JOIN agent_progress p USING (agent_no)"
            " WHERE p.agent_id = %s ORDER BY g.first_seq", (agent_id,)).fetchall()
        refused = conn.execute("SELECT reason, detail FROM quarantine WHERE agent_id = %s", (agent_id,)).fetchall()
        running = conn.execute(
            "SELECT coalesce(sum(extract(epoch FROM end_at - start_at)), 0) FROM usage_segments"
            " WHERE agent_id = %s AND state = 'running' AND watched", (agent_id,)).fetchone()
        cov = conn.execute(
            "SELECT status, reason, extract(epoch FROM start_at), extract(epoch FROM end_at) FROM coverage"
            " WHERE agent_id = %s ORDER BY start_at", (agent_id,)).fetchall()
        types: dict[int, int] = dict(conn.execute(
            "SELECT r.type, count(*) FROM records r JOIN agent_progress p USING (agent_no)"
            " WHERE p.agent_id = %s GROUP BY r.type", (agent_id,)).fetchall())
    return {"records": int(n), "distinct": int(distinct), "gaps": [(k, int(a), int(b)) for k, a, b in gaps],
            "quarantine": refused, "running_s": float(running[0]) if running else 0.0,
            "coverage": [(s, r, float(a), float(b)) for s, r, a, b in cov], "types": types}


def not_watching(cov: list[tuple[str, str, float, float]], lo: float, hi: float) -> list[tuple[str, str, float]]:
    """Coverage inside [lo, hi] that is not 'watching': (status, reason, seconds)."""
    return [(s, r, round(min(b, hi) - max(a, lo), 3)) for s, r, a, b in cov
            if s != "watching" and min(b, hi) > max(a, lo)]


def wait_until(cond: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
