"""End to end: simulated instrument (serial status), power meter (Modbus RTU) and control software
follow a scripted schedule of runs; the agent, against the test Mosquitto, must publish state
records whose run intervals match the schedule within two sampling periods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocols.derive import Rec, derive
from sim import Schedule, ScheduleDriver
from sim.control_software import ControlSoftware
from sim.modbus_meter import ModbusMeter
from sim.serial_instrument import SerialInstrument
from tests.agent.helpers import AgentProc, Collector, write_config

PERIOD = 0.2
LOAD_SLACK_MS = 800  # no test may assume an idle machine
STANDBY_W, RUNNING_W = 40.0, 850.0


def detectors_toml(inst: SerialInstrument, meter: ModbusMeter, data: Path) -> str:
    return f"""
[detectors.serial]
kind = "serial_status"
port = "{inst.port}"
timeout_s = 0.3

[detectors.power]
kind = "power_meter"
port = "{meter.port}"
timeout_s = 0.3
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]
hysteresis_w = 5

[detectors.software]
kind = "process"
names = ["FakeAcqSoft"]
children = ["acq_worker"]
active_cpu_permille = 0
rescan_s = {PERIOD}

[detectors.files]
kind = "data_files"
path = "{data}"
active_s = 0.5
settle_s = 0.3
hash_files = true
"""


def run_intervals(states: list[dict[str, Any]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start: int | None = None
    for rec in states:
        if rec["state"] == "running" and start is None:
            start = rec["t"]
        elif rec["state"] != "running" and start is not None:
            out.append((start, rec["t"]))
            start = None
    return out


def test_schedule_of_runs_is_reproduced(mqtt_broker: Any, tmp_path: Path) -> None:
    data = tmp_path / "acq"
    data.mkdir()
    with SerialInstrument(state="idle") as inst, ModbusMeter(watts=STANDBY_W) as meter, \
            ControlSoftware(data) as software:
        cfg = write_config(tmp_path, agent_id="sched1", broker=mqtt_broker,
                           detectors=detectors_toml(inst, meter, data), running="power or serial or software",
                           period=PERIOD, heartbeat=1.0)
        collector = Collector(mqtt_broker, tmp_path, "sched1")
        agent = AgentProc(cfg).start()
        try:
            collector.wait_for(lambda c: any(r["type"] == "state" and r["state"] == "idle"
                                             for r in c.records.values()), 20, "the first idle state")

            def start_run() -> None:
                meter.watts = RUNNING_W
                inst.state = "running"
                software.begin_run()

            def end_run() -> None:
                meter.watts = STANDBY_W
                inst.state = "idle"
                software.end_run()

            driver = ScheduleDriver(Schedule([(1.0, 4.0), (6.0, 7.6), (9.2, 13.0)]), start_run, end_run)
            driver.start()
            driver.join(25)
            assert len(driver.truth) == 3
            collector.wait_for(lambda c: len(run_intervals([r for r in c.records.values()
                                                            if r["type"] == "state"])) >= 3, 30, "three runs")
            assert agent.stop() == 0
            collector.wait_for(lambda c: any(d.clean for d in c.deaths), 30, "clean death")
        finally:
            if agent.alive():
                agent.kill()
            collector.close()

    recs = collector.check_complete_chain()
    assert not collector.errors, collector.errors
    states = [r for r in recs if r["type"] == "state"]
    got = run_intervals(states)
    # two polls, plus what a loaded machine may add to one poll's turn (the edge accuracy itself is
    # measured in virtual time: tests/agent/test_edges.py, bench/accuracy.py --edges)
    tolerance = 2 * PERIOD * 1000 + LOAD_SLACK_MS
    assert len(got) == len(driver.truth), (got, driver.truth)
    for (g0, g1), (t0, t1) in zip(got, driver.truth, strict=True):
        assert abs(g0 - t0) <= tolerance, f"run start {g0 - t0} ms off"
        assert abs(g1 - t1) <= tolerance, f"run end {g1 - t1} ms off"
    # every state record carries the evidence that decided it
    for rec in states:
        ev = rec["evidence"]
        assert {"serial", "power", "software", "files", "state"} <= set(ev)
        if rec["state"] == "running":
            assert ev["power"]["v"] == "running" or ev["serial"]["v"] == "running" or ev["software"]["v"] == "running"
    assert any(r["type"] == "heartbeat" for r in recs)
    lifecycle = [r["event"] for r in recs if r["type"] == "lifecycle"]
    assert lifecycle[0] == "boot" and lifecycle[-1] == "stop"
    # the acquisition wrote files: the file detector saw them and hashed the finished ones
    last_hb = [r for r in recs if r["type"] == "heartbeat"][-1]
    assert last_hb["evidence"]["files"]["new"] >= 3
    assert any("sha" in r["evidence"]["files"] for r in recs if r["type"] == "heartbeat")
    assert collector.births and collector.births[0].next_seq >= 1

    # the server's own derivation (protocols/derive.py) reads the same runs, all of them watched
    # (it starts and ends each at the state's `since`, the poll that showed it: up to the debounce
    # earlier than the state record's own time)
    segments = derive([Rec.from_record(r, r["t"]) for r in recs]).segments
    derived: list[tuple[int, int]] = []
    for seg in segments:
        if seg.state != "running":
            continue
        assert seg.watched, seg
        if derived and derived[-1][1] == seg.start:
            derived[-1] = (derived[-1][0], seg.end)
        else:
            derived.append((seg.start, seg.end))
    assert len(derived) == len(got), (derived, got)
    for (d0, d1), (g0, g1) in zip(derived, got, strict=True):
        assert g0 - tolerance <= d0 <= g0 and g1 - tolerance <= d1 <= g1, ((d0, d1), (g0, g1))
