"""A simulated instrument on a pseudo-terminal that answers status queries.

Dialects (protocols/instruments/status.py): `line` answers "STATUS?" with "STATUS RUN",
"STATUS IDLE", "STATUS OFF" or "STATUS ERR 12"; `scpi` answers "STAT:OPER:COND?" with the
Operation Status register (16 = measuring) and "*IDN?". Fault injection by `mode`: `ok`,
`garbage` (random bytes, sometimes with a line end), `silent` (no answer), `partial` (an answer
without its line end). The agent opens `port` like any serial device.
"""

from __future__ import annotations

import os
import random
import select
import threading
import tty

from protocols.instruments import status as dialects

LINE_WORDS = {"running": "RUN", "idle": "IDLE", "off": "OFF", "fault": "ERR 12"}


class SerialInstrument:
    def __init__(self, dialect: str = "line", state: str = "idle", seed: int = 1) -> None:
        self.dialect = dialects.get(dialect)
        self.state = state
        self.mode = "ok"
        self.queries = 0
        self._rng = random.Random(seed)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-serial", daemon=True)
        self._thread.start()

    def answer(self, query: str) -> bytes | None:
        eol = self.dialect.eol.encode()
        q = query.strip().upper()
        if self.mode == "silent":
            return None
        if self.mode == "garbage":
            junk = bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(1, 40)))
            return junk + (eol if self._rng.random() < 0.5 else b"")
        if q == "*IDN?":
            body = "JISHI,SIM-INSTRUMENT,0,1.0"
        elif self.dialect.name == "scpi" and q.startswith("STAT:OPER:COND?"):
            body = "16" if self.state == "running" else "0"
        elif q == self.dialect.query.upper():
            body = f"STATUS {LINE_WORDS.get(self.state, 'IDLE')}"
        else:
            body = "ERR UNKNOWN COMMAND"
        if self.mode == "partial":
            return body.encode()
        return body.encode() + eol

    def _serve(self) -> None:
        buf = b""
        eol = self.dialect.eol.encode()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.master, 1024)
            except OSError:
                continue
            buf += data
            while eol in buf:
                line, buf = buf.split(eol, 1)
                self.queries += 1
                reply = self.answer(line.decode("ascii", errors="replace"))
                if reply:
                    try:
                        os.write(self.master, reply)
                    except OSError:
                        pass
            buf = buf[-4096:]

    def send_noise(self, data: bytes) -> None:
        """Unsolicited bytes on the line (e.g. a device rebooting)."""
        os.write(self.master, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> SerialInstrument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
