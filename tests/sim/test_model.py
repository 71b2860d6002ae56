"""The usage model: deterministic, gap-free, consistent truth; scripted schedules; the CLI."""

from __future__ import annotations

import csv
import itertools
import json
from datetime import datetime
from pathlib import Path

from sim.catalog import INSTRUMENTS, PEOPLE, bench_instruments
from sim.cli import main as sim_main
from sim.model import DAY, HOUR, TZ, generate, load_schedule, ms

T0 = ms(datetime(2025, 3, 1, tzinfo=TZ))
T1 = ms(datetime(2025, 5, 1, tzinfo=TZ))


def test_same_seed_same_truth_other_seed_other_truth() -> None:
    spec = INSTRUMENTS[2]
    a, b = generate(spec, PEOPLE, T0, T1, seed=1), generate(spec, PEOPLE, T0, T1, seed=1)
    c = generate(spec, PEOPLE, T0, T1, seed=2)
    assert a.as_dict() == b.as_dict()
    assert a.as_dict() != c.as_dict()


def test_truth_is_consistent() -> None:
    for spec in INSTRUMENTS:
        tr = generate(spec, PEOPLE, T0, T1, seed=5)
        # states cover [t0, t1) without gaps or overlaps
        assert tr.states[0][0] == T0 and tr.states[-1][1] == T1
        assert all(x[1] == y[0] for x, y in zip(tr.states, tr.states[1:], strict=False))
        assert all(a < b for a, b, _ in tr.states)
        # every run is running in the states, and the running states are exactly the runs
        running = [(a, b) for a, b, s in tr.states if s == "running"]
        assert sum(b - a for a, b in running) == sum(r.end - r.start for r in tr.runs)
        for r in tr.runs:
            assert tr.state_at(r.start) == "running" and r.start <= r.signal_end <= r.end
        if spec.always_on:
            assert not tr.off_intervals()
        # sessions follow one another; a forgotten check-out has none
        ins = sorted(tr.sessions, key=lambda s: s.check_in)
        assert all(x.left <= y.check_in for x, y in itertools.pairwise(ins))
        assert all(s.check_out in (None, s.left) for s in ins)
        # the agent is up most of the time, down for reboots and crashes
        up = sum(u.end - u.start for u in tr.agent)
        assert 0.99 * (T1 - T0) < up <= T1 - T0


def test_usage_resembles_the_reference_figures() -> None:
    """Two months: weekends quieter than weekdays, external users present, some forgotten check-outs."""
    specs = bench_instruments(12)
    truths = [generate(s, PEOPLE, T0, T1, seed=7) for s in specs]
    per_year = sum(t.running_ms() for t in truths) / len(truths) / HOUR * 365 * DAY / (T1 - T0)
    assert 400 < per_year < 2000  # Inner Mongolia 694, central level 1,599 (domain notes)
    sharing = sum(t.external_running_ms() for t in truths) / sum(t.running_ms() for t in truths)
    assert 0.15 < sharing < 0.6  # 43 % / 17 %
    weekend = weekday = 0
    for t in truths:
        for r in t.runs:
            d = datetime.fromtimestamp(r.start / 1000, TZ)
            weekend += d.weekday() >= 5
            weekday += d.weekday() < 5
    assert weekend < weekday / 5
    assert any(s.check_out is None for t in truths for s in t.sessions)
    assert any(t.dips for t in truths) and any(t.glitches for t in truths)


def test_scripted_schedule(tmp_path: Path) -> None:
    f = tmp_path / "schedule.toml"
    f.write_text("""
start = "2026-03-02T00:00"
end = "2026-03-03T00:00"
[[instrument]]
id = "imu-xrd"
unit = "imu"
faults = [["2026-03-02T15:00", "2026-03-02T16:00"]]
[[instrument.session]]
user = "imu-p01"
check_in = "2026-03-02T09:00"
check_out = "2026-03-02T12:00"
runs = [["2026-03-02T09:10", "2026-03-02T10:10"], ["2026-03-02T10:30", "2026-03-02T11:30"]]
[[instrument.session]]
user = "imu-p20"
check_in = "2026-03-02T14:00"
left = "2026-03-02T16:30"
runs = [["2026-03-02T14:10", "2026-03-02T15:30"]]
""")
    (tr,) = load_schedule(f, PEOPLE)
    assert tr.running_ms() == 2 * HOUR + 50 * 60_000  # the fault cut the last run at 15:00
    assert [s.check_out is None for s in tr.sessions] == [False, True]
    assert tr.sessions[0].identifier == next(p.login for p in PEOPLE if p.id == "imu-p01")
    assert tr.state_at(ms(datetime(2026, 3, 2, 15, 30, tzinfo=TZ))) == "fault"
    assert tr.state_at(ms(datetime(2026, 3, 2, 8, 0, tzinfo=TZ))) == "off"


def test_cli_writes_truth_as_json_and_csv(tmp_path: Path, capsys: object) -> None:
    assert sim_main(["truth", "--instruments", "2", "--from", "2025-06-01", "--to", "2025-06-15",
                     "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "truth.json").read_text())
    assert [i["instrument"] for i in doc["instruments"]] == ["imu-tem", "imu-nmr"]
    with (tmp_path / "runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"instrument", "start", "end", "hours", "user", "external"} <= set(rows[0])
    total = sum(float(r["hours"]) for r in rows)
    assert abs(total - sum(i["running_hours"] for i in doc["instruments"])) < 0.01
