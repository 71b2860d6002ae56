"""Power-meter detector: active power (and the energy counter) from a Modbus meter, through pymodbus:
serial RTU on an RS-485 adapter, Modbus TCP, or RTU over TCP; several meters may share one bus.

Keys, defaults, verdicts and evidence: README.md beside this file; every key with its default:
sample.toml; behaviour as data: cases.toml (run by tests/agent/test_detector_cases.py); register
maps: maps/*.toml (one per meter model, each naming its source).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agent.config import Invalid, positive, require
from agent.detectors.base import Observation, RateLimit, Verdict
from agent.detectors.power_meter import maps
from protocols.instruments import meters

if TYPE_CHECKING:
    from agent.detectors.power_meter.bus import Endpoint, Link

STATES: dict[str, Verdict] = {"off": "off", "idle": "idle", "standby": "idle", "running": "running", "fault": "fault"}


@dataclass(frozen=True)
class Level:
    state: Literal["off", "idle", "standby", "running", "fault"]
    below_w: float | None = None


@dataclass(frozen=True)
class Config:
    levels: tuple[Level, ...]
    port: str = ""
    host: str = ""
    tcp_port: int = 502
    framer: Literal["auto", "rtu", "tcp"] = "auto"
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
    energy_s: float = 60.0
    hysteresis_w: float = 2.0
    timeout_s: float = 0.5
    retries: int = 1
    reopen_s: float = 5.0
    exclusive: bool = True

    def __post_init__(self) -> None:
        require(bool(self.port) != bool(self.host), "port",
                "give either a serial port (COM4, /dev/ttyUSB1, rfc2217://...) or a network meter "
                "(host, or port = \"socket://host:502\")")
        if self.port.startswith("socket://"):
            host, _, tcp = self.port[len("socket://"):].rpartition(":")
            require(bool(host) and tcp.isdigit(), "port", "a network port is socket://host:port")
        require(0 < self.tcp_port < 65536, "tcp_port", "must be 1..65535")
        require(0 <= self.slave <= 247, "slave", "Modbus addresses are 1..247 (0: a TCP gateway's own device)")
        try:
            maps.get(self.meter)
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
        require(self.energy_s >= 0, "energy_s", "must be >= 0 (0: do not read the energy counter)")
        positive(self.timeout_s, "timeout_s")
        require(0 <= self.retries <= 5, "retries", "must be 0..5")

    def register_map(self) -> meters.Register:
        base = maps.get(self.meter).power
        return meters.Register(
            function=self.function or base.function,
            address=self.register if self.register is not None else base.address,
            format=self.format or base.format,
            mw_per_unit=self.mw_per_unit or base.mw_per_unit,
            word_swap=self.word_swap or base.word_swap,
        )

    def endpoint(self) -> Endpoint:
        from agent.detectors.power_meter.bus import Endpoint

        host, tcp_port = self.host, self.tcp_port
        if self.port.startswith("socket://"):
            host, _, tcp = self.port[len("socket://"):].rpartition(":")
            tcp_port = int(tcp)
        if host:
            return Endpoint("tcp", host, tcp_port, "rtu" if self.framer == "rtu" else "tcp", timeout_s=self.timeout_s)
        return Endpoint("serial", self.port, baudrate=self.baudrate, parity=self.parity, bytesize=self.bytesize,
                        stopbits=self.stopbits, exclusive=self.exclusive, timeout_s=self.timeout_s)


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
        model = maps.get(cfg.meter)
        self.energy_reg = model.energy if cfg.energy_s > 0 else None
        self.energy_resolution_wh = model.energy_resolution_wh
        self.levels = Levels(cfg.levels, cfg.hysteresis_w)
        self.ep = cfg.endpoint()
        self._link: Link | None = None
        self._down = False  # the link failed: reopen at most every reopen_s
        self._reopen = RateLimit(cfg.reopen_s)
        self._next_energy = -float("inf")
        self._wh: int | None = None  # the meter's energy counter, Wh
        self._wh_err: str | None = None
        self._mws_since_wh = 0.0  # integral of power since the counter last moved, mW x s
        self._last_poll: tuple[float, int] | None = None

    @property
    def where(self) -> str:
        return f"meter {self.cfg.slave} on {self.ep}"

    def _read(self, reg: meters.Register, now: float | None) -> int:
        from agent.detectors.power_meter import bus

        if self._down and not self._reopen.ready(now):
            raise ConnectionError("link closed after an error; waiting to reopen")
        if self._link is None:
            self._link = bus.acquire(self.ep)
        try:
            words = self._link.read(self.cfg.slave, reg.function, reg.address, reg.count, self.cfg.retries)
        except bus.LINK_ERRORS:
            self._down = True
            self._reopen.ready(now)
            raise
        self._down = False
        return meters.decode(reg, words)

    def read_mw(self, now: float | None = None) -> int:
        """One reading in milliwatts; raises on any Modbus or link failure."""
        return self._read(self.reg, now)

    def _energy(self, now: float, mw: int) -> dict[str, int | str | bool | None]:
        """The energy counter (read every energy_s) and its cross-check against the power integral:
        `pwh` is the energy the power readings add up to since the counter last moved; a counter that
        stands still while they add up to more than three counter steps is implausible (`e_stuck`)."""
        from agent.detectors.power_meter import bus

        if self._last_poll is not None and now > self._last_poll[0]:
            dt = min(now - self._last_poll[0], 60.0)  # a long gap (link down) is not integrated
            self._mws_since_wh += (mw + self._last_poll[1]) / 2 * dt
        self._last_poll = (now, mw)
        assert self.energy_reg is not None
        if now >= self._next_energy:
            self._next_energy = now + self.cfg.energy_s
            try:
                wh = self._read(self.energy_reg, now)
                if wh != self._wh:
                    self._wh, self._mws_since_wh = wh, 0.0
                self._wh_err = None
            except (bus.NoResponse, bus.ExceptionReply, ValueError, *bus.LINK_ERRORS) as exc:  # type: ignore[misc]
                self._wh_err = f"energy: {type(exc).__name__}: {exc}"[:120]
        pwh = round(self._mws_since_wh / 3_600_000)
        ev: dict[str, int | str | bool | None] = {"wh": self._wh, "pwh": pwh,
                                                    "e_stuck": self._wh is not None
                                                    and pwh > 3 * self.energy_resolution_wh}
        if self._wh_err:
            ev["e_err"] = self._wh_err
        return ev

    def poll(self, now: float) -> Observation:
        from agent.detectors.power_meter import bus

        try:
            mw = self.read_mw(now)
        except bus.NoResponse:
            return Observation.failed(f"{self.where}: no valid response within {self.cfg.timeout_s} s "
                                      "(silent, wrong address or settings, or a CRC error)")
        except bus.ExceptionReply as exc:
            return Observation.failed(f"{self.where}: exception reply ({exc})")
        except ValueError as exc:
            return Observation.failed(f"{self.where}: {exc}")
        except bus.LINK_ERRORS as exc:  # ConnectionError ("waiting to reopen") is an OSError
            from agent.detectors.serialport import describe

            return Observation.failed(f"{self.ep.kind} link {self.ep}: {describe(exc)}")
        idx = self.levels.classify(mw)
        evidence: dict[str, int | str | bool | None] = {"mw": mw, "lvl": idx}
        if self.energy_reg is not None:
            evidence.update(self._energy(now, mw))
        return Observation(self.levels.states[idx], evidence)

    def close(self) -> None:
        if self._link is not None:
            from agent.detectors.power_meter import bus

            bus.release(self._link)
            self._link = None


def create(name: str, cfg: Config) -> PowerMeterDetector:
    return PowerMeterDetector(name, cfg)
