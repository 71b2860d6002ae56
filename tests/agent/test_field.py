"""The agent against third-party-style devices as a lab's IT person would meet them: an adapter
unplugged and plugged back while the agent runs, a port already in use, error episodes close
together (issue 14)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import serial

from agent.config import load
from agent.detectors import power_meter, serial_status
from agent.detectors.episodes import ErrorEpisodes
from agent.detectors.power_meter import Level
from agent.runner import Agent
from tests.agent.devices import RtuBus, StatusDevice
from tests.agent.helpers import write_config


class Nowhere:
    host, port = "127.0.0.1", 9


def records(agent: Agent) -> list[dict[str, Any]]:
    return [orjson.loads(b) for (b,) in agent.spool.db.execute("SELECT body FROM records ORDER BY seq")]


@pytest.fixture
def status_agent(tmp_path: Path) -> Iterator[tuple[Agent, StatusDevice]]:
    dev = StatusDevice(tmp_path / "ttyUSB-status")
    dev.reply = "STATUS RUN"
    cfg = load(write_config(tmp_path, agent_id="field1", broker=Nowhere(), running="status", period=0.1,
                            heartbeat=60, detectors=f"""
[detectors.status]
kind = "serial_status"
port = "{dev.port.path}"
timeout_s = 0.2
reopen_s = 0.1
"""), environ={})
    agent = Agent(cfg)
    yield agent, dev
    agent.shutdown()
    dev.close()


def tick_until(agent: Agent, pred: Any, what: str, timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        agent.tick()
        time.sleep(0.05)


def test_unplugged_adapter_comes_back_without_tracebacks(status_agent: tuple[Agent, StatusDevice],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    agent, dev = status_agent
    agent.start()
    tick_until(agent, lambda: agent.machine.state == "running", "running")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jishi.agent"):
        dev.port.unplug()
        tick_until(agent, lambda: agent.machine.state == "unknown", "the dead link to be unknown")
        for _ in range(10):  # the link stays dead: every poll a clean unknown
            agent.tick()
            assert agent.machine.raw == "unknown"
        dev.port.replug()
        tick_until(agent, lambda: agent.machine.state == "running", "running again after replug")
        for _ in range(4):
            agent.tick()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    recs = records(agent)
    errors = [r["detail"] for r in recs if r.get("event") == "detector_error"]
    assert len(errors) == 2, errors
    assert "termios" in str(errors[0].get("error")) or "serial port" in str(errors[0].get("error"))
    assert errors[1]["recovered"] is True and errors[1]["failed"] >= 10
    states = [r["state"] for r in recs if r["type"] == "state"]
    assert states == ["running", "unknown", "running"]


def test_ports_are_opened_exclusively(tmp_path: Path) -> None:
    dev = StatusDevice(tmp_path / "ttyS9")
    dev.reply = "STATUS IDLE"
    cfg = serial_status.Config(port=str(dev.port.path), timeout_s=0.3, reopen_s=0.05)
    service = serial_status.create("service", cfg)
    check = serial_status.create("check", cfg)
    try:
        assert service.poll(time.monotonic()).verdict == "idle"
        o = check.poll(time.monotonic())
        assert o.verdict == "unknown" and "lock" in (o.error or ""), o
        assert service.poll(time.monotonic()).verdict == "idle"
        service.close()
        time.sleep(0.06)
        assert check.poll(time.monotonic()).verdict == "idle"
    finally:
        service.close()
        check.close()
        dev.close()


def test_meter_port_is_opened_exclusively_and_shared_by_meters_on_the_bus(tmp_path: Path) -> None:
    """Two meters on one RS-485 bus share the agent's one link; anything else opening the port
    (`jishi-agent check` while the service runs) is refused."""
    bus = RtuBus(tmp_path / "ttyRS485")
    bus.set_power(1, "sdm120", 50)
    bus.set_power(2, "sdm120", 700)

    def cfg(slave: int) -> power_meter.Config:
        return power_meter.Config(port=str(bus.port.path), levels=(Level("off", 5), Level("idle", 100),
                                                                    Level("running")),
                                  slave=slave, timeout_s=0.2, retries=0, reopen_s=0.05)

    a, b = power_meter.create("a", cfg(1)), power_meter.create("b", cfg(2))
    try:
        assert a.poll(time.monotonic()).verdict == "idle"
        assert b.poll(time.monotonic()).verdict == "running"
        with pytest.raises(serial.SerialException, match="lock"):
            serial.Serial(str(bus.port.path), exclusive=True)
        assert a.poll(time.monotonic()).evidence["mw"] == 50_000
    finally:
        a.close()
        b.close()
    serial.Serial(str(bus.port.path), exclusive=True).close()  # released with its last user
    bus.close()


def test_one_error_record_per_episode() -> None:
    ep = ErrorEpisodes(recover_polls=3)
    out = [ep.update("p", e) for e in ["timeout", "timeout", None, None, None, "crc", None, None, None]]
    assert out == [{"detector": "p", "error": "timeout"}, None, None, None,
                   {"detector": "p", "recovered": True, "failed": 2},
                   {"detector": "p", "error": "crc"}, None, None,  # a new fault seconds later: recorded
                   {"detector": "p", "recovered": True, "failed": 1}]
    # a line that drops one reply in three is one long episode, not a record per poll
    flapping = [ep.update("q", "timeout" if i % 3 == 0 else None) for i in range(30)]
    assert [d for d in flapping if d] == [{"detector": "q", "error": "timeout"}]
