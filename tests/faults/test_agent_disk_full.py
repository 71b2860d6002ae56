"""The disk under the agent's spool fills up (another program takes every free byte, twice) while
the agent cannot reach the server, then space returns and the server comes back.

What must happen (agent/spool.py, "A full disk"): a clear ERROR in the agent's log; the agent
does not crash and keeps recording: it releases its reserve file, drops the oldest `sample`
then `heartbeat` records and declares them in `spool_overflow` records; every state, session and
lifecycle record is kept; once space is back the reserve is written again (logged) and the agent
carries on. The server then receives everything that was not declared dropped, stores it once,
continues the chain across the declared holes, and refuses nothing.

The spool sits on a small tmpfs mounted for the test (root: CI runs as root). Without root there
is no way to fill a private filesystem, and the test is skipped saying so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.spool import Spool, SpoolFull
from protocols.chain import GENESIS
from server.ingest.service import Ingest
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, write_config
from tests.faults.common import HEARTBEAT, PERIOD, Schedule, enrol, meter_toml, outcome, progress, wait_until
from tests.server.helpers import settings_for

DISK_MB = 8


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the spool (CI runs the suite as root)")
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(path: Path) -> int:
    """Write `path` until the disk is full (ENOSPC); the bytes written."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1 << 6):
            while True:
                try:
                    n += os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return n


def spool_next(data: Path, agent_id: str) -> tuple[int, int]:
    """(next_seq, spool_overflow records held) read from the spool, read-only."""
    sp = Spool(data / "spool.db", agent_id, readonly=True)
    try:
        n = sp.db.execute("SELECT count(*) FROM records WHERE type = 'spool_overflow'").fetchone()[0]
        return sp.stats().next_seq, int(n)
    finally:
        sp.close()


def test_disk_full_drops_oldest_samples_keeps_state_and_carries_on(small_disk: Path, pg_dsn: str,
                                                                  mqtt_broker: Any, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    agent_id = f"df-{tag}"
    data = small_disk / "data"
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id=agent_id, broker=mqtt_broker, detectors=meter_toml(meter),
                           running="power", period=PERIOD, heartbeat=HEARTBEAT, mqtt_extra="resend_after_s = 2",
                           extra='[samples]\nenabled = true\nsignals = ["power.mw"]\nrecord_s = 0.25\n\n'
                                 "[spool]\ncheck_s = 0.5\n")
        cfg.write_text(cfg.read_text().replace('data_dir = "data"', f'data_dir = "{data}"'))
        enrol(pg_dsn, tmp_path, agent_id)
        agent = AgentProc(cfg)
        schedule = Schedule(meter, run_s=1.5, idle_s=1.0)
        s = settings_for(pg_dsn, mqtt_broker, client_id=f"ing-{tag}")
        s.mqtt.share_group = f"g-{tag}"
        ing: Ingest | None = None
        fillers = [small_disk / "filler-1", small_disk / "filler-2"]
        try:
            schedule.start()
            agent.start()  # no ingest yet: nothing is acknowledged, the spool only grows
            wait_until(lambda: (data / "spool.db.reserve").exists() and spool_next(data, agent_id)[0] > 30, 20,
                       "the agent recording, its reserve file written")
            fill(fillers[0])
            wait_until(lambda: "DISK FULL" in agent.text(), 30, "the agent noticing the full disk")
            full_at = spool_next(data, agent_id)[0]
            fill(fillers[1])  # whatever the reserve gave back is taken too: no reserve left now
            time.sleep(6.0)
            assert agent.alive(), agent.text()[-3000:]
            during, overflows = spool_next(data, agent_id)
            assert during > full_at + 20, "the agent kept recording on the full disk"
            assert overflows >= 1, "what was dropped is declared"
            assert not (data / "spool.db.reserve").exists()
            for f in fillers:
                f.unlink()
            wait_until(lambda: "disk space is back" in agent.text(), 20, "the agent noticing space is back")
            wait_until(lambda: (data / "spool.db.reserve").exists(), 10, "the reserve written again")
            ing = Ingest(s).start()
            assert ing.wait_connected()
            time.sleep(2.0)
            schedule.stop()
            assert agent.stop() == 0
            last = spool_next(data, agent_id)[0] - 1
            wait_until(lambda: progress(pg_dsn, agent_id) == (last, last), 40, f"all {last} records on the server")
        finally:
            schedule.stop()
            if agent.alive():
                agent.kill()
            if ing is not None:
                ing.stop()
            for f in fillers:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
    log = agent.text()
    assert "Traceback" not in log and "tick failed" not in log, log[-4000:]
    assert re.search(r"ERROR .*DISK FULL .*dropped \d+ oldest sample/heartbeat records", log), log[-3000:]
    got = outcome(pg_dsn, agent_id)
    dropped = sum(b - a + 1 for _, a, b in got["gaps"])
    assert {k for k, _, _ in got["gaps"]} == {"overflow"}, got["gaps"]
    assert got["records"] == got["distinct"] == last - dropped, "records lost beyond those declared, or twice"
    assert got["quarantine"] == []
    # every state change the agent logged is stored (type 1 = state, server/ingest/book.py)
    states = [int(n) for n in re.findall(r"state \w+ -> \w+ \(seq (\d+)\)", log)]
    assert len(states) >= 8
    with_types = dict(got["types"])
    assert with_types.get(1, 0) == len(states), (with_types, len(states))
    print(f"disk full: {last} records, {dropped} oldest samples/heartbeats dropped and declared in "
          f"{len(got['gaps'])} ranges, {len(states)} state records all kept; types stored {with_types}")


