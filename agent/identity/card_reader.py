"""ID-card reader on a serial port: each line is a card number, sent on as a keyed hash only.

`hmac-sha256:<hex>` of the normalised card number with the deployment's key: the server maps
the hash to a platform user (it holds the same key, or a table of hashes), and the raw card
number never leaves the PC. Lines that do not look like a card number are ignored and counted.
Readers that type into the keyboard (HID) work with the local check-in page instead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re

import serial

from agent.detectors.base import RateLimit

log = logging.getLogger("jishi.card")


def card_hash(key: bytes, card: str) -> str:
    norm = card.strip().upper()
    return "hmac-sha256:" + hmac.new(key, norm.encode("utf-8"), hashlib.sha256).hexdigest()


class CardReader:
    def __init__(self, port: str, baudrate: int, key: bytes, pattern: str, reopen_s: float = 5.0) -> None:
        if not key:
            raise ValueError("the card key is empty")
        self.port_name = port
        self.baudrate = baudrate
        self.key = key
        self.pattern = re.compile(pattern)
        self._port: serial.Serial | None = None
        self._buf = b""
        self._reopen = RateLimit(reopen_s)
        self.rejected = 0
        self.error: str | None = None

    def poll(self) -> list[str]:
        """Hashes of the cards read since the last poll (non-blocking)."""
        try:
            if self._port is None:
                if not self._reopen.ready():
                    return []
                self._port = serial.Serial(self.port_name, self.baudrate, timeout=0)
                self.error = None
            waiting = self._port.in_waiting
            if waiting:
                self._buf += self._port.read(waiting)
        except (serial.SerialException, OSError) as exc:
            if self.error is None:
                log.warning("card reader %s: %s", self.port_name, exc)
            self.error = str(exc)
            self.close()
            return []
        out = []
        self._buf = self._buf[-4096:]
        while True:
            idx = min((i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0), default=-1)
            if idx < 0:
                break
            line, self._buf = self._buf[:idx], self._buf[idx + 1:]
            text = line.decode("ascii", errors="replace").strip()
            if not text:
                continue
            if self.pattern.match(text):
                out.append(card_hash(self.key, text))
            else:
                self.rejected += 1
                log.warning("card reader %s: ignored a line that is not a card number (%d bytes)",
                            self.port_name, len(line))
        return out

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except (OSError, serial.SerialException):
                pass
            self._port = None
