"""Detector trouble in the main loop: every episode is recorded (a new fault a few seconds after
the last one too), and a detector that keeps raising logs its traceback once, not every poll."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import runner
from agent.config import load
from agent.detectors.base import Observation
from agent.runner import Agent, Summary
from tests.agent.helpers import write_config


class Scripted:
    """Polls follow a script: 'ok', 'err' (an error observation) or 'raise' (an exception)."""

    name, kind, senses_power, summary_keys = "dev", "test", False, ()

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.calls = 0

    def poll(self, now: float) -> Observation:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step == "raise":
            raise OSError(5, "Input/output error")
        if step == "err":
            return Observation.failed("no response")
        return Observation("idle", {})

    def close(self) -> None:
        pass


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Agent] = []

    class Nowhere:
        host, port = "127.0.0.1", 9

    def build(script: list[str]) -> Agent:
        cfg = load(write_config(tmp_path, agent_id="err1", broker=Nowhere(), running="proc", period=0.1,
                                heartbeat=60, detectors='[detectors.proc]\nkind = "process"\nnames = ["nope-x"]\n'),
                   environ={})
        a = Agent(cfg)
        a.detectors = [Scripted(script)]  # type: ignore[list-item]
        a.summaries = {"dev": Summary(())}
        a.start()
        made.append(a)
        return a

    yield build
    for a in made:
        a.shutdown()


def errors(agent: Agent) -> list[dict[str, Any]]:
    rows = agent.spool.db.execute("SELECT body FROM records ORDER BY seq")
    return [r["detail"] for (b,) in rows if (r := orjson.loads(b)).get("event") == "detector_error"]


def test_every_episode_is_recorded_even_close_together(make: Any) -> None:
    agent = make(["ok", "err", "err", "ok", "err", "ok", "raise", "ok"])
    for _ in range(8):
        agent.tick()  # eight polls well within one minute
    assert errors(agent) == [
        {"detector": "dev", "error": "no response"}, {"detector": "dev", "recovered": True, "failed": 2},
        {"detector": "dev", "error": "no response"}, {"detector": "dev", "recovered": True, "failed": 1},
        {"detector": "dev", "error": "OSError: [Errno 5] Input/output error"},
        {"detector": "dev", "recovered": True, "failed": 1},
    ]


def test_a_flapping_device_is_bounded_and_counted(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "ERROR_EPISODES_PER_HOUR", 2)
    agent = make(["err", "ok"] * 4 + ["ok"])
    for _ in range(9):
        agent.tick()
    got = errors(agent)
    assert [e.get("error") for e in got if "error" in e] == ["no response", "no response"]
    assert sum(1 for e in got if e.get("recovered")) == 2  # recoveries only for recorded episodes


def test_a_raising_detector_logs_one_traceback(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    agent = make(["raise"] * 20)
    with caplog.at_level(logging.INFO, logger="jishi.agent"):
        for _ in range(20):
            agent.tick()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "detector dev failed" in tracebacks[0].getMessage()
    assert len(errors(agent)) == 1
