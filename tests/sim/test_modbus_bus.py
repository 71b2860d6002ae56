"""The demo's shared RS-485 bus (sim.modbus_meter.ModbusBus): several meters on one pseudo-terminal,
each answering only its own address with its own reading; nobody answers an unknown address."""

from __future__ import annotations

import os
import select
import struct
import tty

from protocols.instruments import meters
from protocols.instruments.meters import crc16
from sim.modbus_meter import ModbusBus


def ask(fd: int, slave: int, reg: meters.Register) -> bytes:
    """One read request for `reg` at `slave` on the bus; the reply's bytes ('' after 0.5 s of silence)."""
    body = struct.pack(">BBHH", slave, reg.function, reg.address, reg.count)
    os.write(fd, body + struct.pack("<H", crc16(body)))
    out = b""
    while select.select([fd], [], [], 0.5)[0]:
        out += os.read(fd, 256)
        if len(out) >= 9:
            break
    return out


def test_meters_share_one_line_each_at_its_own_address() -> None:
    with ModbusBus() as bus:
        a, b = bus.add(watts=40.0), bus.add(watts=900.0)  # SDM120: power in 2 input registers
        assert (a.slave, b.slave) == (1, 2) and a.port == b.port == bus.port
        fd = os.open(bus.port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        try:
            reg = a.map.power
            for m, want in ((a, 40.0), (b, 900.0)):
                reply = ask(fd, m.slave, reg)
                assert reply[:3] == bytes([m.slave, reg.function, 4]), reply
                assert crc16(reply[:7]) == struct.unpack("<H", reply[7:9])[0]
                words = list(struct.unpack(">HH", reply[3:7]))
                assert meters.decode(reg, words) == round(want * 1000)  # milliwatts
            b.mode = "silent"  # one meter failing costs only its own answers
            assert ask(fd, 2, reg) == b""
            assert ask(fd, 1, reg)[:2] == bytes([1, reg.function])
            assert ask(fd, 7, reg) == b""  # nobody at address 7
            assert (a.requests, b.requests) == (2, 2)
        finally:
            os.close(fd)
