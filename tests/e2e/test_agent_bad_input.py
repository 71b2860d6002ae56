"""End to end: bad input from devices and from people. Garbage on serial, timeouts, a meter with
CRC errors, a missing port: clear messages, the agent keeps running, a detector in error is
`unknown` evidence (never a fake running). Config mistakes: a clear message naming file and key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sim.modbus_meter import ModbusMeter
from sim.serial_instrument import SerialInstrument
from tests.agent.helpers import AgentProc, Collector, cli, write_config


def test_device_trouble_never_stops_the_agent_nor_fakes_running(mqtt_broker: Any, tmp_path: Path) -> None:
    with SerialInstrument(state="idle") as inst, ModbusMeter(watts=40.0) as meter:
        detectors = f"""
[detectors.serial]
kind = "serial_status"
port = "{inst.port}"
timeout_s = 0.05

[detectors.power]
kind = "power_meter"
port = "{meter.port}"
timeout_s = 0.05
retries = 0
levels = [{{ state = "off", below_w = 5 }}, {{ state = "idle", below_w = 200 }}, {{ state = "running" }}]

[detectors.spare]
kind = "serial_status"
port = "/dev/ttyJISHI-missing"
reopen_s = 0.2
"""
        cfg = write_config(tmp_path, agent_id="bad1", broker=mqtt_broker, detectors=detectors,
                           running="power or serial", period=0.1, heartbeat=0.5)
        collector = Collector(mqtt_broker, tmp_path, "bad1")
        agent = AgentProc(cfg).start()
        try:
            collector.wait_for(lambda c: any(r.get("state") == "idle" and r["type"] == "state"
                                             for r in c.records.values()), 20, "idle")
            inst.mode = "garbage"
            meter.mode = "crc_error"
            time.sleep(1.5)
            assert agent.alive()
            inst.mode = "silent"
            meter.mode = "silent"
            time.sleep(1.0)
            assert agent.alive()
            inst.mode = "ok"
            meter.mode = "ok"
            time.sleep(1.5)
            assert agent.stop() == 0
        finally:
            if agent.alive():
                agent.kill()
        collector.wait_for(lambda c: any(r.get("event") == "stop" for r in c.records.values()), 10, "stop")
        collector.close()
    recs = collector.check_complete_chain()
    assert not collector.errors, collector.errors
    states = [r for r in recs if r["type"] == "state"]
    assert all(r["state"] != "running" for r in states), "a detector in error produced a fake running"
    assert [r["state"] for r in states][-1] == "idle"
    assert any(r["state"] == "unknown" for r in states)
    errors = [r["detail"] for r in recs if r["type"] == "lifecycle" and r["event"] == "detector_error"]
    failing = {d["detector"] for d in errors if "error" in d}
    assert failing == {"serial", "power", "spare"}
    assert any("unrecognised reply" in str(d.get("error")) for d in errors if d["detector"] == "serial")
    assert any("no valid response" in str(d.get("error")) for d in errors if d["detector"] == "power")
    assert any("ttyJISHI-missing" in str(d.get("error")) for d in errors if d["detector"] == "spare")
    assert {d["detector"] for d in errors if d.get("recovered")} == {"serial", "power"}
    # heartbeats kept coming through the trouble and say how many polls failed
    hbs = [r for r in recs if r["type"] == "heartbeat"]
    assert len(hbs) >= 6 and any(h["evidence"]["power"].get("unk", 0) > 0 for h in hbs)
    log = (tmp_path / "agent.log").read_text()
    assert "detector serial: unrecognised reply" in log and "Traceback" not in log


def test_config_mistakes_give_a_clear_message(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nid = "x"\nunit = "u"\ninstrument = "i"\nkey_file = "k"\ndata_dir = "d"\n'
                   'sample_period_s = "fast"\n[mqtt]\nhost = "broker.lan"\n[state]\nrunning = "power"\n'
                   '[detectors.power]\nkind = "power_meter"\nport = "/dev/null"\n'
                   'levels = [{ state = "off", below_w = 5 }, { state = "running" }]\n')
    out = cli("run", "--config", str(cfg))
    assert out.returncode == 2
    assert f"config error in {cfg} [agent.sample_period_s]: expected a number" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli("check", "--config", str(cfg))
    assert out.returncode == 2 and "FAIL config" in out.stdout
    cfg.write_text(cfg.read_text().replace('sample_period_s = "fast"\n', ""))
    out = cli("run", "--config", str(cfg))
    assert out.returncode == 2 and "keygen" in out.stderr  # the key does not exist yet
    out = cli("run", "--config", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and "cannot read the file" in out.stderr
