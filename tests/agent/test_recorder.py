"""Every record the agent makes validates against the server's strict models (protocols.records),
whatever the detectors put in their evidence."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from agent import clock
from agent.clock import Clock
from agent.recorder import Recorder, clean_by_detector
from agent.spool import Spool
from agent.state import Transition
from protocols import records
from protocols.envelope import MAX_RECORD_BYTES, envelope
from protocols.signing import generate
from protocols.validate import check_signature, open_envelope

RECORD = TypeAdapter(records.Record)


@pytest.fixture
def rec(tmp_path: Path) -> Recorder:
    spool = Spool(tmp_path / "spool.db", "agent-1")
    return Recorder(spool, "agent-1", spool.start_boot(), Clock(2000))


def stored(r: Recorder) -> list[dict[str, Any]]:
    return [orjson.loads(b) for (b,) in r.spool.db.execute("SELECT body FROM records ORDER BY seq")]


def test_every_record_type_validates(rec: Recorder) -> None:
    t = rec.clock.now()[0]
    rec.lifecycle("boot", {"sw": "jishi-agent/0.1.0", "pid": 123, "os": "Linux", "config": "abc"})
    rec.lifecycle("clock", {"jump_ms": -3600_000})
    rec.lifecycle("detector_error", {"detector": "power", "error": "x" * 1000})
    rec.state(Transition("running", "idle", t - 500, t - 400, 100), "power or software",
              {"power": {"v": "running", "mw": 850_000, "lvl": 2}, "software": {"v": "idle", "cpu": 3}})
    rec.heartbeat("running", 300_000, {"power": {"n": 300, "run": 300, "mw_min": 1, "mw_max": 2, "mw_avg": 1}})
    rec.session_start("0123abcd", "os", "DOMAIN\\zhang.san")
    rec.session_start("0123abce", "card", "hmac-sha256:" + "ab" * 32)
    rec.session_end("0123abcd", "idle_timeout")
    rec.sample("power_mw", "mW", t, 1000, [1, None, 3] * 700)  # split into records of <= 600 values
    before = stored(rec)
    rec.spool.enforce_limits(1, 10**12, t, rec.overflow_builder)  # drops samples and the heartbeat
    recs = before + [r for r in stored(rec) if r["type"] == "spool_overflow"]
    assert {r["type"] for r in recs} == set(records.RECORD_TYPES)
    assert sum(1 for r in recs if r["type"] == "sample") == 4
    for r in recs:
        RECORD.validate_python(r, strict=True)
        assert len(orjson.dumps(r, option=orjson.OPT_SORT_KEYS)) <= MAX_RECORD_BYTES
    # and as an envelope, sealed and opened as the server does
    key = generate()
    data = envelope(key=key, agent="agent-1", unit="u", instrument="i", boot=1, sent=t, records=before)
    opened = open_envelope(data)
    check_signature(opened.body, key.public_key())


def test_all_types_covered_including_samples(rec: Recorder) -> None:
    t = rec.clock.now()[0]
    rec.sample("power_mw", "mW", t, 100, [5, 6])
    rec.lifecycle("stop", {})
    for r in stored(rec):
        RECORD.validate_python(r, strict=True)
    assert {r["type"] for r in stored(rec)} == {"sample", "lifecycle"}


def test_card_users_must_be_hashed(rec: Recorder) -> None:
    with pytest.raises(ValueError, match="keyed hash"):
        rec.session_start("abcd", "card", "04A1B2C3")


def test_time_window_constants_match_the_protocol() -> None:
    assert clock.MIN_T == records.MIN_T and clock.MAX_T == records.MAX_T


def test_clock_outside_window_is_clamped(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Clock(2000, last_t=1_800_000_000_000)
    monkeypatch.setattr(time, "time_ns", lambda: 946_684_800_000 * 1_000_000)  # 2000-01-01
    t, _ = c.now()
    assert c.wall_invalid and records.MIN_T <= t and t >= 1_800_000_000_000


scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=400),
                    st.lists(st.integers(), max_size=3))
evidence = st.dictionaries(st.text(max_size=40), st.dictionaries(st.text(max_size=40), scalars, max_size=20),
                           max_size=20)


@settings(max_examples=40)
@given(ev=evidence)
def test_any_evidence_becomes_valid(ev: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("hyp")
    spool = Spool(d / "s.db", "agent-1")
    r = Recorder(spool, "agent-1", spool.start_boot(), Clock(2000))
    t = r.clock.now()[0]
    r.state(Transition("idle", "unknown", t, t, 0), "power", ev)
    r.heartbeat("idle", 1000, ev)
    r.lifecycle("detector_error", next(iter(ev.values()), {}))
    for x in stored(r):
        RECORD.validate_python(x, strict=True)
    spool.close()
    assert len(clean_by_detector(ev)) <= 16
