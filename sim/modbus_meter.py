"""A simulated Modbus RTU power meter (the slave side) on a pseudo-terminal.

Serves function codes 3 and 4 from a register map in protocols/instruments/meters.py with the
current `watts`; other registers read as 0; other function codes get exception 01. Fault
injection by `mode`: `ok`, `crc_error` (replies with a corrupted CRC), `silent` (no reply),
`exception` (exception 04, slave device failure). Requests with a bad CRC are dropped, as a real
slave does.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import tty

from protocols.instruments import meters
from protocols.instruments.meters import crc16


def frame(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


class ModbusMeter:
    def __init__(self, meter: str = "sdm120", slave: int = 1, watts: float = 0.0) -> None:
        self.map = meters.get(meter)
        self.slave = slave
        self.watts = watts
        self.mode = "ok"
        self.requests = 0
        self.master, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        self.port = os.ttyname(self._slave_fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-modbus", daemon=True)
        self._thread.start()

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
        if addr != self.slave or self.mode == "silent":
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
                self.requests += 1
                out = self.reply(req)
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

    def __enter__(self) -> ModbusMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
