"""State: the rule language (three-valued), combining verdicts, debounce without flapping,
post-processing hold and warm-up."""

from __future__ import annotations

from typing import cast

import pytest

from agent.detectors.base import Observation, Verdict
from agent.state import RuleError, StateMachine, combine, default_on_rule, parse_rule

NAMES = ["power", "software", "files", "serial"]


def vs(items: list[str]) -> list[Verdict]:
    return cast(list[Verdict], items)


def obs(**verdicts: Verdict) -> dict[str, Observation]:
    return {name: Observation(v) for name, v in verdicts.items()}


def test_rule_logic_is_three_valued() -> None:
    r = parse_rule("power or software.running", NAMES)
    assert r(obs(power="running", software="unknown")) is True
    assert r(obs(power="unknown", software="idle")) is None  # cannot tell: never a fake running
    assert r(obs(power="idle", software="idle")) is False
    a = parse_rule("power and not (files or serial.fault)", NAMES)
    assert a(obs(power="running", files="idle", serial="idle")) is True
    assert a(obs(power="running", files="idle", serial="fault")) is False
    assert a(obs(power="off", files="unknown", serial="idle")) is False
    assert a(obs(power="running", files="unknown", serial="idle")) is None


@pytest.mark.parametrize("bad", ["", "power or", "(power", "power)", "pwr", "power.hot", "power and and files",
                                 "power ; files"])
def test_bad_rules_are_refused(bad: str) -> None:
    with pytest.raises(RuleError):
        parse_rule(bad, NAMES)


def test_combine() -> None:
    running = parse_rule("power or software", NAMES)
    on = parse_rule(default_on_rule(["power", "software"], NAMES), NAMES)
    assert combine(obs(power="running", software="off"), running, on) == "running"
    assert combine(obs(power="idle", software="off"), running, on) == "idle"
    assert combine(obs(power="off", software="off"), running, on) == "off"
    assert combine(obs(power="unknown", software="idle"), running, on) == "unknown"
    assert combine(obs(power="unknown", software="running"), running, on) == "running"
    assert combine(obs(power="fault", software="idle"), running, on) == "fault"


def machine(confirm: int = 0, post: int = 0, warmup: str | None = None, warmup_max: int = 10_000) -> StateMachine:
    names = ["power", "software"]
    return StateMachine(parse_rule("power", names), parse_rule("power.on", names),
                        parse_rule(warmup, names) if warmup else None, confirm, post, warmup_max)


def play(m: StateMachine, verdicts: list[Verdict], step: int = 100, sw: Verdict = "idle") -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for i, v in enumerate(verdicts):
        tr = m.update(obs(power=v, software=sw), 1_700_000_000_000 + i * step, i * step)
        if tr:
            out.append((i, tr.state))
    return out


def test_confirm_suppresses_short_blips() -> None:
    m = machine(confirm=300)
    seq = vs(["idle"] * 5 + ["running", "idle"] * 10 + ["running"] * 6)
    changes = play(m, seq)
    assert changes == [(3, "idle"), (28, "running")]


def test_post_run_hold_counts_post_processing_as_running() -> None:
    m = machine(post=500)
    seq = vs(["idle"] * 2 + ["running"] * 5 + ["idle"] * 3 + ["running"] * 2 + ["idle"] * 10)
    changes = play(m, seq)
    # the short dip at 7..9 is inside the hold: one run, ending 500 ms after the last running poll
    assert changes == [(0, "idle"), (2, "running"), (16, "idle")]


def test_transition_since_is_the_first_poll_of_the_new_state() -> None:
    m = machine(confirm=300)
    trs = []
    for i, v in enumerate(vs(["idle"] * 5 + ["running"] * 6)):
        tr = m.update(obs(power=v, software="idle"), 1000 + i * 100, i * 100)
        if tr:
            trs.append(tr)
    assert trs[-1].state == "running" and trs[-1].since == 1500 and trs[-1].raw_since == 1500


def test_warmup_goes_back_to_the_start_of_preparation_bounded() -> None:
    m = machine(warmup="software.on", warmup_max=400)
    trs = []
    power = vs(["idle"] * 11 + ["running"] * 3)
    software = vs(["off"] * 3 + ["idle"] * 11)
    for i, (p, s) in enumerate(zip(power, software, strict=True)):
        tr = m.update(obs(power=p, software=s), 10_000 + i * 100, i * 100)
        if tr:
            trs.append(tr)
    run = trs[-1]
    assert run.state == "running" and run.raw_since == 11_100
    assert run.since == 11_100 - 400 and run.warmup_ms == 400  # software opened at 10_300, capped at 400 ms


def test_hovering_power_does_not_flap() -> None:
    """The power detector's hysteresis plus the state's confirm time: a draw hovering around a
    boundary gives one state, not a change per poll."""
    from agent.detectors.power_meter import Level, Levels

    levels = Levels((Level("off", 5), Level("idle", 100), Level("running")), hysteresis_w=5)
    m = machine(confirm=200)
    changes = []
    readings = [40.0] * 5 + [98.0, 102.0, 99.0, 103.0, 97.0, 101.0] * 5 + [130.0] * 5 + [101.0, 97.0] * 5 + [50.0] * 4
    for i, w in enumerate(readings):
        idx = levels.classify(round(w * 1000))
        tr = m.update({"power": Observation(levels.states[idx])}, 1000 + i * 100, i * 100)
        if tr:
            changes.append(tr.state)
    assert changes == ["idle", "running", "idle"]
