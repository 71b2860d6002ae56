"""Power-meter detector: active power from a Modbus RTU meter on a serial line (RS-485 adapter).

Keys, defaults, verdicts and evidence: README.md beside this file; every key with its default:
sample.toml; behaviour as data: cases.toml (run by tests/agent/test_detector_cases.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import minimalmodbus
import serial

from agent.config import Invalid, positive, require
from agent.detectors.base import Observation, RateLimit, Verdict
from agent.detectors.serialport import PORT_ERRORS
from protocols.instruments import meters

STATES: dict[str, Verdict] = {"off": "off", "idle": "idle", "standby": "idle", "running": "running", "fault": "fault"}


@dataclass(frozen=True)
class Level:
    state: Literal["off", "idle", "standby", "running", "fault"]
    below_w: float | None = None


@dataclass(frozen=True)
class Config:
    port: str
    levels: tuple[Level, ...]
    slave: int = 1
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: int = 8
    stopbits: int = 1
    meter: str = "sdm120"
    register: int | None = None
    function: int | None = None
    format: Literal["float32", "int16", "uint16", "int32", "uint32"] | None = None
    mw_per_unit: float | None = None
    word_swap: bool = False
    hysteresis_w: float = 2.0
    timeout_s: float = 0.5
    retries: int = 1
    reopen_s: float = 5.0
    exclusive: bool = True

    def __post_init__(self) -> None:
        require(bool(self.port), "port", "a serial port is required (e.g. COM4 or /dev/ttyUSB1)")
        require(1 <= self.slave <= 247, "slave", "Modbus addresses are 1..247")
        try:
            meters.get(self.meter)
        except ValueError as exc:
            raise Invalid("meter", str(exc)) from None
        require(self.function in (None, 3, 4), "function", "must be 3 (holding) or 4 (input registers)")
        require(self.register is None or 0 <= self.register <= 0xFFFF, "register", "must be 0..65535")
        require(len(self.levels) >= 2, "levels", "give at least two levels, e.g. off below 5 W and idle above")
        for i, lv in enumerate(self.levels[:-1]):
            require(lv.below_w is not None, f"levels[{i}].below_w", "every level but the last needs below_w")
        require(self.levels[-1].below_w is None, f"levels[{len(self.levels) - 1}].below_w",
                "the last level is open-ended: leave out below_w")
        bounds = [lv.below_w for lv in self.levels[:-1] if lv.below_w is not None]
        require(all(a < b for a, b in itertools.pairwise(bounds)), "levels",
                "below_w must increase from one level to the next")
        require(self.hysteresis_w >= 0, "hysteresis_w", "must be >= 0")
        positive(self.timeout_s, "timeout_s")
        require(0 <= self.retries <= 5, "retries", "must be 0..5")

    def register_map(self) -> meters.Register:
        base = meters.get(self.meter).power
        return meters.Register(
            function=self.function or base.function,
            address=self.register if self.register is not None else base.address,
            format=self.format or base.format,
            mw_per_unit=self.mw_per_unit or base.mw_per_unit,
            word_swap=self.word_swap or base.word_swap,
        )


class Levels:
    """Power (mW) -> level index, with hysteresis around every boundary."""

    def __init__(self, levels: tuple[Level, ...], hysteresis_w: float) -> None:
        self.states: list[Verdict] = [STATES[lv.state] for lv in levels]
        self.bounds: list[int] = [round((lv.below_w or 0) * 1000) for lv in levels[:-1]]
        self.h = round(hysteresis_w * 1000)
        self.current: int | None = None

    def raw_index(self, mw: int) -> int:
        for i, b in enumerate(self.bounds):
            if mw < b:
                return i
        return len(self.bounds)

    def classify(self, mw: int) -> int:
        raw = self.raw_index(mw)
        cur = self.current
        if cur is None or raw == cur:
            self.current = raw
            return raw
        if raw > cur:  # going up: boundary below level j is bounds[j-1]
            ok = [j for j in range(cur + 1, raw + 1) if mw >= self.bounds[j - 1] + self.h]
        else:  # going down: boundary above level j is bounds[j]
            ok = [j for j in range(raw, cur) if mw < self.bounds[j] - self.h]
        if ok:
            cur = max(ok) if raw > cur else min(ok)
            self.current = cur
        return cur


class PowerMeterDetector:
    kind = "power_meter"
    senses_power = True
    summary_keys = ("mw",)

    def __init__(self, name: str, cfg: Config) -> None:
        self.name = name
        self.cfg = cfg
        self.reg = cfg.register_map()
        self.levels = Levels(cfg.levels, cfg.hysteresis_w)
        self._inst: minimalmodbus.Instrument | None = None
        self._reopen = RateLimit(cfg.reopen_s)

    def _instrument(self, now: float | None = None) -> minimalmodbus.Instrument:
        if self._inst is None:
            if not self._reopen.ready(now):
                raise serial.SerialException("port closed after an error; waiting to reopen")
            # Our own Serial object: minimalmodbus would otherwise keep a module-wide cache of ports by
            # name, and a port whose adapter was unplugged would stay in it, dead, for good.
            port = serial.Serial(self.cfg.port, baudrate=self.cfg.baudrate, parity=self.cfg.parity,
                                 bytesize=self.cfg.bytesize, stopbits=self.cfg.stopbits,
                                 timeout=self.cfg.timeout_s, write_timeout=self.cfg.timeout_s,
                                 exclusive=self.cfg.exclusive or None)
            inst = minimalmodbus.Instrument(port, self.cfg.slave, mode=minimalmodbus.MODE_RTU)
            inst.clear_buffers_before_each_transaction = True
            self._inst = inst
        return self._inst

    def read_mw(self, now: float | None = None) -> int:
        """One reading in milliwatts; raises on any Modbus or serial failure."""
        last: Exception | None = None
        for _ in range(self.cfg.retries + 1):
            inst = self._instrument(now)
            try:
                words = inst.read_registers(self.reg.address, self.reg.count, functioncode=self.reg.function)
                return meters.decode(self.reg, list(words))
            except (minimalmodbus.ModbusException, ValueError) as exc:
                last = exc
        assert last is not None
        raise last

    def poll(self, now: float) -> Observation:
        try:
            mw = self.read_mw(now)
        except minimalmodbus.NoResponseError:
            return Observation.failed(f"meter {self.cfg.slave} on {self.cfg.port}: no response "
                                      f"within {self.cfg.timeout_s} s")
        except minimalmodbus.InvalidResponseError as exc:
            return Observation.failed(f"meter {self.cfg.slave} on {self.cfg.port}: invalid reply ({exc})")
        except minimalmodbus.SlaveReportedException as exc:
            return Observation.failed(f"meter {self.cfg.slave} on {self.cfg.port}: exception reply ({exc})")
        except ValueError as exc:
            return Observation.failed(f"meter {self.cfg.slave} on {self.cfg.port}: {exc}")
        except PORT_ERRORS as exc:  # unplugged adapter: termios.error is not an OSError
            self.close()
            return Observation.failed(f"serial port {self.cfg.port}: {type(exc).__name__}: {exc}")
        idx = self.levels.classify(mw)
        return Observation(self.levels.states[idx], {"mw": mw, "lvl": idx})

    def close(self) -> None:
        if self._inst is not None:
            try:
                self._inst.serial.close()
            except PORT_ERRORS:
                pass
            self._inst = None


def create(name: str, cfg: Config) -> PowerMeterDetector:
    return PowerMeterDetector(name, cfg)
