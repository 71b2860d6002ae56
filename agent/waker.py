"""Wakes the agent's main loop from another thread or from a signal handler, without a lock.

`threading.Event.set` takes the Event's lock. A SIGTERM handler runs in the main thread between two
bytecodes, also while that thread holds the same lock inside `Event.wait` or `Event.clear`, and
then waits for it forever: the agent never stopped (CI, 2026-12-03: `jishi-agent run` ignored
SIGTERM for 20 s). A socket pair has no Python-level lock: `set` is one non-blocking send, and
`select` waits on it (sockets, so it works on Windows too).
"""

from __future__ import annotations

import contextlib
import select
import socket


class Waker:
    """`set` / `wait` / `clear` as `threading.Event`'s, safe to call from a signal handler."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def set(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer is already set; a closed one has no loop
            self._w.send(b"\0")

    def wait(self, timeout: float) -> bool:
        """True when set (not cleared), at once or within `timeout` seconds."""
        readable, _, _ = select.select([self._r], [], [], max(0.0, timeout))
        return bool(readable)

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._r.recv(4096):
                pass

    def close(self) -> None:
        self._r.close()
        self._w.close()
