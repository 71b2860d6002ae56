"""Modbus links shared by the power-meter detectors, through pymodbus's synchronous clients.

One link per serial port or network endpoint: several meters on one RS-485 bus (or behind one
Modbus-TCP gateway) are several detectors with different `slave` addresses sharing one link, which
is opened once, used by one request at a time and closed with its last user. Imported only when a
power-meter detector is created. pymodbus imports asyncio, but its synchronous clients only
subclass asyncio's base classes and raise its TimeoutError: those three small submodules are loaded,
not the event loop (`lean.asyncio_classes_only`, 0.7 MB, 1.4 MB with TLS). Only pymodbus's serial
client is imported here, without `pymodbus.client`'s `__init__` (which imports the TCP and TLS
clients and with them `ssl`, libssl and libcrypto: 4.7 MB); the TCP client on the first network
link (agent/lean.py; a network meter's config loads `ssl`).

Transports:
  serial RTU      port = "COM4", "/dev/ttyUSB1", or a pyserial URL ("rfc2217://host:port": a
                  terminal server speaking RFC 2217); opened here, exclusively unless told not to
  Modbus TCP      host (or port = "socket://host:port"), framer "tcp" (MBAP)
  RTU over TCP    host with framer "rtu": a transparent serial-to-Ethernet converter
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import serial

from agent import lean
from agent.detectors.serialport import PORT_ERRORS

lean.asyncio_classes_only()  # the sync clients subclass asyncio's base classes and run no event loop
lean.package_on_demand("pymodbus.client")  # the serial client alone; TCP on the first network link
from pymodbus.client.serial import ModbusSerialClient  # noqa: E402
from pymodbus.exceptions import ConnectionException, ModbusIOException  # noqa: E402
from pymodbus.framer import FramerType  # noqa: E402
from pymodbus.pdu import ExceptionResponse  # noqa: E402

if TYPE_CHECKING:
    from pymodbus.client.tcp import ModbusTcpClient

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # every failure is reported by the detector

LINK_ERRORS: tuple[type[Exception], ...] = (*PORT_ERRORS, ConnectionException)


class NoResponse(Exception):
    """No valid reply in time: silence, a CRC error or a garbled frame (pymodbus drops those)."""


class ExceptionReply(Exception):
    """The meter answered with a Modbus exception (illegal address, device busy, ...)."""


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "serial" | "tcp"
    where: str  # serial port / URL, or host
    tcp_port: int = 502
    framer: str = "rtu"  # "rtu" | "tcp"
    baudrate: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1
    timeout_s: float = 0.5
    exclusive: bool = True

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.where, self.tcp_port, self.framer) if self.kind == "tcp" else (self.kind, self.where)

    def __str__(self) -> str:
        return self.where if self.kind == "serial" else f"{self.where}:{self.tcp_port} ({self.framer})"


class Link:
    """One pymodbus client; `read` opens it on demand and closes it after a link error."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.lock = threading.Lock()
        self.users = 0
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        ep = self.ep
        client: ModbusSerialClient | ModbusTcpClient
        if ep.kind == "serial":
            client = ModbusSerialClient(ep.where, framer=FramerType.RTU, baudrate=ep.baudrate, bytesize=ep.bytesize,
                                        parity=ep.parity, stopbits=ep.stopbits, timeout=ep.timeout_s, retries=0)
            # opened here rather than by pymodbus, which swallows the reason (no such port, locked)
            port = serial.serial_for_url(ep.where, baudrate=ep.baudrate, bytesize=ep.bytesize, parity=ep.parity,
                                         stopbits=ep.stopbits, timeout=ep.timeout_s, write_timeout=ep.timeout_s,
                                         exclusive=ep.exclusive or None)
            port.inter_byte_timeout = client.inter_byte_timeout
            client.socket = port
        else:
            from pymodbus.client.tcp import ModbusTcpClient

            framer = FramerType.SOCKET if ep.framer == "tcp" else FramerType.RTU
            client = ModbusTcpClient(ep.where, port=ep.tcp_port, framer=framer, timeout=ep.timeout_s, retries=0)
            if not client.connect():  # type: ignore[no-untyped-call]
                raise ConnectionException(f"cannot connect to {ep}")
        self._client = client
        return client

    def read(self, slave: int, function: int, address: int, count: int, retries: int) -> list[int]:
        """Registers from meter `slave`; raises NoResponse, ExceptionReply or a link error."""
        with self.lock:
            last: Exception | None = None
            for _ in range(retries + 1):
                client = self._connect()
                try:
                    call = client.read_input_registers if function == 4 else client.read_holding_registers
                    res = call(address, count=count, device_id=slave)
                except ModbusIOException as exc:
                    last = NoResponse(str(exc))
                    continue
                except LINK_ERRORS:
                    self.close_locked()
                    raise
                if isinstance(res, ExceptionResponse) or res.isError():
                    raise ExceptionReply(f"exception code {getattr(res, 'exception_code', '?')}")
                regs = list(res.registers)
                if len(regs) != count:
                    last = NoResponse(f"expected {count} registers, got {len(regs)}")
                    continue
                return regs
            assert last is not None
            raise last

    def close_locked(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except LINK_ERRORS:
                pass
            self._client = None


_LINKS: dict[tuple[Any, ...], Link] = {}
_LINKS_LOCK = threading.Lock()


def acquire(ep: Endpoint) -> Link:
    """The shared link for `ep` (the first user's serial settings win)."""
    with _LINKS_LOCK:
        link = _LINKS.get(ep.key)
        if link is None:
            link = _LINKS[ep.key] = Link(ep)
        link.users += 1
        return link


def release(link: Link) -> None:
    with _LINKS_LOCK:
        link.users -= 1
        if link.users <= 0:
            _LINKS.pop(link.ep.key, None)
            with link.lock:
                link.close_locked()
