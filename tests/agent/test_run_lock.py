"""One agent process per spool: a second `run` is refused, `check` leaves the running agent's
devices alone, `calibrate` refuses, and kill -9 leaves no stale lock."""

from __future__ import annotations

from pathlib import Path

from agent.spool import RunLock
from sim.modbus_meter import ModbusMeter
from tests.agent.helpers import AgentProc, cli, meter_toml, wait_until, write_config


class Nowhere:
    host, port = "127.0.0.1", 9


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    a, b = RunLock(tmp_path / "spool.db"), RunLock(tmp_path / "spool.db")
    assert a.acquire() and not b.acquire()
    assert a.path.name == "spool.db.lock" and b.holder().isdigit()
    a.release()
    assert b.acquire()
    b.release()


def test_a_running_agent_keeps_its_spool_and_devices(tmp_path: Path) -> None:
    with ModbusMeter(watts=40.0) as meter:
        cfg = write_config(tmp_path, agent_id="lock1", broker=Nowhere(), running="power",
                           detectors=meter_toml(meter))
        agent = AgentProc(cfg).start()
        try:
            wait_until(lambda: "agent lock1 started" in agent.text(), 20, "the agent started")
            second = cli("run", "--config", str(cfg))
            assert second.returncode == 2 and "another agent process" in second.stderr
            check = cli("check", "--no-broker", "--config", str(cfg))
            assert "devices not probed" in check.stdout and "detector power" not in check.stdout
            cal = cli("calibrate", "--config", str(cfg), "--seconds", "0.2")
            assert cal.returncode == 1 and "stop it first" in cal.stderr
            assert agent.alive()
        finally:
            agent.kill()  # kill -9: the OS releases the lock
        check = cli("check", "--no-broker", "--config", str(cfg))
        assert "detector power (power_meter)" in check.stdout and "idle" in check.stdout, check.stdout
