"""The main loop in-process: boot and config records, clock jumps, a detector that raises,
heartbeat summaries, optional samples; every record valid for the server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from agent.config import load
from agent.detectors.base import Observation
from agent.runner import Agent
from protocols.records import Record
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import write_config

RECORD = TypeAdapter(Record)


class Exploding:
    name, kind, senses_power, summary_keys = "boom", "test", False, ()

    def __init__(self) -> None:
        self.calls = 0

    def poll(self, now: float) -> Observation:
        self.calls += 1
        if self.calls in (2, 3):
            raise RuntimeError("driver bug")
        return Observation("idle", {"calls": self.calls})

    def close(self) -> None:
        pass


def records(agent: Agent) -> list[dict[str, Any]]:
    return [orjson.loads(b) for (b,) in agent.spool.db.execute("SELECT body FROM records ORDER BY seq")]


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    meter = ModbusMeter(watts=900)

    class Nowhere:
        host, port = "127.0.0.1", 9

    extra = '[samples]\nenabled = true\nsignals = ["power.mw"]\nrecord_s = 0.5\n'
    cfg = load(write_config(tmp_path, agent_id="run1", broker=Nowhere(), running="power", period=0.1,
                            heartbeat=0.3, extra=extra, detectors=f"""
[detectors.power]
kind = "power_meter"
port = "{meter.port}"
timeout_s = 0.1
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
"""), environ={})
    a = Agent(cfg)
    a.detectors.append(Exploding())  # type: ignore[arg-type]
    from agent.runner import Summary

    a.summaries["boom"] = Summary(())
    yield a
    a.shutdown()
    meter.close()


def test_records_of_a_short_run(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    agent.start()
    for i in range(8):
        agent.tick()
        time.sleep(0.1)
        if i == 4:  # someone sets the clock back an hour
            real = time.time_ns

            def behind(real: Any = real) -> int:
                return int(real()) - 3_600_000 * 1_000_000

            monkeypatch.setattr(time, "time_ns", behind)
    recs = records(agent)
    for r in recs:
        RECORD.validate_python(r, strict=True)
    kinds = [(r["type"], r.get("event")) for r in recs]
    assert kinds[0] == ("lifecycle", "boot") and kinds[1] == ("lifecycle", "config")
    clock = [r for r in recs if r.get("event") == "clock"]
    assert len(clock) == 1 and -3_700_000 < clock[0]["detail"]["jump_ms"] < -3_500_000
    errors = [r["detail"] for r in recs if r.get("event") == "detector_error"]
    assert errors[0] == {"detector": "boom", "error": "RuntimeError: driver bug"}
    assert errors[1] == {"detector": "boom", "recovered": True, "failed": 2}
    states = [r for r in recs if r["type"] == "state"]
    assert states[0]["state"] == "running" and states[0]["evidence"]["power"]["mw"] == 900_000
    hb = [r for r in recs if r["type"] == "heartbeat"]
    assert hb and hb[0]["evidence"]["power"]["mw_min"] == 900_000 and hb[0]["evidence"]["boom"]["unk"] >= 1
    samples = [r for r in recs if r["type"] == "sample"]
    assert samples and samples[0]["unit"] == "mW" and samples[0]["values"][0] == 900_000
    assert agent.snapshot()["state"] == "running"
