"""Every meter map (agent/detectors/power_meter/maps/*.toml) against pymodbus's own server: serial
RTU through a pseudo-terminal pair and Modbus TCP on loopback, plus RTU over TCP, several meters on
one bus, the energy counter and its cross-check against the power readings."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.detectors import power_meter
from agent.detectors.power_meter import Level, maps
from protocols.instruments import meters
from tests.agent.devices import PtyLink
from tests.agent.modbus_server import PymodbusServer

LEVELS = (Level("off", 5), Level("idle", 100), Level("running"))


@pytest.fixture(scope="module")
def rtu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PymodbusServer]]:
    d = tmp_path_factory.mktemp("rtu")
    link = PtyLink(d / "agent-side", d / "meter-side")
    server = PymodbusServer([1, 2, 3], serial_port=str(d / "meter-side"))
    yield str(d / "agent-side"), server
    server.close()
    link.close()


@pytest.fixture(scope="module")
def tcp() -> Iterator[PymodbusServer]:
    server = PymodbusServer([1, 2])
    yield server
    server.close()


def detector(meter: str, **kw: object) -> power_meter.PowerMeterDetector:
    cfg = power_meter.Config(levels=LEVELS, meter=meter, timeout_s=0.5, retries=1, reopen_s=0.1,
                             **kw)  # type: ignore[arg-type]
    return power_meter.create(f"m_{meter}", cfg)


def check_map(det: power_meter.PowerMeterDetector, server: PymodbusServer, dev: int, model: maps.MeterModel) -> None:
    watts = 1234.5 if model.power.format == "float32" else 1234
    server.set_quantity(dev, model.power, watts * 1000)
    if model.energy is not None:
        server.set_quantity(dev, model.energy, 4_567_890)  # Wh: 4567.89 kWh
    o = det.poll(time.monotonic())
    assert o.error is None, o
    assert o.verdict == "running" and o.evidence["mw"] == round(watts * 1000), o
    if model.energy is not None:
        assert o.evidence["wh"] == 4_567_890, o
    else:
        assert "wh" not in o.evidence
    server.set_quantity(dev, model.power, 40_000)
    assert det.poll(time.monotonic()).verdict == "idle"


@pytest.mark.parametrize("name", maps.names())
def test_map_over_serial_rtu(name: str, rtu: tuple[str, PymodbusServer]) -> None:
    port, server = rtu
    det = detector(name, port=port)
    try:
        check_map(det, server, 1, maps.get(name))
    finally:
        det.close()


@pytest.mark.parametrize("name", maps.names())
def test_map_over_modbus_tcp(name: str, tcp: PymodbusServer) -> None:
    det = detector(name, host="127.0.0.1", tcp_port=tcp.tcp_port, slave=2)
    try:
        check_map(det, tcp, 2, maps.get(name))
    finally:
        det.close()


def test_socket_url_and_rtu_over_tcp() -> None:
    for framer in ("tcp", "rtu"):
        server = PymodbusServer([5], framer=framer)
        try:
            model = maps.get("sdm630")
            server.set_quantity(5, model.power, 2_500_000)
            kw: dict[str, object] = ({"port": f"socket://127.0.0.1:{server.tcp_port}"} if framer == "tcp"
                                     else {"host": "127.0.0.1", "tcp_port": server.tcp_port, "framer": "rtu"})
            det = detector("SDM630", slave=5, **kw)
            o = det.poll(time.monotonic())
            assert o.evidence.get("mw") == 2_500_000, (framer, o)
            det.close()
        finally:
            server.close()


def test_several_meters_on_one_bus(rtu: tuple[str, PymodbusServer]) -> None:
    port, server = rtu
    model = maps.get("ddsu666")
    dets = [detector("ddsu666", port=port, slave=s) for s in (1, 2, 3)]
    try:
        for s, w in zip((1, 2, 3), (3.0, 50.0, 900.0), strict=True):
            server.set_quantity(s, model.power, w * 1000)
        verdicts = [d.poll(time.monotonic()).verdict for d in dets]
        assert verdicts == ["off", "idle", "running"]
        assert detector("ddsu666", port=port, slave=9).poll(time.monotonic()).verdict == "unknown"
    finally:
        for d in dets:
            d.close()


def test_energy_counter_that_does_not_move_is_flagged(tcp: PymodbusServer) -> None:
    """2 kW for a virtual minute is 33 Wh: more than three 10 Wh counter steps, so a counter
    standing still is implausible; once it moves, the flag clears."""
    model = maps.get("sdm120")
    assert model.energy is not None
    tcp.set_quantity(1, model.power, 2_000_000)
    tcp.set_quantity(1, model.energy, 1_000_000)
    det = detector("sdm120", host="127.0.0.1", tcp_port=tcp.tcp_port, slave=1, energy_s=10.0)
    try:
        t0 = 1000.0
        flags = []
        for k in range(61):
            o = det.poll(t0 + k)
            flags.append(o.evidence["e_stuck"])
        assert o.evidence["wh"] == 1_000_000 and o.evidence["pwh"] == 33, o
        assert flags[0] is False and flags[-1] is True
        tcp.set_quantity(1, model.energy, 1_000_040)
        o = next(o for o in (det.poll(t0 + 61 + k) for k in itertools.count()) if o.evidence["wh"] == 1_000_040)
        assert o.evidence["e_stuck"] is False and o.evidence["pwh"] == 0
    finally:
        det.close()


def test_maps_name_their_source_and_agree_with_the_simulator() -> None:
    for name in maps.names():
        model = maps.get(name)
        assert len(model.source) > 40, name
        assert maps.get(name.upper()) == model
    for name, served in meters.METERS.items():  # what sim/modbus_meter.py serves
        assert maps.get(name).power == served.power, name
    with pytest.raises(ValueError, match="known"):
        maps.get("../../etc/passwd")


def test_meter_file_must_be_complete(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="source"):
        maps.parse('name = "x"\ndescription = "d"\n[power]\nfunction = 4\naddress = 0\nformat = "float32"\n'
                   'unit = "W"\n', "x.toml")
    with pytest.raises(ValueError, match="unit"):
        maps.parse('name = "x"\ndescription = "d"\nsource = "s"\n[power]\nfunction = 4\naddress = 0\n'
                   'format = "float32"\nunit = "horsepower"\n', "x.toml")


def test_device_libraries_load_only_when_a_detector_is_created() -> None:
    """The agent's memory budget: reading a config with a power meter costs no pymodbus; only
    creating the detector does, and the other detectors never load it."""
    import subprocess
    import sys

    code = """
import sys
from agent.detectors import module
from agent.detectors.power_meter import Config, Level
cfg = Config(levels=(Level("off", 5), Level("running")), port="/dev/null-jishi")
module("process"); module("data_files"); module("serial_status")
assert "pymodbus" not in sys.modules and "asyncio" not in sys.modules, "loaded too early"
module("power_meter").create("p", cfg).close()
assert "pymodbus" in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "ok", out.stderr
