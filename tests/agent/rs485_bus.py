"""Several Modbus RTU power meters on ONE pseudo-terminal: an RS-485 bus with one address per meter.

Written here from the published protocols, not from the agent's Modbus code: Modbus RTU framing
(address, function, payload, CRC-16/MODBUS little-endian; a slave answers only its own address and
drops frames with a bad CRC) and Eastron's SDM120 register table (input registers, function 04;
active power at 30013 = address 0x000C, IEEE-754 float32, high word first, in W).
"""

from __future__ import annotations

import os
import select
import struct
import threading
import tty

from tests.agent.devices import crc16, rtu_frame

SDM120_POWER = 0x000C


class Rs485Bus:
    """`watts[address]` is what the meter at that address reads; requests per address are counted."""

    def __init__(self, addresses: list[int], watts: float = 0.0) -> None:
        self.watts: dict[int, float] = dict.fromkeys(addresses, watts)
        self.requests: dict[int, int] = dict.fromkeys(addresses, 0)
        self.lock = threading.Lock()
        self.master, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        tty.setraw(self.master)
        self.port = os.ttyname(self._slave_fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-rs485", daemon=True)
        self._thread.start()

    def set(self, address: int, watts: float) -> None:
        with self.lock:
            self.watts[address] = watts

    def registers(self, address: int, start: int, count: int) -> list[int]:
        with self.lock:
            hi, lo = struct.unpack(">HH", struct.pack(">f", self.watts[address]))
        power = {SDM120_POWER: hi, SDM120_POWER + 1: lo}
        return [power.get(a, 0) for a in range(start, start + count)]

    def reply(self, request: bytes) -> bytes | None:
        addr, fn = request[0], request[1]
        if addr not in self.watts:
            return None  # nobody at that address: silence, as on a real bus
        with self.lock:
            self.requests[addr] += 1
        if fn != 4:
            return rtu_frame(bytes([addr, fn | 0x80, 0x01]))  # illegal function
        start, count = struct.unpack(">HH", request[2:6])
        if not 1 <= count <= 125:
            return rtu_frame(bytes([addr, fn | 0x80, 0x03]))
        data = b"".join(struct.pack(">H", w) for w in self.registers(addr, start, count))
        return rtu_frame(bytes([addr, fn, len(data)]) + data)

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
            while len(buf) >= 8:  # read requests (fn 3/4) are 8 bytes; resynchronise on a bad CRC
                req = buf[:8]
                if crc16(req[:6]) != struct.unpack("<H", req[6:8])[0]:
                    buf = buf[1:]
                    continue
                buf = buf[8:]
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

    def __enter__(self) -> Rs485Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