def test_spool_on_a_full_disk_keeps_state_records_and_the_chain(small_disk: Path) -> None:
    """The spool alone on a disk that another program keeps full: it carries on well past the
    moment the disk filled up (reserve released, oldest heartbeats dropped and declared), keeps
    every state record it wrote, the chain holds across the declared holes; when nothing is left
    to free it refuses the write with SpoolFull (never wedged, no transaction left open), and once
    space is back it writes again and restores its reserve."""
    import orjson

    sp = Spool(small_disk / "spool.db", "a1")
    boot = sp.start_boot()

    def rec(typ: str, **body: Any) -> Callable[[int, str], dict[str, Any]]:
        def build(seq: int, prev: str) -> dict[str, Any]:
            return {"type": typ, "agent": "a1", "boot": boot, "seq": seq, "prev": prev, "t": 1_800_000_000_000,
                    "mono": seq, **body}
        return build

    def overflow(seq: int, prev: str, ranges: list[dict[str, Any]]) -> dict[str, Any]:
        return rec("spool_overflow", dropped=ranges)(seq, prev)

    sp.overflow = overflow
    hb = {"state": "idle", "period_ms": 1000, "evidence": {"power": {"note": "x" * 200}}}
    for _ in range(300):
        sp.append(rec("heartbeat", **hb))
    fill(small_disk / "filler-1")
    states: list[int] = []
    written = 0
    with pytest.raises(SpoolFull, match="disk full"):
        for i in range(100_000):
            if i % 10 == 0:
                states.append(sp.append(rec("state", state="running", prev_state="idle", rule="r", evidence={})).seq)
            else:
                sp.append(rec("heartbeat", **hb))
            written += 1
            if i % 500 == 0:
                fill(small_disk / "filler-2")  # whatever was given back to the disk is taken again
    assert not sp.db.in_transaction
    assert sp.full_events >= 1 and not sp.reserve.exists()
    assert written > 1000, f"only {written} records written after the disk filled up"
    rows = sp.db.execute("SELECT seq, type, body, hash FROM records ORDER BY seq").fetchall()
    held = {seq: typ for seq, typ, _, _ in rows}
    assert all(held.get(s) == "state" for s in states), "a state record was dropped"
    declared: dict[int, str] = {}
    for _, typ, body, _ in rows:
        if typ == "spool_overflow":
            for r in orjson.loads(body)["dropped"]:
                declared[r["last"]] = r["last_hash"]
    assert declared, "drops are declared"
    prev_hash, prev_seq = GENESIS, 0
    for seq, _, body, digest in rows:
        prev = orjson.loads(body)["prev"]
        assert prev == (prev_hash if seq == prev_seq + 1 else declared[seq - 1]), f"chain broken before {seq}"
        prev_hash, prev_seq = digest, seq
    for f in small_disk.glob("filler-*"):
        f.unlink()
    sp.append(rec("state", state="off", prev_state="running", rule="r", evidence={}))
    assert sp.restore_reserve() and not sp.disk_full and sp.reserve.exists()
    sp.close()
    print(f"spool on a full disk: {written} records written after it filled up, {len(states)} state records "
          f"kept, {sp.full_events} full events, {len(declared)} dropped ranges declared")
