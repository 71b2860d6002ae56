"""The virtual agent: records the server accepts (strict models, chain, envelopes), and hours that
the one derivation turns back into the truth."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from protocols.chain import check_run
from protocols.derive import Params, Rec, derive
from protocols.signing import generate as new_key
from protocols.signing import public_to_b64
from protocols.validate import check_signature, open_envelope
from sim.catalog import INSTRUMENTS, PEOPLE
from sim.demo import seed_spool
from sim.history import VirtualAgent, envelopes, power_levels, profile
from sim.model import HOUR, TZ, InstrumentSpec, generate, ms

T0 = ms(datetime(2025, 9, 1, tzinfo=TZ))
T1 = ms(datetime(2025, 9, 15, tzinfo=TZ))


def _spec(iid: str) -> InstrumentSpec:
    return next(s for s in INSTRUMENTS if s.id == iid)


def _measured(recs: list[dict[str, object]]) -> float:
    d = derive([Rec.from_record(r, int(r["t"])) for r in recs], Params())  # type: ignore[call-overload]
    return sum(s.end - s.start for s in d.segments if s.state == "running" and s.watched) / HOUR


def test_every_detection_kind_gives_valid_signed_chained_records() -> None:
    kinds: dict[str, InstrumentSpec] = {}
    for s in INSTRUMENTS:
        kinds.setdefault(s.detection, s)
    for spec in kinds.values():
        tr = generate(spec, PEOPLE, T0, T1, seed=11)
        recs = VirtualAgent("a1", spec, tr, profile(spec), seed=11).run()
        check_run(recs)
        assert recs[0]["seq"] == 1 and recs[0]["type"] == "lifecycle"
        key = new_key()
        types: set[str] = set()
        for raw in envelopes("a1", spec.unit_id, spec.id, key, recs, int(time.time() * 1000)):
            opened = open_envelope(raw)  # canonical form, strict models of every record, limits
            check_signature(opened.body, key.public_key())
            types |= {r["type"] for r in opened.body["records"]}
        assert {"lifecycle", "state", "heartbeat", "session_start", "session_end"} <= types, spec.id
        hours = _measured(recs)
        true = tr.running_ms() / HOUR
        assert abs(hours - true) <= 0.01 * true, (spec.id, hours, true)
        assert public_to_b64(key)


def test_running_below_standby_and_ramps_are_not_counted_as_runs() -> None:
    spec = _spec("btri-tga")  # running 90 W, standby 210 W; switching on and off passes 90 W for 4 s
    levels, _ = power_levels(spec)
    assert [lv.state for lv in levels] == ["off", "running", "standby"]
    tr = generate(spec, PEOPLE, T0, T1, seed=4)
    assert tr.ramps
    recs = VirtualAgent("a1", spec, tr, profile(spec), seed=4).run()
    assert abs(_measured(recs) - tr.running_ms() / HOUR) < 0.02 * tr.running_ms() / HOUR
    runs = [r for r in recs if r["type"] == "state" and r["state"] == "running"]
    assert len(runs) == len(tr.runs)  # one state record per true run: no ramp became a run


def test_forgotten_check_out_ends_by_idle_timeout_and_glitches_give_unknown() -> None:
    spec = _spec("imu-xrd")
    tr = next(t for t in (generate(spec, PEOPLE, T0, T1, seed=k) for k in range(100))
              if any(s.check_out is None for s in t.sessions) and any(b - a > 20_000 for a, b in t.glitches))
    recs = VirtualAgent("a1", spec, tr, profile(spec), seed=9).run()
    reasons = {r["reason"] for r in recs if r["type"] == "session_end"}
    assert {"checkout", "idle_timeout"} <= reasons
    # a device silent for longer than the debounce: the agent says it cannot tell, never "running"
    assert any(r["type"] == "state" and r["state"] == "unknown" for r in recs)


def test_seeded_spool_continues_the_chain(tmp_path: Path) -> None:
    from agent.spool import Spool

    seed_spool(tmp_path, "a1", 101, "ab" * 32, 7, T1)
    sp = Spool(tmp_path / "spool.db", "a1")
    try:
        st = sp.stats()
        assert (st.next_seq, st.last_hash, st.boot, st.acked, st.first_seq) == (101, "ab" * 32, 7, 100, 101)
        assert sp.start_boot() == 8
    finally:
        sp.close()
