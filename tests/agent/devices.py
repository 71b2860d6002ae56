"""Third-party-style devices for the detector tests, written here from the devices' documented
protocols rather than taken from `sim/` (so a shared misunderstanding cannot pass both sides).

`PtyPort` is a serial adapter on a pseudo-terminal reachable under a stable name (a symlink, like
/dev/serial/by-id/...); `unplug()` closes the link the way a pulled USB adapter does (the
agent's open file gets a hang-up, the name disappears) and `replug()` brings a new link back
under the same name. Two protocols run on it: a line-oriented status reply (SCPI-style query,
CR/LF terminated, IEEE 488.2 message exchange) and a Modbus RTU slave bus (Modbus over Serial
Line v1.02: function 3/4, CRC-16 low byte first, exception replies, several addresses).
"""

from __future__ import annotations

import os
import select
import struct
import threading
import tty
from collections.abc import Callable
from pathlib import Path

from protocols.instruments import meters


class PtyPort:
    """A pseudo-terminal whose device end is reachable as `path`; `handler(data) -> reply`."""

    def __init__(self, path: Path, handler: Callable[[bytes], bytes | None]) -> None:
        self.path = path
        self.handler = handler
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self.plug()
        self._thread = threading.Thread(target=self._serve, name="test-pty", daemon=True)
        self._thread.start()

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        with self._lock:
            self._master, self._slave = master, slave

    def unplug(self) -> None:
        """Hang up: the agent's open port fails, and the name is gone until `replug`."""
        with self._lock:
            fds, self._master, self._slave = (self._master, self._slave), None, None
        self.path.unlink(missing_ok=True)
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def replug(self) -> None:
        self.plug()

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._master is not None:
                os.write(self._master, data)

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self._master
            if master is None:
                self._stop.wait(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except (OSError, ValueError):  # unplugged while waiting, or the agent side closed
                self._stop.wait(0.02)
                continue
            reply = self.handler(data)
            if reply:
                try:
                    self.write(reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.unplug()


class StatusDevice:
    """Answers each query line with `reply` (+ eol); None = silent; `raw` bytes are sent as is."""

    def __init__(self, path: Path, eol: bytes = b"\r\n") -> None:
        self.eol = eol
        self.reply: str | None = "READY"
        self.raw: bytes | None = None
        self.queries = 0
        self._buf = b""
        self.port = PtyPort(path, self._handle)

    def _handle(self, data: bytes) -> bytes | None:
        self._buf += data
        out = b""
        while self.eol in self._buf:
            _line, self._buf = self._buf.split(self.eol, 1)
            self.queries += 1
            if self.raw is not None:
                out += self.raw
            elif self.reply is not None:
                out += self.reply.encode("latin-1") + self.eol
        return out or None

    def close(self) -> None:
        self.port.close()


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


class RtuBus:
    """Modbus RTU slaves on one line: `regs[address][(function, register)] = word`."""

    def __init__(self, path: Path) -> None:
        self.regs: dict[int, dict[tuple[int, int], int]] = {}
        self.mode = "ok"  # ok | silent | exception | crc_error
        self.requests = 0
        self._buf = b""
        self.port = PtyPort(path, self._handle)

    def set_power(self, address: int, meter: str, watts: float) -> None:
        reg = meters.get(meter).power
        words = meters.encode(reg, watts)
        slave = self.regs.setdefault(address, {})
        for i, w in enumerate(words):
            slave[(reg.function, reg.address + i)] = w

    def _reply(self, req: bytes) -> bytes | None:
        addr, fn = req[0], req[1]
        if addr not in self.regs or self.mode == "silent":
            return None
        if self.mode == "exception":
            return rtu_frame(bytes([addr, fn | 0x80, 0x04]))
        if fn not in (3, 4):
            return rtu_frame(bytes([addr, fn | 0x80, 0x01]))
        start, count = struct.unpack(">HH", req[2:6])
        data = b"".join(struct.pack(">H", self.regs[addr].get((fn, a), 0)) for a in range(start, start + count))
        out = rtu_frame(bytes([addr, fn, len(data)]) + data)
        if self.mode == "crc_error":
            out = out[:-1] + bytes([out[-1] ^ 0x5A])
        return out

    def _handle(self, data: bytes) -> bytes | None:
        self._buf += data
        out = b""
        while len(self._buf) >= 8:  # fn 3/4 requests are 8 bytes; resynchronise on a bad CRC
            req = self._buf[:8]
            if crc16(req[:6]) != struct.unpack("<H", req[6:8])[0]:
                self._buf = self._buf[1:]
                continue
            self._buf = self._buf[8:]
            self.requests += 1
            out += self._reply(req) or b""
        return out or None

    def close(self) -> None:
        self.port.close()


class PtyLink:
    """Two serial ports joined by a null-modem cable (what `socat pty,link=A pty,link=B` makes):
    bytes written on one side arrive on the other. For a third-party server (pymodbus's) on `b`
    and the agent on `a`."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = a, b
        self._fds: list[int] = []
        self._masters: list[int] = []
        for path in (a, b):
            master, slave = os.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            path.unlink(missing_ok=True)
            path.symlink_to(os.ttyname(slave))
            self._masters.append(master)
            self._fds += [master, slave]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="test-ptylink", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        ma, mb = self._masters
        peer = {ma: mb, mb: ma}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([ma, mb], [], [], 0.05)
                for fd in ready:
                    os.write(peer[fd], os.read(fd, 4096))
            except OSError:
                self._stop.wait(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for path in (self.a, self.b):
            path.unlink(missing_ok=True)
