"""Detectors against simulated devices on pseudo-terminals, a fake control-software process and a
real folder. Device trouble must give `unknown` with an error, never an exception or a guess."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.detectors import data_files, power_meter, process, serial_status
from agent.detectors.power_meter import Level
from sim.control_software import ControlSoftware
from sim.modbus_meter import ModbusMeter
from sim.serial_instrument import SerialInstrument
from tests.agent.helpers import wait_until

LEVELS = (Level("off", 5), Level("idle", 100), Level("running"))


# ---- serial status --------------------------------------------------------------------------------

def serial_det(port: str, **kw: object) -> serial_status.SerialStatusDetector:
    return serial_status.create("serial", serial_status.Config(port=port, timeout_s=0.2, reopen_s=0.1, **kw))  # type: ignore[arg-type]


def test_serial_line_dialect() -> None:
    with SerialInstrument() as inst:
        det = serial_det(inst.port)
        for state in ("idle", "running", "off", "fault"):
            inst.state = state
            o = det.poll(0)
            assert o.verdict == state and o.error is None, o
        assert det.poll(0).evidence["resp"] == "STATUS ERR 12"
        det.close()


def test_serial_scpi_register() -> None:
    with SerialInstrument(dialect="scpi", state="running") as inst:
        det = serial_det(inst.port, dialect="scpi")
        o = det.poll(0)
        assert o.verdict == "running" and o.evidence["reg"] == 16
        inst.state = "idle"
        assert det.poll(0).verdict == "idle"
        det.close()


def test_serial_bad_input_is_unknown_never_running() -> None:
    with SerialInstrument(state="running") as inst:
        det = serial_det(inst.port)
        inst.mode = "garbage"
        for _ in range(10):
            o = det.poll(0)
            assert o.verdict == "unknown" and o.error, o
        inst.mode = "silent"
        o = det.poll(0)
        assert o.verdict == "unknown" and "no reply" in (o.error or "")
        inst.mode = "partial"
        assert "incomplete" in (det.poll(0).error or "")
        inst.mode = "ok"
        inst.send_noise(b"\x00\xffBOOT\r\n\x13")  # unsolicited noise is dropped before asking
        assert det.poll(0).verdict == "running"
        det.close()


def test_serial_custom_patterns_and_silence_as_off() -> None:
    with SerialInstrument(state="running") as inst:
        det = serial_det(inst.port, patterns={"running": "STATUS RUN", "idle": "IDLE"}, no_response="off")
        assert det.poll(0).verdict == "running"
        inst.mode = "silent"
        assert det.poll(0).verdict == "off"
        det.close()


def test_serial_missing_port() -> None:
    det = serial_det("/dev/does-not-exist")
    o = det.poll(0)
    assert o.verdict == "unknown" and "/dev/does-not-exist" in (o.error or "")
    o = det.poll(0)  # rate-limited reopen: still a clean unknown
    assert o.verdict == "unknown"


# ---- power meter ----------------------------------------------------------------------------------

def meter_det(port: str, **kw: object) -> power_meter.PowerMeterDetector:
    cfg = power_meter.Config(port=port, levels=kw.pop("levels", LEVELS), timeout_s=0.1, retries=0,  # type: ignore[arg-type]
                             reopen_s=0.1, **kw)  # type: ignore[arg-type]
    return power_meter.create("power", cfg)


def test_power_meter_reads_and_classifies() -> None:
    with ModbusMeter(watts=850.25) as meter:
        det = meter_det(meter.port)
        o = det.poll(0)
        assert o.verdict == "running" and o.evidence["mw"] == 850_250
        meter.watts = 42.0
        assert det.poll(0).verdict == "idle"
        meter.watts = 1.0
        assert det.poll(0).verdict == "off"
        det.close()


def test_power_meter_integer_map() -> None:
    with ModbusMeter(meter="int32_decawatt", slave=7, watts=123.4) as meter:
        det = meter_det(meter.port, meter="int32_decawatt", slave=7)
        assert det.poll(0).evidence["mw"] == 123_400
        det.close()


@pytest.mark.parametrize(("mode", "words"), [("crc_error", "no valid response"), ("silent", "no valid response"),
                                             ("exception", "exception reply")])
def test_power_meter_errors_are_unknown(mode: str, words: str) -> None:
    with ModbusMeter(watts=900) as meter:
        det = meter_det(meter.port)
        assert det.poll(0).verdict == "running"
        meter.mode = mode
        o = det.poll(0)
        assert o.verdict == "unknown" and words in (o.error or ""), o
        meter.mode = "ok"
        assert det.poll(0).verdict == "running"
        det.close()


def test_power_meter_wrong_address_and_missing_port() -> None:
    with ModbusMeter(watts=900, slave=2) as meter:
        det = meter_det(meter.port, slave=1)
        assert det.poll(0).verdict == "unknown"
        det.close()
    o = meter_det("/dev/does-not-exist").poll(0)
    assert o.verdict == "unknown" and "does-not-exist" in (o.error or "")


def test_power_running_below_standby() -> None:
    levels = (Level("off", 8), Level("running", 140), Level("standby"))
    with ModbusMeter(watts=300) as meter:
        det = meter_det(meter.port, levels=levels, hysteresis_w=5)
        assert det.poll(0).verdict == "idle"
        meter.watts = 90
        assert det.poll(0).verdict == "running"
        meter.watts = 142  # within hysteresis of the 140 W boundary: stays running
        assert det.poll(0).verdict == "running"
        meter.watts = 200
        assert det.poll(0).verdict == "idle"
        det.close()


# ---- process --------------------------------------------------------------------------------------

def test_process_detector_follows_the_control_software(tmp_path: Path) -> None:
    det = process.create("software", process.Config(names=("FakeAcqSoft.exe",), children=("acq_worker",),
                                                     active_cpu_permille=0, rescan_s=0.05))
    assert det.poll(time.monotonic()).verdict == "off"
    with ControlSoftware(tmp_path) as sw:
        wait_until(lambda: det.poll(time.monotonic()).verdict == "idle", 30, "software seen")
        sw.begin_run()
        wait_until(lambda: det.poll(time.monotonic()).verdict == "running", 30, "acquisition child seen")
        assert det.poll(time.monotonic()).evidence["children"] == 1
        sw.end_run()
        wait_until(lambda: det.poll(time.monotonic()).verdict == "idle", 30, "acquisition ended")
    wait_until(lambda: det.poll(time.monotonic()).verdict == "off", 30, "software closed")


def test_process_cpu_activity(tmp_path: Path) -> None:
    code = "while True: pass"  # a full core when it gets one: on a loaded test machine still far above 15 %
    proc = subprocess.Popen([sys.executable, "-c", code, "--jishi-test-busy"])
    try:
        det = process.create("p", process.Config(cmdline=(r"--jishi-test-busy",), active_cpu_permille=150,
                                                 rescan_s=10))
        det.poll(time.monotonic())
        time.sleep(0.5)
        o = det.poll(time.monotonic())
        cpu = o.evidence["cpu"]
        assert o.verdict == "running" and isinstance(cpu, int) and cpu >= 150, o
    finally:
        proc.kill()
        proc.wait()
    assert det.poll(time.monotonic()).verdict == "off"


# ---- data files -----------------------------------------------------------------------------------

def test_data_files_growing_and_finished(tmp_path: Path) -> None:
    outputs: list[tuple[str, int, str]] = []
    cfg = data_files.Config(path=tmp_path, patterns=("*.dat",), active_s=0.4, settle_s=0.3, hash_files=True)
    det = data_files.DataFilesDetector("files", cfg, on_output=lambda p, s, h: outputs.append((p, s, h)))
    assert det.poll(0).verdict == "idle"
    (tmp_path / "ignored.txt").write_text("x")
    f = tmp_path / "run1.dat"
    for i in range(3):
        with open(f, "a") as fh:
            fh.write(f"line {i}\n")
        time.sleep(0.05)
    wait_until(lambda: det.poll(0).verdict == "running", 3, "growing file seen")
    wait_until(lambda: det.poll(0).verdict == "idle" and bool(outputs), 5, "file finished and hashed")
    o = det.poll(0)
    assert o.evidence["new"] == 1 and o.evidence["done"] == 1
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    assert outputs == [(str(f), f.stat().st_size, digest)] and o.evidence["sha"] == digest
    det.close()


def test_data_files_missing_folder_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "later"
    det = data_files.create("files", data_files.Config(path=folder, retry_s=0.05, active_s=1))
    o = det.poll(0)
    assert o.verdict == "unknown" and "does not exist" in (o.error or "")
    folder.mkdir()
    time.sleep(0.1)
    wait_until(lambda: det.poll(0).error is None, 3, "watching once the folder exists")
    (folder / "a.raw").write_bytes(b"1")
    wait_until(lambda: det.poll(0).verdict == "running", 3, "file seen")
    det.close()
