"""A small asyncio MQTT 3.1.1 client: enough for thousands of simulated agents in one process.

paho-mqtt gives every client its own network loop (a thread with `loop_start`, or a socket to
drive by hand); ten thousand of them in one process is what this module avoids. It speaks the
real protocol over real TCP connections to the real broker: CONNECT with a Will, persistent
sessions, PUBLISH at QoS 0 and 1 with PUBACK tracking, SUBSCRIBE, incoming PUBLISH (acknowledged
at QoS 1), PINGREQ keep-alive, DISCONNECT. Not implemented (the fleet does not need them): QoS 2,
MQTT 5 properties, TLS (a load test against the TLS listener would add `ssl=` to open_connection).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14


class MqttError(Exception):
    pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _varint(len(body)) + body


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_packet(client_id: str, keepalive: int, clean: bool, will: Will | None = None,
                   username: str | None = None, password: str | None = None) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic) + _str(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    return packet(CONNECT, 0, _str("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + payload)


Handler = Callable[[str, bytes], Awaitable[None] | None]


class Client:
    """One connection. `on_message(topic, payload)` is called for every incoming PUBLISH."""

    def __init__(self, client_id: str, keepalive: int = 60, clean: bool = False, will: Will | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean = clean
        self.will = will
        self.username = username
        self.password = password
        self.on_message: Handler | None = None
        self.session_present = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._connack: asyncio.Future[int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    async def connect(self, host: str, port: int, timeout: float = 30.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        self._connack = asyncio.get_running_loop().create_future()
        assert self._writer is not None
        self._writer.write(connect_packet(self.client_id, self.keepalive, self.clean, self.will, self.username,
                                          self.password))
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._ping_loop())]
        code = await asyncio.wait_for(self._connack, timeout)
        if code != 0:
            await self.close()
            raise MqttError(f"{self.client_id}: broker refused the connection (code {code})")

    def _id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _send(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise MqttError(f"{self.client_id}: not connected")
        self._writer.write(data)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """QoS 1: returns when the broker acknowledged (PUBACK)."""
        head = _str(topic)
        if qos == 0:
            self._send(packet(PUBLISH, 0x01 if retain else 0, head + payload))
            return
        pid = self._id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[pid] = fut
        self._send(packet(PUBLISH, (qos << 1) | (0x01 if retain else 0), head + struct.pack(">H", pid) + payload))
        await fut

    async def subscribe(self, topics: list[tuple[str, int]]) -> None:
        pid = self._id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[pid] = fut
        body = struct.pack(">H", pid) + b"".join(_str(t) + bytes([q]) for t, q in topics)
        self._send(packet(SUBSCRIBE, 0x02, body))
        await fut

    async def disconnect(self) -> None:
        """A clean DISCONNECT: the broker discards the Will."""
        try:
            self._send(packet(DISCONNECT, 0, b""))
            if self._writer is not None:
                await self._writer.drain()
        except (MqttError, ConnectionError):
            pass
        await self.close()

    async def close(self) -> None:
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MqttError(f"{self.client_id}: connection closed"))
        self._pending.clear()
        self.closed.set()

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive * 0.75)
            try:
                self._send(packet(PINGREQ, 0, b""))
            except MqttError:
                return

    async def _read_loop(self) -> None:
        assert self._reader is not None
        r = self._reader
        try:
            while True:
                head = await r.readexactly(1)
                n, mult = 0, 1
                while True:
                    b = (await r.readexactly(1))[0]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                body = await r.readexactly(n) if n else b""
                await self._dispatch(head[0] >> 4, head[0] & 0x0F, body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if not self.closed.is_set():
                asyncio.get_running_loop().create_task(self.close())

    async def _dispatch(self, kind: int, flags: int, body: bytes) -> None:
        if kind == CONNACK:
            self.session_present = bool(body[0] & 1)
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(body[1])
        elif kind in (PUBACK, SUBACK):
            pid = struct.unpack(">H", body[:2])[0]
            fut = self._pending.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == PUBLISH:
            qos = (flags >> 1) & 3
            tlen = struct.unpack(">H", body[:2])[0]
            topic = body[2:2 + tlen].decode()
            pos = 2 + tlen
            if qos:
                pid = body[pos:pos + 2]
                pos += 2
                self._send(packet(PUBACK, 0, pid))
            if self.on_message is not None:
                res = self.on_message(topic, body[pos:])
                if res is not None:
                    await res
        # PINGRESP and anything else: nothing to do
