"""Spool: contiguous seqs, chain, boot counter, trim only below the ack, limits drop samples and
then heartbeats (never state/session/lifecycle) and say exactly what went, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.clock import Clock
from agent.recorder import Recorder
from agent.spool import Spool, SpoolError
from protocols.chain import GENESIS, check_run
from protocols.records import SpoolOverflowRecord

ROOT = Path(__file__).resolve().parents[2]


def make(tmp_path: Path) -> tuple[Spool, Recorder]:
    spool = Spool(tmp_path / "spool.db", "a1")
    boot = spool.start_boot()
    return spool, Recorder(spool, "a1", boot, Clock(2000))


def all_records(spool: Spool) -> list[dict[str, Any]]:
    return [orjson.loads(b) for (b,) in spool.db.execute("SELECT body FROM records ORDER BY seq")]


def test_seq_chain_and_boot(tmp_path: Path) -> None:
    spool, rec = make(tmp_path)
    rows = [rec.lifecycle("boot", {"sw": "x"}) for _ in range(5)]
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    recs = all_records(spool)
    assert recs[0]["prev"] == GENESIS
    assert check_run(recs) == rows[-1].hash
    spool.close()
    spool2 = Spool(tmp_path / "spool.db", "a1")
    assert spool2.start_boot() == 2
    rec2 = Recorder(spool2, "a1", 2, Clock(2000))
    row = rec2.lifecycle("boot", {})
    assert row.seq == 6
    check_run(all_records(spool2))


def test_spool_of_another_agent_is_refused(tmp_path: Path) -> None:
    Spool(tmp_path / "spool.db", "a1").close()
    with pytest.raises(SpoolError, match="belongs to agent 'a1'"):
        Spool(tmp_path / "spool.db", "b2")


def test_failed_builder_leaves_no_trace(tmp_path: Path) -> None:
    spool, rec = make(tmp_path)
    rec.lifecycle("boot", {})

    def bad(seq: int, prev: str) -> dict[str, object]:
        return {"seq": seq, "prev": prev, "type": "x", "t": 1, "bad": 1.5}  # float: not canonical

    with pytest.raises(ValueError):
        spool.append(bad)
    assert rec.lifecycle("stop", {}).seq == 2
    check_run(all_records(spool))


def test_ack_trims_only_below(tmp_path: Path) -> None:
    spool, rec = make(tmp_path)
    for _ in range(10):
        rec.lifecycle("boot", {})
    assert spool.ack(4) == 4
    st = spool.stats(exact=True)
    assert (st.first_seq, st.next_seq, st.acked, st.count) == (5, 11, 4, 6)
    assert spool.stats().count == 6 and spool.stats().bytes == -1
    assert spool.ack(2) == 0 and spool.stats().acked == 4  # an old ack never goes backwards
    with pytest.raises(SpoolError):
        spool.ack(11)  # beyond what exists: refused, nothing trimmed
    assert spool.stats(exact=True).count == 6
    rows = spool.read(5, 100, 10**6)
    assert [r.seq for r in rows] == list(range(5, 11))
    assert [r.seq for r in spool.read(5, 3, 10**6)] == [5, 6, 7]


def test_stats_read_one_snapshot_while_another_connection_appends(tmp_path: Path) -> None:
    """The publisher reads stats on its own connection while the agent appends on another. An append
    that commits between stats' statements must not make first_seq jump past it: the publisher's
    cursor starts at first_seq and would skip the record (a gateway's boot record after kill -9)."""
    spool, rec = make(tmp_path)
    for _ in range(9):
        rec.lifecycle("boot", {})
    spool.ack(9)  # all sent and acknowledged: the table is empty, next_seq 10
    reader = Spool(tmp_path / "spool.db", "a1")
    appended: list[int] = []

    def append_after_the_first_read(sql: str) -> None:
        if "FROM meta" in sql and not appended:  # the statements after `min(seq)`
            appended.append(rec.lifecycle("boot", {}).seq)

    reader.db.set_trace_callback(append_after_the_first_read)
    st = reader.stats()
    reader.db.set_trace_callback(None)
    assert appended == [10]
    assert st.first_seq == 10, "the record appended meanwhile would be skipped"
    assert st.next_seq in (10, 11)
    assert [r.seq for r in reader.read(st.first_seq, 100, 10**6)] == [10]
    reader.close()


def test_limits_drop_samples_then_heartbeats_never_state(tmp_path: Path) -> None:
    spool, rec = make(tmp_path)
    rec.lifecycle("boot", {})
    for i in range(30):
        rec.sample("power_mw", "mW", 1_700_000_000_000 + i * 60_000, 1000, list(range(100)))
        if i % 3 == 0:
            rec.heartbeat("idle", 300_000, {"power": {"n": 300}})
        if i % 10 == 0:
            rec.session_start(f"s{i}", "checkin", "zhang")
    size = spool.stats(exact=True).bytes
    dropped = spool.enforce_limits(size // 2, 10**12, rec.clock.now()[0], rec.overflow_builder)
    assert dropped
    remaining = all_records(spool)
    types = [r["type"] for r in remaining]
    assert types.count("session_start") == 3 and types.count("lifecycle") == 1
    assert types.count("heartbeat") == 10  # samples were enough: no heartbeat dropped
    overflow = [r for r in remaining if r["type"] == "spool_overflow"]
    assert len(overflow) == 1
    SpoolOverflowRecord.model_validate(overflow[0])
    # the ranges name exactly the missing seqs, and each last_hash lets the chain continue
    held = {r["seq"] for r in remaining}
    missing = set(range(1, spool.stats().next_seq)) - held
    named = {s for d in overflow[0]["dropped"] for s in range(d["first"], d["last"] + 1)}
    assert named == missing
    by_seq = {r["seq"]: r for r in remaining}
    for d in overflow[0]["dropped"]:
        nxt = by_seq.get(d["last"] + 1)
        if nxt is not None:
            assert nxt["prev"] == d["last_hash"]
    # size limit so small that samples are not enough: heartbeats go next, state never
    spool.enforce_limits(1, 10**12, rec.clock.now()[0], rec.overflow_builder)
    types = [r["type"] for r in all_records(spool)]
    assert "sample" not in types and "heartbeat" not in types
    assert types.count("session_start") == 3 and types.count("spool_overflow") == 2


def test_age_limit_drops_old_samples(tmp_path: Path) -> None:
    spool, rec = make(tmp_path)
    now = rec.clock.now()[0]
    old = rec.emit("sample", {"signal": "p", "unit": "mW", "start": now, "step_ms": 1000, "values": [1]},
                   t=now - 10 * 86_400_000)
    rec.lifecycle("boot", {})
    dropped = spool.enforce_limits(10**9, 86_400_000, now, rec.overflow_builder)
    assert dropped == [(old.seq, old.seq)]


CRASHER = """
import sys, time
from pathlib import Path
from typing import Any
from agent.clock import Clock
from agent.recorder import Recorder
from agent.spool import Spool
spool = Spool(Path(sys.argv[1]), "crash")
rec = Recorder(spool, "crash", spool.start_boot(), Clock(2000))
print("ready", flush=True)
while True:
    rec.heartbeat("running", 100, {"power": {"mw": 123456, "n": 5}})
    rec.lifecycle("clock", {"jump_ms": 5})
"""


def test_kill_9_during_appends_never_leaves_a_hole(tmp_path: Path) -> None:
    """A writer is killed (SIGKILL) at arbitrary moments, many times: seqs stay contiguous,
    the chain intact, and the next writer continues exactly after the last committed record."""
    db = tmp_path / "spool.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i in range(6):
        proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(db)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.15 + 0.05 * i)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    spool = Spool(db, "crash")
    recs = all_records(spool)
    assert len(recs) > 20
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert check_run(recs) == spool.stats().last_hash
    assert spool.stats().next_seq == len(recs) + 1
    assert spool.stats().boot == 6
