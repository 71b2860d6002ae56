"""True run edges against a third-party-style meter at 1 poll/s with the default debounce
(confirm_s 10, post_run_s 60): every edge within 2 s of the schedule, a 10-minute run within 1 %,
short runs, dips and spikes, a dead link that is not counted (tests/agent/edges.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.detectors.base import Observation, Verdict
from agent.state import StateMachine, parse_rule
from tests.agent.edges import DEAD_LINK, SCENARIOS, Schedule, run_schedule


@pytest.mark.parametrize("sched", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_edge_within_2_s(sched: Schedule, tmp_path: Path) -> None:
    r = run_schedule(sched, workdir=tmp_path)
    assert len(r.measured) == len(r.truth), (r.measured, r.truth)
    assert r.edge_errors_ms and max(r.edge_errors_ms) <= 2000, (r.measured, r.truth)
    assert abs(r.running_error) <= 0.01, r.running_error


def test_a_10_minute_run_within_1_percent(tmp_path: Path) -> None:
    r = run_schedule(SCENARIOS[0], workdir=tmp_path)
    assert r.truth == [(30_500, 630_500)]
    assert abs(r.running_error) <= 0.01 and max(r.edge_errors_ms) <= 2000, r.measured


def test_a_dead_link_is_not_counted_as_running(tmp_path: Path) -> None:
    r = run_schedule(DEAD_LINK, workdir=tmp_path)
    # seen: 100.5..300.5 (the link dies at 300.5) and again from 369.5 (plus the confirmation)
    assert len(r.measured) == 2, r.measured
    (a1, b1), (a2, b2) = r.measured
    assert abs(a1 - 100_500) <= 2000 and abs(b1 - 300_500) <= 2000, r.measured
    assert 369_500 <= a2 <= 369_500 + 2000 and abs(b2 - 700_500) <= 2000, r.measured


def play(m: StateMachine, verdicts: list[Verdict]) -> list[tuple[int, str, int, int]]:
    out: list[tuple[int, str, int, int]] = []
    for i, v in enumerate(verdicts):
        tr = m.update({"power": Observation(v)}, 1000 * i, 1000 * i)
        if tr:
            out.append((i, tr.state, tr.since, tr.edge or 0))
    return out


def test_hold_ending_still_stopped_adds_no_time_and_credit_is_declared() -> None:
    names = ["power"]
    idle: list[Verdict] = ["idle"]
    running: list[Verdict] = ["running"]
    seq = idle * 3 + running * 20 + idle * 100
    m = StateMachine(parse_rule("power", names), parse_rule("power.on", names), None, 10_000, 60_000, 0)
    changes = play(m, seq)
    # decided 60 s (hold) + 10 s (confirm) after the stop, but the run ends at the first idle poll
    assert changes[-1] == (92, "idle", 23_000, 23_000)
    m = StateMachine(parse_rule("power", names), parse_rule("power.on", names), None, 10_000, 60_000, 0,
                     post_credit_ms=30_000)
    tr_end = play(m, seq)[-1]
    assert tr_end == (92, "idle", 53_000, 23_000)  # declared invisible post-processing: 30 s after the edge
