"""Calibration proposes per-instrument levels, including running drawn below standby."""

from __future__ import annotations

import random

import pytest

from agent.calibrate import clusters, propose_labelled, propose_unlabelled
from agent.detectors.power_meter import Level, Levels


def noisy(rng: random.Random, centre: float, sd: float, n: int) -> list[float]:
    return [max(0.0, rng.gauss(centre, sd)) for _ in range(n)]


def levels_of(prop: object) -> Levels:
    lv = tuple(Level(s, b) for s, b in prop.levels)  # type: ignore[attr-defined]
    return Levels(lv, prop.hysteresis_w)  # type: ignore[attr-defined]


def test_labelled_ordinary_instrument() -> None:
    rng = random.Random(1)
    prop = propose_labelled({"off": noisy(rng, 1, 0.3, 200), "standby": noisy(rng, 60, 3, 200),
                             "running": noisy(rng, 900, 40, 200)})
    assert [s for s, _ in prop.levels] == ["off", "idle", "running"]
    b1, b2 = prop.levels[0][1], prop.levels[1][1]
    assert b1 is not None and b2 is not None and 2 < b1 < 55 and 70 < b2 < 830
    assert not prop.warnings
    lv = levels_of(prop)
    assert lv.states[lv.classify(900_000)] == "running"


def test_labelled_running_below_standby() -> None:
    rng = random.Random(2)
    prop = propose_labelled({"standby": noisy(rng, 300, 8, 300), "running": noisy(rng, 90, 10, 300),
                             "off": noisy(rng, 0.5, 0.2, 100)})
    assert [s for s, _ in prop.levels] == ["off", "running", "idle"]
    assert any("BELOW standby" in w for w in prop.warnings)
    lv = levels_of(prop)
    for w, want in ((95, "running"), (310, "idle"), (0.2, "off")):
        lv.current = None
        assert lv.states[lv.classify(round(w * 1000))] == want
    toml = prop.toml("power")
    assert 'state = "running", below_w' in toml and "hysteresis_w" in toml


def test_overlapping_states_are_reported() -> None:
    rng = random.Random(3)
    prop = propose_labelled({"standby": noisy(rng, 100, 20, 200), "running": noisy(rng, 110, 20, 200)})
    assert any("overlap" in w for w in prop.warnings)


def test_unlabelled_clusters_and_says_what_it_assumed() -> None:
    rng = random.Random(4)
    readings = noisy(rng, 0.5, 0.2, 100) + noisy(rng, 50, 2, 300) + noisy(rng, 800, 20, 200)
    rng.shuffle(readings)
    assert len(clusters(readings)) == 3
    prop = propose_unlabelled(readings)
    assert [s for s, _ in prop.levels] == ["off", "idle", "running"]
    assert any("not labelled" in w for w in prop.warnings)
    with pytest.raises(ValueError, match="one cluster"):
        propose_unlabelled(noisy(rng, 50, 1, 100))
