"""Serial status detector: ask the instrument what it is doing, over RS-232 / USB serial.

Keys, defaults, verdicts and evidence: README.md beside this file; every key with its default:
sample.toml; behaviour as data: cases.toml (run by tests/agent/test_detector_cases.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Literal

import serial

from agent.config import Invalid, positive, require
from agent.detectors.base import Observation, RateLimit, Verdict
from agent.detectors.serialport import PORT_ERRORS, describe
from protocols.instruments import status as dialects

VERDICT: dict[str, Verdict] = {"off": "off", "idle": "idle", "running": "running", "fault": "fault"}


@dataclass(frozen=True)
class Config:
    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    dialect: str = "line"
    query: str | None = None
    eol: str | None = None
    patterns: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 1.0
    no_response: Literal["unknown", "off"] = "unknown"
    reopen_s: float = 5.0
    encoding: str = "ascii"
    exclusive: bool = True

    def __post_init__(self) -> None:
        require(bool(self.port), "port", "a serial port is required (e.g. COM3 or /dev/ttyUSB0)")
        try:
            dialects.get(self.dialect)
        except ValueError as exc:
            raise Invalid("dialect", str(exc)) from None
        for verdict, pattern in self.patterns.items():
            require(verdict in dialects.VERDICTS, "patterns", f"{verdict!r} is not one of {dialects.VERDICTS}")


            try:
                re.compile(pattern)
            except re.error as exc:
                raise Invalid(f"patterns.{verdict}", f"not a regular expression: {exc}") from None
        require(self.bytesize in (5, 6, 7, 8), "bytesize", "must be 5..8")
        require(self.stopbits in (1, 2), "stopbits", "must be 1 or 2")
        positive(self.timeout_s, "timeout_s")
        positive(self.reopen_s, "reopen_s")
        require(self.eol != "", "eol", "must not be empty")
        try:
            "".encode(self.encoding)
        except LookupError:
            raise Invalid("encoding", f"unknown text encoding {self.encoding!r}") from None

    def dialect_obj(self) -> dialects.Dialect:
        base = dialects.get(self.dialect)
        patterns = base.patterns
        if self.patterns:
            patterns = tuple((v, self.patterns[v]) for v in ("fault", "running", "idle", "off") if v in self.patterns)
        return dialects.Dialect(name=base.name, query=self.query if self.query is not None else base.query,
                                eol=self.eol if self.eol is not None else base.eol, patterns=patterns,
                                register_bits={} if self.patterns else base.register_bits,
                                neutral=() if self.patterns else base.neutral)


def printable(data: bytes, limit: int = 64) -> str:
    """Bytes as text safe for evidence: non-printables as \\xNN, cut to `limit`."""
    text = "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in data[:limit])
    return text + ("…" if len(data) > limit else "")


MAX_REPLY = 4096


class OversizedReply(ValueError):
    """More than MAX_REPLY bytes without a line end: a wrong eol, baud rate or a streaming device."""


class SerialStatusDetector:
    kind = "serial_status"
    senses_power = True
    summary_keys = ("ms",)

    def __init__(self, name: str, cfg: Config) -> None:
        self.name = name
        self.cfg = cfg
        self.dialect = cfg.dialect_obj()
        self._eol = self.dialect.eol.encode(cfg.encoding)
        self._port: serial.Serial | None = None
        self._reopen = RateLimit(cfg.reopen_s)

    def _open(self, now: float | None = None) -> serial.Serial:
        if self._port is None:
            if not self._reopen.ready(now):
                raise serial.SerialException("port closed after an error; waiting to reopen")
            self._port = serial.Serial(
                self.cfg.port, baudrate=self.cfg.baudrate, bytesize=self.cfg.bytesize, parity=self.cfg.parity,
                stopbits=self.cfg.stopbits, timeout=self.cfg.timeout_s, write_timeout=self.cfg.timeout_s,
                exclusive=self.cfg.exclusive or None)
        return self._port

    def _drop(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except PORT_ERRORS:
                pass
        self._port = None

    def query(self, now: float | None = None) -> tuple[bytes, int]:
        """Send the query, read one reply line; returns (reply without eol, latency ms)."""
        port = self._open(now)
        port.reset_input_buffer()  # drop stale bytes and line noise before asking
        started = time.monotonic()
        port.write(self.dialect.query.encode(self.cfg.encoding) + self._eol)
        port.flush()
        reply = port.read_until(self._eol, MAX_REPLY)
        ms = round((time.monotonic() - started) * 1000)
        if reply.endswith(self._eol):
            reply = reply[: -len(self._eol)]
        elif len(reply) >= MAX_REPLY:
            raise OversizedReply(f"oversized reply: no line end within {MAX_REPLY} bytes "
                                 f"(starts {printable(reply, 32)!r})")
        elif reply:
            raise TimeoutError(f"incomplete reply {printable(reply)!r} within {self.cfg.timeout_s} s")
        return reply, ms

    def poll(self, now: float) -> Observation:
        try:
            reply, ms = self.query(now)
        except (TimeoutError, OversizedReply) as exc:
            return Observation.failed(str(exc))
        except PORT_ERRORS as exc:  # unplugged adapter: termios.error is not an OSError
            self._drop()
            return Observation.failed(f"serial port {self.cfg.port}: {describe(exc)}")
        if not reply:
            if self.cfg.no_response == "off":
                return Observation("off", {"resp": "", "ms": ms})
            return Observation.failed(f"no reply within {self.cfg.timeout_s} s", ms=ms)
        text = reply.decode(self.cfg.encoding, errors="replace")
        verdict, reg = self.dialect.classify(text)
        evidence: dict[str, int | str | bool | None] = {"resp": printable(reply), "ms": ms}
        if reg is not None:
            evidence["reg"] = reg
        if verdict is None:
            return Observation.failed(f"unrecognised reply {printable(reply)!r}", resp=printable(reply), ms=ms)
        return Observation(VERDICT[verdict], evidence)

    def close(self) -> None:
        self._drop()


def create(name: str, cfg: Config) -> SerialStatusDetector:
    return SerialStatusDetector(name, cfg)
