"""pymodbus's own Modbus server (the field's reference implementation, not ours) in a thread:
serial RTU on a port (e.g. one side of a PtyLink), Modbus TCP or RTU over TCP on loopback; several
device ids; registers set from the test while it serves."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.instruments import meters

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
SPAN = 0x4200  # registers 0..0x41FF of each table: covers every map's addresses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def device(dev_id: int) -> SimDevice:
    bits = [SimData(0, count=8, datatype=DataType.BITS)]
    return SimDevice(dev_id, simdata=(bits, bits, [SimData(0, count=SPAN, values=0, datatype=DataType.REGISTERS)],
                                      [SimData(0, count=SPAN, values=0, datatype=DataType.REGISTERS)]))


class PymodbusServer:
    def __init__(self, devices: list[int], *, serial_port: str = "", framer: str = "tcp") -> None:
        self.tcp_port = 0 if serial_port else free_port()
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(devices, serial_port, framer), daemon=True,
                                        name="pymodbus-server")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("pymodbus server did not start")

    def _run(self, devices: list[int], serial_port: str, framer: str) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            devs = [device(i) for i in devices]
            if serial_port:
                self._server = ModbusSerialServer(devs, port=serial_port, baudrate=9600, timeout=1)
            else:
                self._server = ModbusTcpServer(devs, address=("127.0.0.1", self.tcp_port),
                                               framer=FramerType.RTU if framer == "rtu" else FramerType.SOCKET)
            task = asyncio.ensure_future(self._server.serve_forever())
            await asyncio.sleep(0.2)
            self._ready.set()
            await task

        try:
            self._loop.run_until_complete(main())
        except Exception:  # stopped
            pass

    def set(self, dev_id: int, function: int, address: int, words: list[int]) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._server.context.async_setValues(dev_id, function, address, words),
                                               self._loop)
        fut.result(5)

    def set_quantity(self, dev_id: int, reg: meters.Register, value_milli: float) -> None:
        """Put a quantity in place: mW for a power register, Wh for an energy register."""
        self.set(dev_id, reg.function, reg.address, meters.encode(reg, value_milli / 1000))

    def close(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(5)
