"""Simulated Modbus RTU power meters (the slave side) on pseudo-terminals: one meter on a line of
its own (`ModbusMeter`), or several meters on one shared RS-485 bus, one address each
(`ModbusBus`), which is how a gateway agent reads them.

Serves function codes 3 and 4 from a register map in protocols/instruments/meters.py with the
current `watts`; other registers read as 0; other function codes get exception 01. Fault
injection by `mode`: `ok`, `crc_error` (replies with a corrupted CRC), `silent` (no reply),
`exception` (exception 04, slave device failure). Requests with a bad CRC are dropped, as a real
slave does; on a bus, a request for an address nobody has gets silence, as on a real bus.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import tty
from collections.abc import Callable

from protocols.instruments import meters
from protocols.instruments.meters import crc16


def frame(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


class BusMeter:
    """One meter's registers and fault mode; answers only requests for its own address."""

    def __init__(self, meter: str = "sdm120", slave: int = 1, watts: float = 0.0, port: str = "") -> None:
        self.map = meters.get(meter)
        self.slave = slave
        self.watts = watts
        self.mode = "ok"
        self.requests = 0
        self.port = port

    def registers(self, function: int, start: int, count: int) -> list[int]:
        reg = self.map.power
        words = meters.encode(reg, self.watts) if function == reg.function else []
        out = []
        for addr in range(start, start + count):
            i = addr - reg.address
            out.append(words[i] if words and 0 <= i < len(words) else 0)
        return out

    def reply(self, request: bytes) -> bytes | None:
        addr, fn = request[0], request[1]
        if addr != self.slave:
            return None
        self.requests += 1
        if self.mode == "silent":
            return None
        if self.mode == "exception":
            return frame(bytes([addr, fn | 0x80, 0x04]))
        if fn not in (3, 4):
            return frame(bytes([addr, fn | 0x80, 0x01]))
        start, count = struct.unpack(">HH", request[2:6])
        if not 1 <= count <= 125:
            return frame(bytes([addr, fn | 0x80, 0x03]))
        data = b"".join(struct.pack(">H", w) for w in self.registers(fn, start, count))
        out = frame(bytes([addr, fn, len(data)]) + data)
        if self.mode == "crc_error":
            out = out[:-2] + bytes([out[-2] ^ 0xFF, out[-1] ^ 0x55])
        return out

    def close(self) -> None:
        """A meter on a bus is closed with its bus."""


class _Line:
    """A pseudo-terminal whose far end the agent opens; `answer` turns each request into a reply."""

    def __init__(self, answer: Callable[[bytes], bytes | None], name: str) -> None:
        self.answer = answer
        self.master, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        tty.setraw(self.master)
        self.port = os.ttyname(self._slave_fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                buf += os.read(self.master, 256)
            except OSError:
                continue
            while len(buf) >= 8:  # fn 3/4 requests are 8 bytes; resynchronise on a bad CRC
                req = buf[:8]
                if crc16(req[:6]) != struct.unpack("<H", req[6:8])[0]:
                    buf = buf[1:]
                    continue
                buf = buf[8:]
                out = self.answer(req)
                if out:
                    try:
                        os.write(self.master, out)
                    except OSError:
                        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self._slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class ModbusMeter(BusMeter):
    """A meter on a serial line of its own."""

    def __init__(self, meter: str = "sdm120", slave: int = 1, watts: float = 0.0) -> None:
        super().__init__(meter, slave, watts)
        self._line = _Line(self.reply, "sim-modbus")
        self.master = self._line.master
        self.port = self._line.port

    def close(self) -> None:
        self._line.close()

    def __enter__(self) -> ModbusMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ModbusBus:
    """Several meters on one RS-485 bus (one pseudo-terminal), addresses 1, 2, ... in order of `add`."""

    def __init__(self) -> None:
        self.meters: dict[int, BusMeter] = {}
        self._line = _Line(self._answer, "sim-rs485")
        self.port = self._line.port

    def add(self, meter: str = "sdm120", watts: float = 0.0) -> BusMeter:
        m = BusMeter(meter, len(self.meters) + 1, watts, self.port)
        self.meters[m.slave] = m
        return m

    def _answer(self, request: bytes) -> bytes | None:
        m = self.meters.get(request[0])
        return m.reply(request) if m is not None else None

    def close(self) -> None:
        self._line.close()

    def __enter__(self) -> ModbusBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
